"""``python -m playground.train``: see ``playground.cli.train``."""

from playground.cli.train import main

if __name__ == "__main__":
    raise SystemExit(main())
