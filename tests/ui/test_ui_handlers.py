"""UI handlers called directly on the tiny engine: no server, no browser.

Covers the vote store and its exports, the Compare handlers (one batched generation, one scoring call, escaped
token colouring), the Fine-tune handlers (validation, refusals that keep the form, a 2-step run to an attached
adapter with its zip and held-out summary), the Learn tab's pieces and the API helpers.
"""

from __future__ import annotations

import time
import zipfile
from pathlib import Path

import gradio as gr
import pandas as pd
import pytest

from playground import config
from playground.feedback import read_feedback  # noqa: E402
from playground.feedback.conversion import split_heldout  # noqa: E402
from playground.feedback.votes import (  # noqa: E402
    VoteError,
    VoteStore,
    export_csv,
    export_note,
    to_paired_rows,
    to_unpaired_rows,
    write_exports,
)
from playground.serving.services import Services  # noqa: E402
from playground.serving.settings import ServiceInputError, generation_settings, train_config_from  # noqa: E402
from playground.ui import compare_tab, finetune_tab, learn_tab

SESSION = "a" * 32
TINY_TRAIN = dict(steps=2, batch=2, max_len=64)


@pytest.fixture()
def services(tiny_engine, tmp_path):
    return Services.for_engine(tiny_engine, tmp_path / "data")


def _value(update):
    return update.get("value") if isinstance(update, dict) else update


def _run_generation(services, prompt="Say hello <b>&</b>", variants=("base", "dpo", "kto"), max_new=6):
    outputs = list(compare_tab.generate_answers(services, prompt, "", list(variants), "greedy", 0.7, 0.9, max_new, 0))
    return outputs


# --------------------------------------------------------------------------------------------------------------------
# Vote store


def test_vote_store_persists_and_exports_both_formats(tmp_path):
    store = VoteStore(tmp_path / "votes.sqlite3")
    base = {"prompt": "=HYPERLINK(1)", "variant_a": "dpo", "answer_a": "A good", "variant_b": "kto",
            "answer_b": "B bad"}
    store.add(SESSION, {**base, "kind": "left_better"})
    store.add(SESSION, {**base, "kind": "right_better", "answer_a": "C meh", "answer_b": "D best"})
    store.add(SESSION, {**base, "kind": "tie"})
    store.add(SESSION, {**base, "kind": "both_bad"})
    store.add(SESSION, {"kind": "thumbs_up", "prompt": "p", "variant_a": "base", "answer_a": "+1 fine"})
    store.add("b" * 32, {"kind": "thumbs_down", "prompt": "other", "variant_a": "base", "answer_a": "x"})

    again = VoteStore(tmp_path / "votes.sqlite3")  # a new store (a restart) sees the same votes
    frame = again.for_session(SESSION)
    assert list(frame["kind"]) == ["left_better", "right_better", "tie", "both_bad", "thumbs_up"]

    paired = to_paired_rows(frame)
    assert [(r["chosen"], r["rejected"]) for r in paired] == [("A good", "B bad"), ("D best", "C meh")]
    unpaired = to_unpaired_rows(frame)
    assert [(r["completion"], r["label"]) for r in unpaired] == [
        ("A good", True), ("B bad", False), ("D best", True), ("C meh", False), ("A good", False), ("B bad", False),
        ("+1 fine", True)]

    paths = write_exports(frame, tmp_path / "out")
    text = paths["paired"].read_text(encoding="utf-8")
    assert text.splitlines()[0] == "prompt,chosen,rejected"
    assert "'=HYPERLINK(1)" in text  # formula neutralised
    assert "'+1 fine" in paths["unpaired"].read_text(encoding="utf-8")
    for fmt, path in paths.items():
        report = read_feedback(path)
        assert report.trainable and report.format == fmt
    assert report.data["prompt"].iloc[0] == "=HYPERLINK(1)"  # and it round-trips
    note = export_note(frame)
    assert "1 tie vote is recorded but not exported" in note


def test_vote_store_refuses_bad_votes(tmp_path):
    store = VoteStore(tmp_path / "v.sqlite3")
    with pytest.raises(VoteError, match="session"):
        store.add("../etc", {"kind": "tie", "prompt": "p", "variant_a": "a", "variant_b": "b"})
    with pytest.raises(VoteError, match="kind"):
        store.add(SESSION, {"kind": "maybe", "prompt": "p", "variant_a": "a"})
    with pytest.raises(VoteError, match="different"):
        store.add(SESSION, {"kind": "tie", "prompt": "p", "variant_a": "a", "variant_b": "a"})
    assert store.for_session(SESSION).empty
    assert export_csv(store.for_session(SESSION), "paired") == "prompt,chosen,rejected\n"


