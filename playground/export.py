"""``python -m playground.export``: see ``playground.cli.export``."""

from playground.cli.export import main

if __name__ == "__main__":
    raise SystemExit(main())
