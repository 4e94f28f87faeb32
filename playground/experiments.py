"""``python -m playground.experiments``: see ``playground.cli.experiments``."""

from playground.cli.experiments import main

if __name__ == "__main__":
    raise SystemExit(main())
