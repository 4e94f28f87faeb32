"""``python -m playground.cli.prepare_model``: dequantize the embedded model once and report the device choice."""

from __future__ import annotations

from playground.engine.base_model import ModelSourceError, model_directory, resolve_base_model
from playground.engine.device import pick_device


def main(argv: list[str] | None = None) -> int:
    """``python -m playground.cli.prepare_model``: prepare the embedded checkpoint, report the model and device."""
    import argparse

    parser = argparse.ArgumentParser(description="Prepare the base model and report the device choice.")
    parser.add_argument("--base-model", help="hub id or local directory (default: the embedded SmolLM2-135M)")
    args = parser.parse_args(argv)
    try:
        source = resolve_base_model(args.base_model)
        directory = model_directory(source) if source.kind != "hub" else source.name
    except ModelSourceError as exc:
        print(f"error: {exc}")
        return 1
    print(f"base model: {source.describe()} -> {directory}")
    print(f"device: {pick_device().describe()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