# --------------------------------------------------------------------------------------------------------------------
# Services


def test_services_for_engine(services, tiny_engine):
    assert services.variant_names() == ["base", "dpo", "kto"]
    assert services.default_variants() == ["base", "dpo", "kto"]
    assert services.example_prompts and all(isinstance(p, str) for p in services.example_prompts)
    assert services.heldout_pairs is not None and len(services.heldout_pairs) <= config.APP.heldout_pairs_limit
    assert services.inspect_cache is not None
    assert len(services.secret) >= 16
    again = Services.for_engine(tiny_engine, services.data_dir)
    assert again.secret == services.secret  # a restart keeps every browser's session


def test_settings_and_hyperparameters_are_checked():
    assert generation_settings({"mode": "sampled", "seed": 3.0}).do_sample is True
    with pytest.raises(ServiceInputError, match="whole number"):
        generation_settings({"max_new_tokens": 2.5})
    with pytest.raises(ServiceInputError, match="Unknown"):
        generation_settings({"nonsense": 1})
    cfg = train_config_from({"method": "kto", "lora_r": 4, "beta": 0.2, "steps": 2})
    assert (cfg.method, cfg.lora.r, cfg.loss.beta, cfg.steps, cfg.lora.alpha) == ("kto", 4, 0.2, 2,
                                                                                   config.TRAIN.lora.alpha)
    with pytest.raises(ServiceInputError, match="batch size must be between"):
        train_config_from({"batch_size": 0})
    with pytest.raises(ServiceInputError, match="learning rate must be a number"):
        train_config_from({"learning_rate": "fast"})


def test_split_heldout_is_by_prompt():
    frame = pd.DataFrame({"prompt": ["a", "a", "b", "c", "d"], "completion": list("vwxyz"),
                          "label": [True, False, True, False, True]})
    train_rows, held = split_heldout(frame, "unpaired", 0.25)
    assert set(train_rows["prompt"]).isdisjoint(set(held["prompt"]) if held is not None else set())
    with pytest.raises(ValueError, match="no prompt held out"):
        split_heldout(frame, "unpaired", 0.01)


# --------------------------------------------------------------------------------------------------------------------
# Compare


def test_generate_streams_then_scores_once(services, monkeypatch):
    calls = []
    original = services.score_answers

    def counting(*args, **kwargs):
        calls.append(args)
        return original(*args, **kwargs)

    monkeypatch.setattr(services, "score_answers", counting)
    outputs = _run_generation(services)
    assert outputs[0][0] is None  # votes are off while new answers stream (the old ones are no longer shown)
    assert len(calls) == 1  # one scoring call for all variants
    last = outputs[-1][0]
    assert last["variants"] == ["base", "dpo", "kto"] and set(last["answers"]) == {"base", "dpo", "kto"}
    slots = compare_tab.SLOTS
    bodies = outputs[-1][5 + 2 * slots: 5 + 3 * slots]
    metrics = outputs[-1][5 + 3 * slots: 5 + 4 * slots]
    assert all('class="pg-answer"' in _value(b) for b in bodies[:3])
    assert "implied reward" in _value(metrics[0]) and "+0.000" in _value(metrics[0])  # base vs itself
    assert outputs[-1][2] is not None  # the metrics chart
    columns = outputs[0][5: 5 + slots]
    assert [c["visible"] for c in columns] == [True] * 3 + [False] * (slots - 3)


def test_scores_are_consistent(services):
    answers = {"base": "Hello there.", "dpo": "Hello there.", "kto": "Bye."}
    scored = services.score_answers("Hi", answers)
    assert scored["base"]["implied_reward"] == pytest.approx(0.0, abs=1e-6)
    for name, row in scored.items():
        assert row["length"] == len(row["tokens"]) == len(row["token_logratio"])
        assert row["mean_logp"] == pytest.approx(sum(row["token_logp"]) / row["length"], rel=1e-4)
        assert row["value"] == pytest.approx(row["mean_logp"], rel=1e-5)  # likelihood construction, mean reduce
        expected = config.LOSS.beta * sum(row["token_logratio"])
        assert row["implied_reward"] == pytest.approx(expected, abs=1e-4), name


