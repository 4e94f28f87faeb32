"""``python -m playground.feedback FILE``: check a feedback file (see ``playground.cli.feedback_check``)."""

from playground.cli.feedback_check import main

if __name__ == "__main__":
    raise SystemExit(main())
