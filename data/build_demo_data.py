"""Build the demo preference data from the hand-written content in ``data/demo_content.txt``.

Run from the repository root::

    python data/build_demo_data.py          # rewrites data/demo_*.csv and data/examples/*.csv
    python data/build_demo_data.py --check  # exits 1 if the committed files differ from a fresh build

Every prompt in the content file has one hand-written concise answer (the chosen response). Each prompt yields two
pairs whose rejected responses use two different failure styles, rendered from hand-written templates:

* rambling: a long filler opening before the answer;
* evasive: "it depends, ask a professional", no answer;
* preachy: a lecture before a grudging answer;
* curt: a rude, dismissive one-liner;
* requests that should be declined: the rejected response goes along with the request ("complies"), lectures
  without offering an alternative ("lectures"), or is a curt refusal ("curt").

The second pair of a prompt uses the same answer with a short friendly closer ("Hope that helps!"), so the unpaired
KTO files hold no duplicate rows. The build is deterministic (fixed seed, no clock, no environment).
"""

from __future__ import annotations

import argparse
import csv
import io
import itertools
import random
import re
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent
CONTENT_FILE = DATA_DIR / "demo_content.txt"
SEED = 20250601

STYLES = ("rambling", "evasive", "preachy", "curt")
DECLINE_STYLES = ("complies", "lectures", "curt")
CATEGORIES = ("cooking", "travel", "health", "writing", "coding", "customer_service", "decline")
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")

PAIRED_HEADER = ("prompt", "chosen", "rejected", "reference", "category", "rejected_style")
UNPAIRED_HEADER = ("prompt", "completion", "label", "reference", "category", "style")


@dataclass(frozen=True)
class Item:
    split: str
    category: str
    prompt: str
    topic: str
    answer: str
    complies: str = ""  # decline items only: a rejected answer that goes along with the request


@dataclass(frozen=True)
class Content:
    templates: dict[str, list[str]]
    closers: dict[str, list[str]]
    professional: dict[str, str]
    items: list[Item]


def parse_content(text: str) -> Content:
    """Parse demo_content.txt (format described at its top)."""
    templates: dict[str, list[str]] = {}
    closers: dict[str, list[str]] = {}
    professional: dict[str, str] = {}
    items: list[Item] = []
    section: tuple[str, str] | None = None
    block: dict[str, str] = {}

    def flush() -> None:
        if not block:
            return
        assert section is not None and section[0] in ("train", "heldout"), f"Q/A block outside a data section: {block}"
        missing = [k for k in ("Q", "T", "A") if not block.get(k)]
        assert not missing, f"block is missing {missing}: {block}"
        if section[1] == "decline":
            assert block.get("X"), f"decline block needs an X: line: {block}"
        items.append(Item(section[0], section[1], block["Q"], block["T"], block["A"], block.get("X", "")))
        block.clear()

    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.rstrip()
        if line.startswith("#"):
            continue
        header = re.fullmatch(r"\[(\w+)(?::\s*(\w+))?\]", line)
        if header:
            flush()
            section = (header.group(1), header.group(2) or "")
            continue
        if not line:
            flush()
            continue
        assert section is not None, f"line {lineno}: content before the first section"
        kind, name = section
        if kind in ("templates", "closers"):
            assert line.startswith("- "), f"line {lineno}: expected '- ' list item"
            (templates if kind == "templates" else closers).setdefault(name, []).append(line[2:])
        elif kind == "professional":
            key, _, value = line.partition("=")
            professional[key.strip()] = value.strip()
        else:
            tag, _, value = line.partition(": ")
            assert tag in ("Q", "T", "A", "X") and value, f"line {lineno}: expected 'Q: ', 'T: ', 'A: ' or 'X: '"
            assert tag not in block, f"line {lineno}: second {tag}: line in one block"
            block[tag] = value.strip()
    flush()
    return Content(templates, closers, professional, items)


class Deck:
    """Deals templates in shuffled rounds, so every template is used about equally often."""

    def __init__(self, cards: list[str], rng: random.Random) -> None:
        self.cards, self.rng, self.pile = list(cards), rng, []

    def deal(self) -> str:
        if not self.pile:
            self.pile = list(self.cards)
            self.rng.shuffle(self.pile)
        return self.pile.pop()


def render(template: str, item: Item, professional: dict[str, str]) -> str:
    topic = item.topic
    out = template.replace("{Topic}", topic[:1].upper() + topic[1:]).replace("{topic}", topic)
    out = out.replace("{pro}", professional.get(item.category, "an expert"))
    return out.replace("{answer}", item.answer)


