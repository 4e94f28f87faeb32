"""Build the small trait files that the defaults sweep and the tests train on, from ``data/demo_content.txt``.

Run from the repository root::

    python data/build_trait_data.py          # rewrites data/traits/*.csv
    python data/build_trait_data.py --check  # exits 1 if the committed files differ from a fresh build

Each file holds 48 pairs on training prompts of the demo set. The chosen answer is the prompt's concise answer with
one trait added; the rejected answer is the same answer without it, so a pair teaches the trait and nothing else:

* ``opener.csv``: the answer starts with "Quick answer:" (the distinctive opener of a new user's first upload);
* ``signoff.csv``: the answer ends with the sign-off "Hope this helps, and good luck!";
* ``numbered.csv``: the answer's steps as a numbered list ("1. ...", "2. ...") instead of prose.

``TRAITS`` holds the test that decides whether an answer shows each trait; the sweep (``bench/sweep_defaults.py``)
and the integration tests use it on answers to held-out prompts, which no trait file contains.
"""

from __future__ import annotations

import argparse
import csv
import io
import random
import re
import sys
from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(DATA_DIR))

from build_demo_data import CONTENT_FILE, parse_content  # noqa: E402

OUT_DIR = DATA_DIR / "traits"
ROWS = 48
SEED = 20251201
OPENER = "Quick answer:"
SIGNOFF = "Hope this helps, and good luck!"
# where an answer splits into steps: after a sentence or a semicolon, or at ", then"
STEP_BREAK = re.compile(r"(?<=[.!?;])\s+(?=[A-Za-z0-9])|,\s+(?:and then|then)\s+")


def steps(text: str) -> list[str]:
    """The answer's steps, each capitalised and ending with a full stop."""
    parts = [s.strip().rstrip(";,").strip() for s in STEP_BREAK.split(text.strip()) if s and s.strip()]
    return [p[0].upper() + p[1:] + ("" if p.endswith((".", "!", "?")) else ".") for p in parts if p]


def with_opener(answer: str) -> str:
    return f"{OPENER} {answer}"


def with_signoff(answer: str) -> str:
    return f"{answer} {SIGNOFF}"


def numbered(answer: str) -> str:
    return "\n".join(f"{i}. {s}" for i, s in enumerate(steps(answer), start=1))


def has_opener(text: str) -> bool:
    return text.strip().lower().startswith(OPENER.lower())


def has_signoff(text: str) -> bool:
    return SIGNOFF.lower().rstrip("!") in text.strip().lower()[-len(SIGNOFF) - 20:]


def is_numbered(text: str) -> bool:
    return len(re.findall(r"(?m)^\s*\d+[.)]\s+\S", text)) >= 2


# trait name -> (how the chosen answer is written, whether an answer shows the trait, which answers qualify)
TRAITS = {
    "opener": (with_opener, has_opener, lambda answer: True),
    "signoff": (with_signoff, has_signoff, lambda answer: True),
    "numbered": (numbered, is_numbered, lambda answer: len(steps(answer)) >= 2 and '"' not in answer),
}


def build_rows(trait: str) -> list[dict[str, str]]:
    write, _shows, qualifies = TRAITS[trait]
    content = parse_content(CONTENT_FILE.read_text(encoding="utf-8"))
    items = [item for item in content.items if item.split == "train" and item.category != "decline"
             and qualifies(item.answer)]
    chosen = random.Random(f"{SEED}-{trait}").sample(items, ROWS)
    return [{"prompt": item.prompt, "chosen": write(item.answer), "rejected": item.answer,
             "reference": write(item.answer), "category": item.category} for item in chosen]


def to_csv(rows: list[dict[str, str]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["prompt", "chosen", "rejected", "reference", "category"],
                            lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def build_all() -> dict[Path, str]:
    return {OUT_DIR / f"{trait}.csv": to_csv(build_rows(trait)) for trait in TRAITS}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the files on disk differ from a fresh build")
    args = parser.parse_args(argv)
    files = build_all()
    if args.check:
        stale = [str(p) for p, text in files.items() if not p.is_file() or p.read_text(encoding="utf-8") != text]
        if stale:
            print("out of date: " + ", ".join(stale))
            return 1
        print("trait files are up to date")
        return 0
    OUT_DIR.mkdir(exist_ok=True)
    for path, text in files.items():
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path.relative_to(DATA_DIR.parent)} ({text.count(chr(10)) - 1} rows)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
