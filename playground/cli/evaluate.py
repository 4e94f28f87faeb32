"""``python -m playground.evaluate``: what adapters changed, measured on any paired file, beside the base.

    python -m playground.evaluate --adapters dpo,kto [--data data/demo_pairs_heldout.csv] [--adapter-dir DIR]
                                  [--prompts 40] [--max-new-tokens 96] [--trait concise] [--write-meta] [--out F]

For each adapter: preference accuracy, margin and DPO loss on the file's pairs (policy against the base), with the
spread of the per-pair DPO loss and gradient weight (a saturated adapter has them all near 0); and, for the base and
each adapter, greedy answers to the file's first prompts measured for length, repetition (a word 3-gram 3+ times),
distinct-2, fluency (the base model's mean token log-prob) and ROUGE-L to the chosen answer, plus the share that
shows ``--trait`` (``concise``: the demo data's direct, concise style). Exit codes: 0 measured, 1 an adapter or the
model is missing, 2 the data file cannot be used.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from playground import config
from playground.common.files import atomic_write_json
from playground.common.numbers import accuracy_text, json_safe
from playground.engine import threads
from playground.feedback import read_feedback

# Openings and phrases of the demo data's four failure styles: rambling, evasive, preachy, curt.
FILLER_MARKERS = (
    r"\bthat's a (really )?(good|great|interesting) question\b", r"^\s*(well|hmm|ah|oh|right, so)\b",
    r"\bthere are (so )?many (different )?(things|factors)\b", r"\bit depends\b", r"\bconsult(ing)? a professional\b",
    r"\bwhere do i even begin\b", r"\bbefore (i answer|getting into it)\b", r"\bword of caution\b",
    r"\bi have to point out\b", r"\byou should already know\b", r"\bi want to remind you\b",
    r"\bgreat question\b", r"\bgoogle it\b", r"\bfigure it out\b", r"\blook it up\b", r"\bnot my problem\b",
)
_FILLER = re.compile("|".join(FILLER_MARKERS), re.IGNORECASE)
_SENTENCE_END = re.compile(r"[.!?](\s|$)")
TRAIT_DEFINITIONS = {"concise": "4-70 words, at most 4 sentences, no rambling/evasive/preachy/curt marker phrase"}


def word_count(text: str) -> int:
    return len(text.split())


def has_target_traits(text: str, max_words: int = 70, max_sentences: int = 4) -> bool:
    """Direct and concise: 4 to ``max_words`` words, at most ``max_sentences`` sentences, no filler/curt markers."""
    words = word_count(text)
    sentences = max(1, len(_SENTENCE_END.findall(text.strip())))
    return 4 <= words <= max_words and sentences <= max_sentences and not _FILLER.search(text)


def style_report(texts: Sequence[str]) -> dict[str, float]:
    """Mean words per answer, share with the target traits, share with a filler/curt marker."""
    if not texts:
        return {"answers": 0, "mean_words": 0.0, "share_target_traits": 0.0, "share_filler": 0.0}
    return {
        "answers": len(texts),
        "mean_words": round(sum(word_count(t) for t in texts) / len(texts), 2),
        "share_target_traits": round(sum(has_target_traits(t) for t in texts) / len(texts), 4),
        "share_filler": round(sum(bool(_FILLER.search(t)) for t in texts) / len(texts), 4),
    }


TRAITS = {"concise": has_target_traits}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="What adapters changed, measured on a paired file beside the base.")
    parser.add_argument("--adapters", default="dpo,kto", help="comma-separated adapter names")
    parser.add_argument("--data", "--heldout", dest="data",
                        default=str(config.REPO_ROOT / "data" / "demo_pairs_heldout.csv"),
                        help="paired file (prompt,chosen,rejected) to measure on")
    parser.add_argument("--adapter-dir", action="append", default=[],
                        help="another folder of adapter folders to attach (repeatable)")
    parser.add_argument("--prompts", type=int, default=40, help="prompts to answer (0 = all)")
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument("--trait", choices=sorted(TRAITS), default="concise",
                        help="which style the answers are checked for (the demo data's: concise)")
    parser.add_argument("--beta", type=float, default=config.LOSS.beta)
    parser.add_argument("--write-meta", action="store_true",
                        help="store the results in each adapter's meta.json (with the fingerprint of the base "
                             "weights they were measured on)")
    parser.add_argument("--out", help="also write the JSON report here")
    return parser


def spread(values) -> dict[str, float]:
    """10th, 50th and 90th percentiles, min and max of a tensor of per-pair values."""
    import torch

    v = values.double()
    q = torch.quantile(v, torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)).tolist()
    return {"p10": round(q[0], 6), "median": round(q[1], 6), "p90": round(q[2], 6),
            "min": round(float(v.min()), 6), "max": round(float(v.max()), 6)}


def measure(engine, frame, adapters: list[str], args: argparse.Namespace) -> dict[str, Any]:
    """Preference numbers and their spread per adapter, and the answer measures of the base and every adapter."""
    from playground.engine.answers import engine_answers_report
    from playground.engine.metrics import engine_pair_logps, preference_metrics
    from playground.objectives.dpo import dpo_loss

    results: dict[str, Any] = {"data": args.data, "pairs": len(frame), "variants": {}}
    for adapter in adapters:
        policy, reference = engine_pair_logps(engine, frame, adapter)
        n = len(frame)
        terms = dpo_loss(policy[:n], policy[n:], reference[:n], reference[n:], beta=args.beta)
        results["variants"][adapter] = {"preference": preference_metrics(policy, reference, beta=args.beta),
                                        "dpo_loss_spread": spread(terms.loss),
                                        "grad_weight_spread": spread(terms.grad_weight)}
    rows = frame.drop_duplicates(subset=["prompt"]) if all(isinstance(p, str) for p in frame["prompt"]) else frame
    rows = rows.head(args.prompts) if args.prompts else rows
    report = engine_answers_report(engine, list(rows["prompt"]), list(rows["chosen"]),
                                   [config.BASE_VARIANT, *adapters], max_new_tokens=args.max_new_tokens,
                                   trait=TRAITS[args.trait])
    for name, summary in report.summaries().items():
        results["variants"].setdefault(name, {})["answers"] = summary
        results["variants"][name]["style"] = style_report(report.sets[name].texts)
    results["answers"] = {"prompts": len(rows), "max_new_tokens": args.max_new_tokens, "trait": args.trait,
                          "trait_definition": TRAIT_DEFINITIONS[args.trait],
                          "examples": [{"prompt": p, **{v: report.sets[v].texts[i] for v in report.sets}}
                                       for i, p in enumerate(report.prompts[:5])]}
    return json_safe(results)


def print_table(results: dict[str, Any]) -> None:
    print(f"{results['pairs']} pairs of {results['data']}; answers to {results['answers']['prompts']} prompts")
    print(f"{'variant':>10} {'accuracy':>9} {'margin':>8} {'DPO loss':>9} {'words':>6} {'repeat':>7} {'dist-2':>7} "
          f"{'fluency':>8} {'ROUGE-L':>8} {'trait':>6}")
    for name, v in results["variants"].items():
        pref, ans = v.get("preference") or {}, v.get("answers") or {}
        accuracy = accuracy_text(pref.get("preference_accuracy"), name == config.BASE_VARIANT)
        print(f"{name:>10} {accuracy:>9} {pref.get('mean_margin', 0):8.3f} {pref.get('dpo_loss', 0.6931):9.3f} "
              f"{ans.get('mean_words') or 0:6.1f} {ans.get('share_repetitive') or 0:7.2f} "
              f"{ans.get('mean_distinct_2') or 0:7.2f} {ans.get('mean_fluency') or 0:8.3f} "
              f"{ans.get('mean_rouge_l') or 0:8.3f} {ans.get('share_trait') or 0:6.2f}")


def write_meta(engine, adapters: list[str], results: dict[str, Any]) -> None:
    base = results["variants"][config.BASE_VARIANT]
    for adapter in adapters:
        path = engine.adapters[adapter].path / "meta.json"
        meta = json.loads(path.read_text(encoding="utf-8"))
        mine = results["variants"][adapter]
        meta["evaluation"] = {"data": results["data"], "pairs": results["pairs"], **results["answers"],
                              "base": {"answers": base["answers"], "style": base["style"]}, "adapter": mine,
                              "base_fingerprint": engine.base_fingerprint}  # the weights it was measured on
        meta["heldout_eval"] = mine["preference"]
        meta.pop("style_eval", None)
        atomic_write_json(path, meta, indent=1)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    print(threads.describe(), file=sys.stderr)
    report = read_feedback(Path(args.data))
    if not report.trainable or report.format != "paired":
        print(report.summary())
        print("error: --data must be a valid paired file (prompt,chosen,rejected).", file=sys.stderr)
        return 2
    from playground.engine.base_model import ModelSourceError
    from playground.engine.engine import Engine

    try:
        engine = Engine.load()
    except ModelSourceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    engine.attach_all(config.REPO_ROOT / "checkpoints", config.data_dir() / "adapters",
                      *(Path(d) for d in args.adapter_dir))
    adapters = [a.strip() for a in args.adapters.split(",") if a.strip()]
    missing = [a for a in adapters if a not in engine.adapters]
    if missing:
        print(f"error: adapters not found: {missing}; available: {list(engine.adapters)}", file=sys.stderr)
        return 1
    results = measure(engine, report.data, adapters, args)
    print_table(results)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    if args.write_meta:
        write_meta(engine, adapters, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