def test_token_html_escapes_text_and_titles():
    metrics = {"tokens": ['<script>alert("x")</script>', " & ", "⏎"], "special": [False, False, True],
               "token_logp": [-1.0, -2.0, -0.1], "token_logratio": [0.5, -3.0, 0.0]}
    out = compare_tab.token_html("dpo", metrics)
    assert "<script>" not in out and "&lt;script&gt;" in out and "&amp;" in out
    assert 'title="log p = -1.000; log p - log p_base = +0.500"' in out
    assert "rgba(213,94,0,0.650)" in out  # clipped negative ratio, fully saturated vermillion
    assert "transparent" in compare_tab.token_html("base", metrics)


def test_generation_errors_are_clear(services):
    with pytest.raises(gr.Error, match="prompt"):
        list(compare_tab.generate_answers(services, "  ", "", ["base"], "greedy", 0.7, 0.9, 4, 0))
    with pytest.raises(gr.Error, match="Unknown variant"):
        list(compare_tab.generate_answers(services, "hi", "", ["nope"], "greedy", 0.7, 0.9, 4, 0))
    with pytest.raises(gr.Error, match="max new tokens"):
        list(compare_tab.generate_answers(services, "hi", "", ["base"], "greedy", 0.7, 0.9, 100000, 0))


LAST = {"prompt": "Say hi", "system": "", "variants": ["base", "dpo", "kto"],
        "answers": {"base": "Hello.", "dpo": "Hi there!", "kto": "Go away."}}


def test_votes_from_the_compare_tab(services):
    last = LAST
    table, note, paired, unpaired = compare_tab.vote_pair(services, "left_better", SESSION, last, "dpo", "kto")
    assert len(table) == 1 and "1 pair" in note
    assert Path(paired).read_text(encoding="utf-8").startswith("prompt,chosen,rejected")
    compare_tab.vote_thumb(services, 0, True, SESSION, last)
    compare_tab.vote_pair(services, "tie", SESSION, last, "base", "dpo")
    table, note, _, unpaired = compare_tab.votes_view(services, SESSION)
    assert list(table["vote"]) == ["tie", "👍 good", "left better"]  # newest first
    assert "not exported" in note
    assert len(read_feedback(Path(unpaired)).data) == 3
    with pytest.raises(gr.Error, match="different"):
        compare_tab.vote_pair(services, "tie", SESSION, last, "dpo", "dpo")
    with pytest.raises(gr.Error, match="Generate answers first"):
        compare_tab.vote_thumb(services, 0, True, SESSION, None)
    with pytest.raises(gr.Error, match="session"):
        compare_tab.vote_pair(services, "tie", "", last, "base", "dpo")
    table, note, _, _ = compare_tab.undo_vote(services, SESSION)
    assert len(table) == 2 and note.startswith("Removed")


# --------------------------------------------------------------------------------------------------------------------
# Fine-tune


def test_validation_blocks_start_only_on_errors(services):
    state, report, preview, start, *_ = finetune_tab.load_data(services, finetune_tab.SOURCE_EXAMPLE, None,
                                                               "paired_example.csv", SESSION, "DPO (pairs)")
    assert state["trainable"] and start["interactive"] is True and "Ready to train" in report
    assert preview["column_widths"] == ["8%", "30%", "30%", "30%"]
    preview = preview["value"]
    assert len(preview) == 20 and state["rows_for"]["dpo"] == 20 and state["rows_for"]["kto"] > 20
    state, report, preview, start, *_ = finetune_tab.load_data(services, finetune_tab.SOURCE_EXAMPLE, None,
                                                               "mistakes_example.csv", SESSION, "DPO (pairs)")
    assert "```text" in report  # file text shown verbatim, never as Markdown
    assert start["interactive"] is bool(state and state["trainable"])
    _, report, _, start, *_ = finetune_tab.load_data(services, finetune_tab.SOURCE_EXAMPLE, None, "../../etc/passwd",
                                                     SESSION, "DPO (pairs)")
    assert start["interactive"] is False and "Pick an example" in report
    plan = finetune_tab.plan_markdown("kto", finetune_tab._data_state(
        read_feedback(services.examples_dir / "unpaired_example.csv"), Path("x"), "x"), 0, 2.0, 8, 1.0, 1.0)
    assert "optimizer steps" in plan and "KTO weights" in plan


