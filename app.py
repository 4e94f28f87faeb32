"""Build the playground UI and launch it. Everything else lives in playground/."""

from __future__ import annotations

import argparse

from playground.serving import zerogpu

zerogpu.prepare()  # on a ZeroGPU Space, `spaces` must be imported before torch

from playground import config  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="The DPO vs KTO alignment playground")
    parser.add_argument("--base-model", help="hub id or local directory (default: the embedded SmolLM2-135M)")
    parser.add_argument("--host", default=config.APP.host, help="bind address (default loopback)")
    parser.add_argument("--port", type=int, default=config.APP.port)
    args = parser.parse_args(argv)

    from playground.ui.page import launch

    launch(base_model=args.base_model, host=args.host, port=args.port)


if __name__ == "__main__":
    main()