def style_pairs(n: int, styles: tuple[str, ...], rng: random.Random) -> list[tuple[str, str]]:
    """n ordered pairs of distinct styles, every unordered combination used about equally often."""
    combos = list(itertools.combinations(styles, 2))
    out: list[tuple[str, str]] = []
    while len(out) < n:
        batch = list(combos)
        rng.shuffle(batch)
        out.extend(batch)
    out = out[:n]
    return [(a, b) if rng.random() < 0.5 else (b, a) for a, b in out]


def build_rows(content: Content, split: str, rng: random.Random) -> list[dict[str, str]]:
    decks = {style: Deck(cards, rng) for style, cards in content.templates.items()}
    closers = {cat: Deck(cards, rng) for cat, cards in content.closers.items()}
    items = [it for it in content.items if it.split == split]
    rng.shuffle(items)
    regular = [it for it in items if it.category != "decline"]
    declines = [it for it in items if it.category == "decline"]
    assigned = dict(zip(regular, style_pairs(len(regular), STYLES, rng), strict=True))
    assigned.update(zip(declines, style_pairs(len(declines), DECLINE_STYLES, rng), strict=True))

    rows = []
    for item in items:
        for variant, style in enumerate(assigned[item]):
            chosen = item.answer if variant == 0 else f"{item.answer} {closers[item.category].deal()}"
            if style == "complies":
                rejected = item.complies
            elif style == "lectures":
                rejected = render(decks["lectures"].deal(), item, content.professional)
            elif item.category == "decline":  # a curt refusal without an alternative
                rejected = decks["curt_decline"].deal()
            else:
                rejected = render(decks[style].deal(), item, content.professional)
            rows.append(
                {
                    "prompt": item.prompt,
                    "chosen": chosen,
                    "rejected": rejected,
                    "reference": item.answer,
                    "category": item.category,
                    "rejected_style": style,
                }
            )
    return rows


