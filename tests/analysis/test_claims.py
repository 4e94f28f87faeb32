"""The Claims view's verdicts: decided by the numbers (synthetic results, each verdict reached on purpose), drawn as
figures, and the shipped results file opens with a verdict for every claim."""

from __future__ import annotations

import json

import pytest

from playground.analysis import claims
from playground.plots.claims import FIGURES


def run(label, method, accuracy, x=None, seed=0, rows=96, step=1.0, reference=5.0, fluency=-1.4):
    return {"label": label, "method": method, "x": x, "seed": seed, "rows": rows, "heldout_accuracy": accuracy,
            "seconds_per_step": step, "reference_seconds": reference,
            "answers": {"adapter": {"share_repetitive": 0.0, "mean_fluency": fluency},
                        "base": {"mean_fluency": -1.3}}}


def noise(kto_high, dpo_high):
    runs = []
    for seed in (0, 1):
        runs += [run("DPO", "dpo", 0.95, 0.0, seed), run("DPO", "dpo", dpo_high, 0.4, seed),
                 run("KTO", "kto", 0.95, 0.0, seed), run("KTO", "kto", kto_high + 0.01 * seed, 0.4, seed)]
    return {"command": "python -m playground.experiments noise", "runs": runs}


def test_noise_verdicts_follow_the_drops():
    holds = claims.verdict_noise(noise(kto_high=0.90, dpo_high=0.70), 0.05)
    assert holds.verdict == "holds" and "fell by 0.045 for KTO and 0.250 for DPO" in holds.because
    assert "(mean over 2 seeds)" in holds.because
    assert claims.verdict_noise(noise(0.60, 0.90), 0.05).verdict == "does not hold"
    same = claims.verdict_noise(noise(0.80, 0.80), 0.05)
    assert same.verdict == "no measurable difference" and "less than 0.05" in same.because
    kto = same.table[(same.table["label"] == "KTO") & (same.table["x"] == 0.4)]
    assert float(kto["heldout accuracy"].iloc[0]) == pytest.approx(0.805)
    assert float(kto["accuracy std"].iloc[0]) == pytest.approx(0.005)
    figure = FIGURES["noise"](same.table)
    assert figure.data[0].error_y.visible
    # beside each accuracy line, the answers' fluency on the second panel, against the base's (the dotted guide)
    assert [trace.xaxis for trace in figure.data] == ["x", "x2"] * 2
    assert list(figure.data[1].y) == [-1.4, -1.4]
    assert any(shape.y0 == -1.3 and shape.yref == "y2" for shape in figure.layout.shapes)


def test_unpaired_imbalance_and_compute_verdicts():
    unpaired = {"runs": [run("DPO, pairs", "dpo", 0.95), run("KTO, thumbs only", "kto", 0.93, rows=96)]}
    assert claims.verdict_unpaired(unpaired, 0.05).verdict == "holds"
    unpaired["runs"][1]["heldout_accuracy"] = 0.7
    partly = claims.verdict_unpaired(unpaired, 0.05)
    assert partly.verdict == "holds only partly" and "0.250 below DPO" in partly.because

    def imbalance(plain_few, ruled_few):
        return {"runs": [run("KTO, λ = 1", "kto", plain_few, 0.1), run("KTO, λ = 1", "kto", 0.9, 0.5),
                         run("KTO, paper's λ rule", "kto", ruled_few, 0.1),
                         run("KTO, paper's λ rule", "kto", 0.9, 0.5)]}

    assert claims.verdict_imbalance(imbalance(0.88, 0.88), 0.05).verdict == "holds"
    only = claims.verdict_imbalance(imbalance(0.6, 0.88), 0.05)
    assert only.verdict == "holds only partly" and "only when λ_D is raised" in only.because
    assert claims.verdict_imbalance(imbalance(0.6, 0.6), 0.05).verdict == "does not hold"

    compute = {"runs": [run("DPO", "dpo", 0.9, step=3.4, reference=9.4), run("KTO", "kto", 0.9, step=1.9,
                                                                               reference=25.5),
                        run("SIMPO", "simpo", 0.9, step=2.6, reference=0.05)]}
    verdict = claims.verdict_compute(compute, 0.05)
    assert verdict.verdict == "does not hold" and "KTO ran a reference pass of 25.5 s" in verdict.because
    assert "SIMPO 0.05 s of reference pass" in verdict.because
    fig = FIGURES["compute"](verdict.table)
    assert list(fig.data[1].y) == [9.4, 25.5, 0.05] and len(fig.data) == 2  # no memory measured per run: no panel
    for record, added in zip(compute["runs"], (410.0, 520.0, 300.0)):
        record.update(peak_memory_mb=added + 2000, added_memory_mb=added, memory_kind="process RSS, sampled")
    measured = claims.verdict_compute(compute, 0.05)
    assert "memory added during the run: DPO 410 MB, KTO 520 MB, SIMPO 300 MB (process RSS, sampled)" in (
        measured.because)
    assert list(FIGURES["compute"](measured.table).data[2].y) == [410.0, 520.0, 300.0]


def test_a_missing_claim_reads_not_measured_and_the_file_format_is_checked(tmp_path):
    found = claims.verdicts({"noise": noise(0.9, 0.7)})
    assert [v.claim for v in found] == list(claims.CLAIM_ORDER)
    assert {v.claim: v.verdict for v in found}["compute"] == "not measured"
    assert "Not measured yet" in json.dumps(FIGURES["compute"](None).to_plotly_json())
    path = tmp_path / "c.json"
    path.write_text(json.dumps(claims.combine({"noise": noise(0.9, 0.7)})))
    assert claims.load_results(path)["noise"]["command"].endswith("noise")
    assert claims.load_results(tmp_path / "absent.json") == {}
    path.write_text(json.dumps({"format": "other"}))
    with pytest.raises(ValueError, match="not a claims results file"):
        claims.load_results(path)


def test_the_shipped_results_give_a_verdict_for_every_claim():
    found = claims.verdicts(claims.load_results())
    assert all(v.verdict != "not measured" for v in found), [(v.claim, v.verdict) for v in found]
    for v in found:
        assert v.command.startswith("python -m playground.experiments " + v.claim)
        assert len(FIGURES[v.claim](v.table).data) >= 1
    from playground.ui import learn_tab

    view = learn_tab.claims_view()
    assert len(view) == 2 * len(claims.CLAIM_ORDER) and all("**" in md for md in view[::2])
    table = learn_tab.comparison_table({v.claim: v.verdict for v in found})
    assert table.count("measured here:") == 4