def test_uploads_in_other_formats_are_validated(services, tmp_path):
    tsv = tmp_path / "fb.tsv"
    tsv.write_text("prompt\tcompletion\tlabel\nHi\tHello!\t👍\nHi\tGo away.\t👎\n", encoding="utf-8")
    jsonl = tmp_path / "fb.jsonl"
    jsonl.write_text('{"prompt": "Hi", "chosen": "Hello!", "rejected": "Go away."}\n', encoding="utf-8")
    state, report, _, start, upload, example, _intact = finetune_tab.load_data(
        services, finetune_tab.SOURCE_UPLOAD, str(tsv), None, SESSION, "KTO (labelled answers)")
    assert state["format"] == "unpaired" and state["kto_counts"] == [1, 1] and start["interactive"] is True
    assert upload["visible"] is True and example["visible"] is False
    state, *_ = finetune_tab.load_data(services, finetune_tab.SOURCE_UPLOAD, str(jsonl), None, SESSION,
                                       "DPO (pairs)")
    assert state["format"] == "paired" and state["rows_for"] == {"dpo": 1, "kto": 2, "simpo": 1, "orpo": 1,
                                                                 "apo_zero": 1, "apo_down": 1, "bco": 2}
    state, report, _, start, *_ = finetune_tab.load_data(services, finetune_tab.SOURCE_VOTES, None, None, SESSION,
                                                         "DPO (pairs)")
    assert start["interactive"] is False and "No votes yet" in report


def test_send_votes_loads_them_in_the_finetune_tab(services):
    last = LAST
    compare_tab.vote_pair(services, "right_better", SESSION, last, "base", "dpo")
    out = finetune_tab.send_votes(services, SESSION, "DPO (pairs)")
    assert out[0]["value"] == finetune_tab.SOURCE_VOTES and out[-1]["selected"] == "finetune"
    state = out[1]
    assert state["trainable"] and state["format"] == "paired" and state["rows_for"]["dpo"] == 1
    out = finetune_tab.reload_votes_for_method(services, finetune_tab.SOURCE_VOTES, None, None, SESSION,
                                               "KTO (labelled answers)")
    assert out[0]["format"] == "unpaired" and out[0]["rows_for"]["kto"] == 2


# the test's short names for the Fine-tune form's fields
FORM_KEYS = {"method_label": "method", "lr": "learning_rate", "batch": "batch_size", "max_len": "max_length",
             "lam_d": "desirable_weight", "lam_u": "undesirable_weight", "r": "lora_r", "alpha": "lora_alpha",
             "dropout": "lora_dropout"}


def _start(services, data, name="tiny-run", **over):
    args = dict(method_label="DPO (pairs)", beta=0.1, lr=5e-4, steps=TINY_TRAIN["steps"], epochs=1.0,
                batch=TINY_TRAIN["batch"], max_len=TINY_TRAIN["max_len"], lam_d=1.0, lam_u=1.0, r=4, alpha=8,
                dropout=0.0, sft_weight=0.0, early_stop=False, drift_budget=0.0)
    args.update(over)
    args.setdefault("heldout_share", 0.0)
    form = {FORM_KEYS.get(k, k): v for k, v in args.items()}
    return finetune_tab.start_training(services, SESSION, data, {**form, "name": name})


def test_refusals_name_the_value(services):
    data = finetune_tab.load_data(services, finetune_tab.SOURCE_EXAMPLE, None, "paired_example.csv", SESSION,
                                  "DPO (pairs)")[0]
    with pytest.raises(gr.Error, match="reserved"):
        _start(services, data, name="base")
    with pytest.raises(gr.Error, match="path"):
        _start(services, data, name="../evil")
    with pytest.raises(gr.Error, match="learning rate"):
        _start(services, data, lr=5.0)
    with pytest.raises(gr.Error, match="empty: beta"):
        _start(services, data, beta=None)
    with pytest.raises(gr.Error, match="batch size 64 is larger"):
        _start(services, data, batch=64)
    with pytest.raises(gr.Error, match="passes validation"):
        _start(services, None)
    assert services.queue.jobs == {}


def _wait(services, job_id, timeout=240):
    deadline = time.time() + timeout
    seen = None
    outputs = None
    while time.time() < deadline:
        outputs = finetune_tab.poll_job(services, job_id, seen, services.queue.get(job_id).name)
        seen = outputs["seen"]
        if services.queue.get(job_id).finished and seen.get("final"):
            return outputs
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not finish: {services.job_view(job_id)}")