def to_unpaired(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    out = []
    for row in rows:
        common = {"prompt": row["prompt"], "reference": row["reference"], "category": row["category"]}
        out.append({**common, "completion": row["chosen"], "label": "true", "style": "concise"})
        out.append({**common, "completion": row["rejected"], "label": "false", "style": row["rejected_style"]})
    return out


def to_csv(rows: list[dict[str, str]], header: tuple[str, ...]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(header), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


# Example upload files (data/examples/). Spelled-out labels show every accepted family of spellings.
TRUE_SPELLINGS = ("👍", "yes", "True", "1", "good", "up", "👍🏽", "thumbs up", "Yes", "👍️")
FALSE_SPELLINGS = ("👎", "no", "FALSE", "0", "bad", "down", "👎🏻", "thumbs down", "No", "👎️")

MISTAKES_PAIRED = [
    ["prompt", "choosen", "rejected"],
    [
        "How long should I boil an egg for a firm yolk?",
        "Boil it for 9 to 12 minutes, then move it to cold water.",
        "Google it.",
    ],
    ["What's a good substitute for buttermilk?", "", "Figure it out yourself."],
    ["How do I reverse a list in Python?", "Use my_list[::-1].", "Use my_list[::-1]."],
    [
        "How long should I boil an egg for a firm yolk?",
        "Boil it for 9 to 12 minutes, then move it to cold water.",
        "Google it.",
    ],
    ['=HYPERLINK("https://example.com","Click here")', "Sure, that's a link.", "No."],
    ["How do I end a formal email?", 'Use "Kind regards" and your full name.', "Whatever.", "extra cell"],
    [
        "How many hours of sleep do adults need?",
        "Most adults need 7 to 9 hours of sleep a night.",
        "It really depends, you should consult a doctor.",
    ],
]

MISTAKES_UNPAIRED = [
    ["prompt", "completion", "lable"],
    ["How do I track my order?", "Use the tracking link in your shipping confirmation email.", "👍"],
    ["How do I track my order?", "Why ask me? Work it out.", "maybe"],
    ["", "Most colds clear up within 7 to 10 days.", "yes"],
    ["How do I track my order?", "Use the tracking link in your shipping confirmation email.", "👍"],
    ["How do I cancel a subscription?", "Go to your account settings and choose cancel.", "good"],
    ["How do I cancel a subscription?", "Go to your account settings and choose cancel.", "bad"],
    ["How do I stop pasta from sticking?", "Stir it during the first couple of minutes.", "true"],
    ["How do I stop pasta from sticking?", "Google it.", "no"],
]


def build_all() -> dict[Path, str]:
    content = parse_content(CONTENT_FILE.read_text(encoding="utf-8"))
    rng = random.Random(SEED)
    train = build_rows(content, "train", rng)
    heldout = build_rows(content, "heldout", rng)
    check(train, heldout)

    files = {
        DATA_DIR / "demo_pairs_train.csv": to_csv(train, PAIRED_HEADER),
        DATA_DIR / "demo_pairs_heldout.csv": to_csv(heldout, PAIRED_HEADER),
        DATA_DIR / "demo_unpaired_train.csv": to_csv(to_unpaired(train), UNPAIRED_HEADER),
        DATA_DIR / "demo_unpaired_heldout.csv": to_csv(to_unpaired(heldout), UNPAIRED_HEADER),
    }

    # Examples: 20 pairs (one per prompt, first variant) and 20 unpaired rows with mixed label spellings.
    seen: set[str] = set()
    example_pairs = []
    for row in train:
        if row["prompt"] not in seen and len(example_pairs) < 20:
            seen.add(row["prompt"])
            example_pairs.append(row)
    files[DATA_DIR / "examples" / "paired_example.csv"] = to_csv(example_pairs, ("prompt", "chosen", "rejected"))
    unpaired = to_unpaired(example_pairs[:10])
    t = f = 0
    for row in unpaired:
        if row["label"] == "true":
            row["label"], t = TRUE_SPELLINGS[t % len(TRUE_SPELLINGS)], t + 1
        else:
            row["label"], f = FALSE_SPELLINGS[f % len(FALSE_SPELLINGS)], f + 1
    files[DATA_DIR / "examples" / "unpaired_example.csv"] = to_csv(unpaired, ("prompt", "completion", "label"))
    mistakes = {"mistakes_example.csv": MISTAKES_PAIRED, "mistakes_unpaired_example.csv": MISTAKES_UNPAIRED}
    for name, table in mistakes.items():
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerows(table)
        files[DATA_DIR / "examples" / name] = buf.getvalue()
    return files


def check(train: list[dict[str, str]], heldout: list[dict[str, str]]) -> None:
    """Invariants the playground relies on; a failure here means the content file needs fixing."""
    assert len(train) >= 300 and len(heldout) >= 50, (len(train), len(heldout))
    overlap = {r["prompt"] for r in train} & {r["prompt"] for r in heldout}
    assert not overlap, f"prompts in both splits: {overlap}"
    for row in train + heldout:
        assert row["chosen"] != row["rejected"], row
        for key in ("prompt", "chosen", "rejected"):
            text = row[key]
            assert text and text == text.strip(), (key, row)
            assert not text.startswith(FORMULA_START), f"cell starts like a spreadsheet formula: {text!r}"
            assert not re.search(r"\{(topic|Topic|answer|pro)\}", text), f"unfilled placeholder: {text!r}"
    keys = [(r["prompt"], r["chosen"], r["rejected"]) for r in train + heldout]
    assert len(keys) == len(set(keys)), "duplicate pairs"
    unpaired = [(r["prompt"], r["completion"]) for r in to_unpaired(train + heldout)]
    assert len(unpaired) == len(set(unpaired)), "duplicate unpaired rows"


def stats(files: dict[Path, str]) -> str:
    lines = []
    for split in ("train", "heldout"):
        rows = list(csv.DictReader(io.StringIO(files[DATA_DIR / f"demo_pairs_{split}.csv"])))
        prompts = {r["prompt"] for r in rows}
        by_cat = Counter(r["category"] for r in rows)
        by_style = Counter(r["rejected_style"] for r in rows)
        lines.append(f"{split}: {len(rows)} pairs, {len(prompts)} prompts")
        lines.append("  by category: " + ", ".join(f"{c} {by_cat[c]}" for c in CATEGORIES))
        lines.append("  rejected style: " + ", ".join(f"{s} {n}" for s, n in sorted(by_style.items())))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only compare a fresh build with the committed files")
    args = parser.parse_args(argv)
    files = build_all()
    if args.check:
        stale = [p for p, text in files.items() if not p.exists() or p.read_text(encoding="utf-8") != text]
        for path in stale:
            print(f"out of date: {path.relative_to(DATA_DIR.parent)}")
        return 1 if stale else 0
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8", newline="")
    print(stats(files))
    return 0


if __name__ == "__main__":
    sys.exit(main())
