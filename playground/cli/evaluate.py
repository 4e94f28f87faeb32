"""Measure what an adapter changed: held-out preference accuracy and the style of greedy answers against the base.

``python -m playground.evaluate --adapters dpo,kto --heldout data/demo_pairs_heldout.csv [--write-meta]`` scores the
held-out pairs (exact, fp32) and generates greedy answers to the held-out prompts for base and each adapter in mixed
batches, then reports mean length and the share of answers with the demo data's target traits.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path

from playground import config
from playground.common.files import atomic_write_json
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Held-out accuracy and answer style of adapters against the base.")
    parser.add_argument("--adapters", default="dpo,kto")
    parser.add_argument("--heldout", default=str(config.REPO_ROOT / "data" / "demo_pairs_heldout.csv"))
    parser.add_argument("--prompts", type=int, default=40, help="held-out prompts to answer (0 = all)")
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument("--write-meta", action="store_true", help="store the results in each adapter's meta.json")
    parser.add_argument("--out", help="also write the JSON report here")
    args = parser.parse_args(argv)

    from playground.engine.engine import Engine
    from playground.engine.generation import batched_greedy_answers
    from playground.engine.metrics import engine_preference

    report = read_feedback(Path(args.heldout))
    if not report.trainable or report.format != "paired":
        print(report.summary())
        return 2
    frame = report.data
    engine = Engine.load()
    engine.attach_all(config.REPO_ROOT / "checkpoints")
    adapters = [a.strip() for a in args.adapters.split(",") if a.strip()]
    missing = [a for a in adapters if a not in engine.adapters]
    if missing:
        print(f"error: adapters not found: {missing}; available: {list(engine.adapters)}", file=sys.stderr)
        return 1
    prompts = list(dict.fromkeys(frame["prompt"]))
    prompts = prompts[: args.prompts] if args.prompts else prompts
    answers = batched_greedy_answers(engine, prompts, ["base", *adapters], args.max_new_tokens)
    results = {"base": {"style": style_report(answers["base"])}}
    for adapter in adapters:
        results[adapter] = {"heldout": engine_preference(engine, frame, adapter),
                            "style": style_report(answers[adapter])}
    results["examples"] = [{"prompt": p, **{v: answers[v][i] for v in answers}} for i, p in enumerate(prompts[:5])]
    print(json.dumps(results, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    if args.write_meta:
        for adapter in adapters:
            path = engine.adapters[adapter].path / "meta.json"
            meta = json.loads(path.read_text(encoding="utf-8"))
            meta["style_eval"] = {"prompts": len(prompts), "max_new_tokens": args.max_new_tokens,
                                  "base": results["base"]["style"], "adapter": results[adapter]["style"],
                                  "definition": "target traits: 4-70 words, <= 4 sentences, no rambling/evasive/"
                                                "preachy/curt marker phrases (playground/cli/evaluate.py)"}
            meta["heldout_eval"] = results[adapter]["heldout"]
            atomic_write_json(path, meta, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