def test_two_step_training_attaches_the_adapter(services):
    data = finetune_tab.load_data(services, finetune_tab.SOURCE_EXAMPLE, None, "paired_example.csv", SESSION,
                                  "DPO (pairs)")[0]
    out = _start(services, data, heldout_share=0.15)  # 20 rows: 3 of them (their prompts) are held out
    job_id = out["job_state"]
    assert out["timer"].active is True  # the timer starts polling
    outputs = _wait(services, job_id)
    result, timer, start, changed = outputs["result"], outputs["timer"], outputs["start"], outputs["adapters_changed"]
    zip_update, name = outputs["zip"], outputs["name"]
    assert name == "my-dpo-1"  # the finished run's name is taken: a fresh one is suggested
    view = services.job_view(job_id)
    assert view["status"] == "done", view
    assert "tiny-run" in services.variant_names() and changed == "tiny-run:done"
    assert "tie (0.5)" in result and "coin flip" in result
    assert "your held-out split: 3 pairs from 3 prompts of data/examples/paired_example.csv" in result, result
    assert timer.active is False and start["interactive"] is True
    with zipfile.ZipFile(zip_update["value"]) as archive:
        names = archive.namelist()
    assert "tiny-run/adapter_model.safetensors" in names and "tiny-run/meta.json" in names
    assert compare_tab.refresh_variants(services, ["base"])["choices"][-1] == "tiny-run"
    # a page refresh re-attaches by the stored job id, or by the session when the id is gone
    again = finetune_tab.reattach(services, SESSION, None)
    assert again["job_state"] == job_id and "done" in again["status"]
    # the Learn tab's speed table now has a measurement on this device
    speed = learn_tab.refresh_speed(services)
    assert "tiny-run" in speed and "seconds / step" in speed
    with pytest.raises(gr.Error, match="already exists"):
        _start(services, data, name="tiny-run")


def test_cancel_stops_a_running_job(services):
    data = finetune_tab.load_data(services, finetune_tab.SOURCE_EXAMPLE, None, "unpaired_example.csv", SESSION,
                                  "KTO (labelled answers)")[0]
    out = _start(services, data, name="to-cancel", method_label="KTO (labelled answers)", steps=200)
    job_id = out["job_state"]
    finetune_tab.cancel_training(services, SESSION, job_id)
    outputs = _wait(services, job_id)
    assert services.job_view(job_id)["status"] == "cancelled"
    assert "Nothing was saved" in outputs["result"]
    assert "to-cancel" not in services.variant_names()
    with pytest.raises(gr.Error, match="No running training"):
        finetune_tab.cancel_training(services, SESSION, job_id)


# --------------------------------------------------------------------------------------------------------------------
# Learn and API helpers


def test_learn_pieces():
    fig = learn_tab.value_function_figure(2.0, 0.0)
    assert len(fig.data) == 2
    correct = dict(zip(fig.data[0].x, fig.data[0].y))
    assert correct[-1.0] == pytest.approx(-2.0) and correct[1.0] == pytest.approx(1.0)  # losses x lambda
    source = dict(zip(fig.data[1].x, fig.data[1].y))
    assert source[1.0] == pytest.approx(2.0) and source[-1.0] == pytest.approx(-1.0)  # the source's gains x lambda
    table = learn_tab.comparison_table()
    assert r"\lambda\,\mathrm{ReLU}(V-\tau) - \mathrm{ReLU}(\tau - V)" in table and "corrected" in table
    assert "No training has run" in learn_tab.speed_markdown([], "cpu")


def test_api_refuses_files_outside_the_upload_folder(tmp_path):
    from playground.ui import api

    secret = tmp_path / "secret.csv"
    secret.write_text("prompt,chosen,rejected\na,b,c\n")
    with pytest.raises(gr.Error, match="uploaded"):
        api._uploaded_path({"path": str(secret), "meta": {"_type": "gradio.FileData"}})
    with pytest.raises(gr.Error, match="handle_file"):
        api._uploaded_path(str(secret))
    report = read_feedback(secret)
    summary = api.report_dict(report)
    assert summary["trainable"] and summary["preview"] == [{"prompt": "a", "chosen": "b", "rejected": "c"}]


def test_launch_binds_loopback_unless_the_environment_says_otherwise(services, monkeypatch):
    from playground.ui import page

    seen = {}
    monkeypatch.setattr(page.Services, "create", classmethod(lambda cls, base_model=None: services))
    monkeypatch.setattr(page.gr.Blocks, "launch", lambda self, **kw: seen.update(kw))
    monkeypatch.delenv("GRADIO_SERVER_NAME", raising=False)
    page.launch()
    assert seen["server_name"] == "127.0.0.1" and seen["server_port"] == config.APP.port
    assert seen["max_file_size"] == config.FEEDBACK.max_bytes and "css" in seen and "theme" in seen
    monkeypatch.setenv("GRADIO_SERVER_NAME", "0.0.0.0")  # Hugging Face Spaces sets this
    page.launch(host=config.APP.host)
    assert seen["server_name"] == "0.0.0.0"
    page.launch(host="10.1.2.3")
    assert seen["server_name"] == "10.1.2.3"
