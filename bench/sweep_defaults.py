"""The sweep behind the training defaults: which settings learn a trait on new prompts without degenerating.

    .venv/bin/python -m bench.sweep_defaults --stage grid      # one stage of runs (appends to bench/results/)
    .venv/bin/python -m bench.sweep_defaults --render          # docs/DEFAULTS.md from every run recorded so far

Each run fine-tunes the embedded model on one small trait file (``data/traits/``: a fixed opener, a sign-off, a
numbered-list format; 48 pairs whose chosen answer is the rejected one plus the trait) or on the demo data, with one
setting of learning rate, steps, beta, SFT weight, LoRA rank and targets and early stopping, exactly as the
Fine-tune tab would run it. It is measured on 14 prompts of the demo held-out set (every fourth non-decline item, all
six categories), which no training file contains (new prompts): the held-out pairs (the trait added to each prompt's
concise reference answer) give the held-out accuracy and loss and drive early stopping; the greedy answers of the base
and the adapter give

* trait adoption: share of answers that show the trait (``data/build_trait_data.TRAITS``);
* degeneration: share of answers with a word 3-gram repeated 3+ times, and distinct-2;
* fluency: the base model's mean token log-prob of the answer (the base's view of how natural it reads);
* ROUGE-L to the prompt's concise reference answer (is the content still there).

Runs are recorded one JSON line each in ``bench/results/sweep.jsonl`` (git-ignored), so a stage can be re-run or
resumed; ``--render`` writes the table and the chosen defaults' evidence into ``docs/DEFAULTS.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "data"))

import pandas as pd  # noqa: E402
import torch  # noqa: E402
from build_demo_data import CONTENT_FILE, parse_content  # noqa: E402
from build_trait_data import TRAITS  # noqa: E402

from playground import config  # noqa: E402
from playground.engine import threads  # noqa: E402
from playground.engine.answers import rouge_to_references  # noqa: E402
from playground.engine.base_model import load_base_model, resolve_base_model  # noqa: E402
from playground.engine.device import pick_device  # noqa: E402
from playground.feedback import paired_to_unpaired, read_feedback  # noqa: E402
from playground.training.loop import train  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "sweep.jsonl"
DOC = ROOT / "docs" / "DEFAULTS.md"
EVAL_PROMPTS = 16
EVAL_TOKENS = 64
ALL_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")


def heldout_items() -> list[Any]:
    content = parse_content(CONTENT_FILE.read_text(encoding="utf-8"))
    items = [i for i in content.items if i.split == "heldout" and i.category != "decline"]
    # spread over the categories: every fourth item gives 14 prompts covering all six categories
    return items[::4][:EVAL_PROMPTS]


def heldout_pairs(trait: str | None) -> pd.DataFrame:
    """New prompts with pairs that carry the trait (chosen = trait(reference), rejected = reference), or, for the
    demo data, its own held-out pairs on the same prompts."""
    items = heldout_items()
    if trait is None:
        frame = read_feedback(ROOT / "data" / "demo_pairs_heldout.csv").data
        keep = frame[frame["prompt"].isin({i.prompt for i in items})]
        return keep.drop_duplicates(subset=["prompt"]).reset_index(drop=True)
    write = TRAITS[trait][0]
    return pd.DataFrame({"prompt": [i.prompt for i in items], "chosen": [write(i.answer) for i in items],
                         "rejected": [i.answer for i in items]})


def training_frame(dataset: str, method: str) -> pd.DataFrame:
    path = ROOT / "data" / ("demo_pairs_train.csv" if dataset == "demo" else f"traits/{dataset}.csv")
    frame = read_feedback(path).data
    if dataset == "demo":
        frame = frame.sample(n=96, random_state=0).reset_index(drop=True)  # a short run's worth of the demo set
    return paired_to_unpaired(frame) if method == "kto" else frame


def train_config(setting: dict[str, Any]) -> config.TrainConfig:
    base = config.TRAIN
    targets = ATTENTION if setting.get("targets") == "attention" else ALL_TARGETS
    rank = int(setting.get("rank", base.lora.r))
    lora = dataclasses.replace(base.lora, r=rank, alpha=2 * rank, target_modules=targets)
    loss = dataclasses.replace(base.loss, beta=float(setting.get("beta", base.loss.beta)),
                               sft_weight=float(setting.get("sft", base.loss.sft_weight)))
    stopping = dataclasses.replace(base.early_stopping, enabled=bool(setting.get("early_stop", True)),
                                   drift_budget=float(setting.get("drift_budget", 0.0)))
    probes = dataclasses.replace(base.probes, enabled=False, report_prompts=EVAL_PROMPTS,
                                 report_max_new_tokens=EVAL_TOKENS)
    return dataclasses.replace(base, method=setting["method"], learning_rate=float(setting["lr"]),
                               steps=int(setting["steps"]), batch_size=int(setting.get("batch", base.batch_size)),
                               lora=lora, loss=loss, early_stopping=stopping, probes=probes)


def key_of(setting: dict[str, Any]) -> str:
    return json.dumps(setting, sort_keys=True)


def run(setting: dict[str, Any]) -> dict[str, Any]:
    """Train one setting on its data set and measure it (see the module docstring)."""
    dataset, method = setting["dataset"], setting["method"]
    trait = None if dataset == "demo" else dataset
    cfg = train_config(setting)
    device = pick_device()
    base, tokenizer = load_base_model(resolve_base_model(), device)
    heldout = heldout_pairs(trait)
    started = time.perf_counter()
    result = train(base, tokenizer, training_frame(dataset, method), cfg, device=device, heldout_frame=heldout)
    seconds = time.perf_counter() - started
    meta = result.meta
    sets = meta["answers_eval"]["sets"]
    references = [i.answer for i in heldout_items()][: len(meta["answers_eval"]["prompts"])]
    shows = TRAITS[trait][1] if trait else None
    measured = {}
    for name, answers in sets.items():
        texts = answers["texts"]
        summary = meta["answers_eval"]["summaries"][name]
        rouge = rouge_to_references(texts, references)
        measured[name] = {"share_trait": (sum(shows(t) for t in texts) / len(texts)) if shows else None,
                          "share_repetitive": summary["share_repetitive"],
                          "mean_distinct_2": summary["mean_distinct_2"], "mean_fluency": summary["mean_fluency"],
                          "mean_rouge_l": sum(rouge) / len(rouge), "mean_words": summary["mean_words"],
                          "examples": texts[:3], "texts": texts}
    return {"setting": setting, "key": key_of(setting), "seconds": round(seconds, 1),
            "steps_done": meta["steps_done"], "early_stop": meta.get("early_stop"), "kept_step": meta.get("kept_step"),
            "heldout": meta.get("heldout_metrics"), "evaluations": meta.get("heldout_evaluations"),
            "base": measured.get(config.BASE_VARIANT), "adapter": measured.get("adapter"),
            "versions": {"torch": torch.__version__}, "device": device.describe()}


# --------------------------------------------------------------------------------------------------------------------
# Stages

def grid(**axes: list[Any]) -> list[dict[str, Any]]:
    names = list(axes)
    return [dict(zip(names, values)) for values in itertools.product(*axes.values())]


STAGES: dict[str, list[dict[str, Any]]] = {
    # 1. the failing case (opener, DPO, 48 pairs, batch 8): learning rate x steps x SFT weight
    "grid": grid(dataset=["opener"], method=["dpo"], lr=[5e-5, 2e-4, 5e-4], steps=[6, 12], sft=[0.0, 1.0],
                 early_stop=[False]),
    # 2. around the best cell of stage 1 (lr 5e-4, 12 steps, SFT 1): more SFT, a lower rate, half the steps at twice
    #    the rate (faster), a larger beta, a smaller rank, attention-only targets
    "shape": [{**dict(dataset="opener", method="dpo", lr=5e-4, steps=12, sft=1.0, early_stop=False), **extra}
              for extra in ({"sft": 3.0}, {"lr": 3e-4}, {"lr": 1e-3, "steps": 6}, {"beta": 0.5}, {"rank": 8},
                            {"targets": "attention"})],
    # 3. the candidate defaults on every trait, both methods, as the app runs them: 2 epochs (steps 0), early stopping
    "traits": grid(dataset=["opener", "signoff", "numbered"], method=["dpo", "kto"], lr=[5e-4], steps=[0],
                   sft=[1.0], early_stop=[True]),
    # 4. the same without the SFT term, to see what it buys on the other traits (opener: stage 1's 12-step cells)
    "no_sft": grid(dataset=["signoff", "numbered"], method=["dpo"], lr=[5e-4], steps=[0], sft=[0.0],
                   early_stop=[True]),
    # 5. the demo data (what the shipped adapters are trained on): the candidate defaults on a 96-pair sample
    "demo": grid(dataset=["demo"], method=["dpo", "kto"], lr=[5e-4], steps=[0], sft=[1.0], early_stop=[True]),
}


def recorded() -> dict[str, dict[str, Any]]:
    if not RESULTS.is_file():
        return {}
    runs = {}
    for line in RESULTS.read_text(encoding="utf-8").splitlines():
        if line.strip():
            record = json.loads(line)
            runs[record["key"]] = record
    return runs


def run_stage(name: str, force: bool = False) -> None:
    done = recorded()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    for setting in STAGES[name]:
        if key_of(setting) in done and not force:
            print(f"skip (recorded): {setting}")
            continue
        print(f"run: {setting}", flush=True)
        record = run(setting)
        with RESULTS.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        a = record["adapter"]
        print(f"  {record['seconds']} s, steps {record['steps_done']}: trait {a['share_trait']}, repetitive "
              f"{a['share_repetitive']:.2f}, fluency {a['mean_fluency']:.3f}, rouge {a['mean_rouge_l']:.3f}; "
              f"held-out acc {record['heldout']['preference_accuracy']:.3f}", flush=True)


# --------------------------------------------------------------------------------------------------------------------
# The report

def _n(value: Any, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def render() -> str:
    runs = list(recorded().values())
    lines = ["| data | method | lr | steps (done) | beta | SFT | LoRA | early stop | trait | repetitive | distinct-2 | "
             "fluency | ROUGE-L | held-out acc / loss | s |", "|" + "---|" * 15]
    bases: dict[str, dict[str, Any]] = {}
    for r in sorted(runs, key=lambda r: (r["setting"]["dataset"], r["setting"]["method"], r["key"])):
        s, a, h = r["setting"], r["adapter"], r["heldout"] or {}
        bases.setdefault(s["dataset"], r["base"])
        lora = f"r{s.get('rank', config.TRAIN.lora.r)} {s.get('targets', 'all')}"
        planned = s["steps"] or f"{config.TRAIN.epochs:g} epochs"
        lines.append(f"| {s['dataset']} | {s['method']} | {s['lr']:g} | {planned} ({r['steps_done']}) | "
                     f"{s.get('beta', config.TRAIN.loss.beta):g} | {s.get('sft', config.TRAIN.loss.sft_weight):g} | "
                     f"{lora} | "
                     f"{'yes' if s.get('early_stop', True) else 'no'} | {_n(a['share_trait'])} | "
                     f"{_n(a['share_repetitive'])} | {_n(a['mean_distinct_2'])} | {_n(a['mean_fluency'])} | "
                     f"{_n(a['mean_rouge_l'])} | {_n(h.get('preference_accuracy'))} / {_n(h.get('dpo_loss'), 3)} | "
                     f"{r['seconds']:.0f} |")
    base_lines = ["| data | trait | repetitive | distinct-2 | fluency | ROUGE-L |", "|---|---|---|---|---|---|"]
    for dataset, b in sorted(bases.items()):
        base_lines.append(f"| {dataset} | {_n(b['share_trait'])} | {_n(b['share_repetitive'])} | "
                          f"{_n(b['mean_distinct_2'])} | {_n(b['mean_fluency'])} | {_n(b['mean_rouge_l'])} |")
    return "\n".join(base_lines), "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stage", choices=sorted(STAGES), action="append", default=[])
    parser.add_argument("--force", action="store_true", help="re-run settings already recorded")
    parser.add_argument("--render", action="store_true",
                        help="print the tables of every recorded run and write them into docs/DEFAULTS.md")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    threads.limit(args.threads)
    for stage in args.stage:
        run_stage(stage, args.force)
    if args.render:
        base, table = render()
        tables = f"Base model (no adapter), per data set:\n\n{base}\n\nEvery recorded run:\n\n{table}\n"
        print(tables)
        write_tables(tables)
    return 0


START, END = "<!-- sweep tables: start (bench/sweep_defaults.py --render) -->", "<!-- sweep tables: end -->"


def write_tables(tables: str) -> None:
    """Replace the generated part of docs/DEFAULTS.md (between the markers); the written text around it is kept."""
    text = DOC.read_text(encoding="utf-8") if DOC.is_file() else f"# Training defaults\n\n{START}\n{END}\n"
    if START not in text or END not in text:
        raise SystemExit(f"{DOC} lacks the markers {START!r} ... {END!r}")
    head, rest = text.split(START, 1)
    tail = rest.split(END, 1)[1]
    DOC.write_text(f"{head}{START}\n{tables}{END}{tail}", encoding="utf-8")


if __name__ == "__main__":
    raise SystemExit(main())
