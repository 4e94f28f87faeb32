"""``python -m playground.generate``: see ``playground.cli.generate``."""

from playground.cli.generate import main

if __name__ == "__main__":
    raise SystemExit(main())
