"""``python -m playground.generate "PROMPT" --variants base,dpo,kto``: answers of several variants, side by side.

Exit codes: 0 answered, 1 the model could not be loaded or no variant exists, 2 a bad prompt or setting.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace

from playground import config
from playground.engine import threads


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Answer one prompt with several variants in one batched pass.")
    parser.add_argument("prompt")
    parser.add_argument("--variants", default="base,dpo,kto", help="comma-separated: base and adapter names")
    parser.add_argument("--system", default=config.GENERATION.system_prompt, help="optional system prompt")
    parser.add_argument("--max-new-tokens", type=int, default=config.GENERATION.max_new_tokens)
    parser.add_argument("--temperature", type=float, default=None, help="sample at this temperature (default greedy)")
    parser.add_argument("--top-p", type=float, default=config.GENERATION.top_p)
    parser.add_argument("--seed", type=int, default=config.GENERATION.seed)
    parser.add_argument("--base-model", help="hub id or local directory (default: the embedded SmolLM2-135M)")
    args = parser.parse_args(argv)
    print(threads.describe(), file=sys.stderr)

    # heavy imports after argument parsing, so --help is instant
    from playground.engine.base_model import ModelSourceError, resolve_base_model
    from playground.engine.engine import Engine
    from playground.engine.generation import GenerationInputError, generate

    try:
        engine = Engine.load(resolve_base_model(args.base_model))
    except ModelSourceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"# base model: {engine.source.describe()}; device: {engine.device.describe()}", file=sys.stderr)
    engine.attach_all(config.REPO_ROOT / "checkpoints", config.data_dir() / "adapters")
    requested = [v.strip() for v in args.variants.split(",") if v.strip()]
    available = engine.variant_names()
    missing = [v for v in requested if v not in available]
    for name in missing:
        print(f"# variant {name!r} does not exist (available: {', '.join(available)}); skipped", file=sys.stderr)
    variants = [v for v in requested if v in available]
    if not variants:
        return 1
    settings = replace(config.GENERATION, max_new_tokens=args.max_new_tokens, seed=args.seed, top_p=args.top_p,
                       do_sample=args.temperature is not None,
                       temperature=args.temperature if args.temperature is not None else config.GENERATION.temperature)
    try:
        outputs = generate(engine, args.prompt, variants, settings, system=args.system or None)
    except GenerationInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for name, output in outputs.items():
        print(f"=== {name} ===\n{output.text}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
