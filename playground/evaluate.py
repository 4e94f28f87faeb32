"""``python -m playground.evaluate``: see ``playground.cli.evaluate``."""

from playground.cli.evaluate import main

if __name__ == "__main__":
    raise SystemExit(main())
