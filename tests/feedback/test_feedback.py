"""Tests for playground.feedback: reading, validation, conversions, safe CSV export, the CLI and the demo data."""

from __future__ import annotations

import codecs
import hashlib
import importlib.util
import json
import subprocess
import sys
import time
from dataclasses import replace

import pandas as pd
import pytest
from bad_file_table import BAD, BAD_FILES, DAMAGED_FILES

from playground.cli.feedback_check import main  # noqa: E402
from playground.common.files import sha256_bytes, sha256_file  # noqa: E402
from playground.config import FEEDBACK, REPO_ROOT
from playground.feedback import (  # noqa: E402
    ConversionStats,
    FeedbackReport,
    Issue,
    demo_file,
    neutralise_formula,
    paired_to_unpaired,
    parse_label,
    read_feedback,
    to_safe_csv,
    unpaired_to_paired,
    votes_to_csv,
)
from playground.feedback.schema import ROW_CONVENTION  # noqa: E402

DATA = REPO_ROOT / "data"
EXAMPLES = DATA / "examples"


def read(content: str | bytes, name: str = "upload.csv", **kw) -> FeedbackReport:
    raw = content.encode("utf-8") if isinstance(content, str) else content
    return read_feedback(raw, filename=name, **kw)


def codes(report: FeedbackReport) -> set[str]:
    return {i.code for i in report.issues}


# --------------------------------------------------------------------------------------------------------------------
# Good files

PAIRED_CSV = "prompt,chosen,rejected\nHow do I sort a list?,Use sorted(items).,No idea.\nHi?,Hello!,Go away.\n"


def test_paired_csv():
    r = read(PAIRED_CSV)
    assert r.trainable and not r.issues
    assert (r.format, r.file_type, r.delimiter, r.encoding) == ("paired", "csv", ",", "utf-8")
    assert (r.rows_total, r.rows_usable) == (2, 2)
    assert list(r.data.columns) == ["prompt", "chosen", "rejected", "row"]
    assert r.data.iloc[0].to_dict() == {
        "prompt": "How do I sort a list?",
        "chosen": "Use sorted(items).",
        "rejected": "No idea.",
        "row": 2,
    }
    assert r.data["row"].tolist() == [2, 3]


@pytest.mark.parametrize(
    ("delimiter", "name"),
    [("\t", "upload.tsv"), ("\t", "upload.txt"), (";", "upload.csv"), ("|", "upload.csv"), (";", "noext")],
)
def test_delimiters(delimiter, name):
    text = PAIRED_CSV.replace(",", delimiter).replace("sorted(items)", "sorted(items, key=len)")
    # a comma inside a cell of a non-comma file must not confuse detection
    r = read(text.replace("key=len", "key=len, reverse=True") if delimiter != "," else text, name)
    assert r.trainable and not r.errors, r.summary()
    assert r.delimiter == delimiter
    assert r.data["chosen"][0].startswith("Use sorted(items, key=len")


def test_unpaired_jsonl_with_json_labels():
    lines = [
        {"prompt": "Hi?", "completion": "Hello!", "label": True},
        {"prompt": "Hi?", "completion": "Go away.", "label": False},
        {"prompt": "Sort?", "completion": "Use sorted().", "label": 1},
        {"prompt": "Sort?", "completion": "No.", "label": "👎"},
    ]
    r = read("\n".join(json.dumps(x, ensure_ascii=False) for x in lines) + "\n\n", "votes.jsonl")
    assert r.trainable and not r.issues, r.summary()
    assert (r.format, r.file_type, r.delimiter, r.row_unit) == ("unpaired", "jsonl", None, "line")
    assert r.data["label"].tolist() == [True, False, True, False]
    assert r.data["label"].dtype == bool


def test_jsonl_detected_by_content_and_trl_conversational_format():
    row = {
        "prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi?"}],
        "chosen": [{"role": "assistant", "content": "Hello!"}],
        "rejected": [{"role": "assistant", "content": "Go away."}],
    }
    r = read(json.dumps(row), name="upload")
    assert r.trainable and not r.issues, r.summary()
    assert r.data["prompt"][0] == row["prompt"]
    assert (r.data["chosen"][0], r.data["rejected"][0]) == ("Hello!", "Go away.")


def test_json_array():
    rows = [{"prompt": "Hi?", "chosen": "Hello!", "rejected": "Go away.", "reference": "Hello!"}]
    r = read(json.dumps(rows), "pairs.json")
    assert r.trainable and r.file_type == "json" and r.row_unit == "record"
    assert r.data["reference"][0] == "Hello!"
    assert r.data["row"][0] == 1


def test_bom_is_removed_with_a_warning():
    r = read(codecs.BOM_UTF8 + PAIRED_CSV.encode())
    assert r.trainable and r.encoding == "utf-8-sig"
    assert codes(r) == {"bom"} and "byte order mark" in r.warnings[0].message
    assert list(r.data.columns)[0] == "prompt"


def test_cp1252_bytes_are_decoded_with_a_warning():
    r = read("prompt,chosen,rejected\nCafé?,Un café – s’il vous plaît.,Non.\n".encode("cp1252"))
    assert r.trainable and r.encoding == "cp1252"
    assert codes(r) == {"encoding"} and "not valid UTF-8" in str(r.warnings[0]) and "line 2" in str(r.warnings[0])
    assert r.data["chosen"][0] == "Un café – s’il vous plaît."


def test_latin1_fallback_for_bytes_cp1252_cannot_decode():
    r = read(b"prompt,chosen,rejected\nA\x81?,Yes.,No.\n")
    assert r.trainable and r.encoding == "latin-1"


def test_utf16_with_bom():
    r = read(PAIRED_CSV.replace(",", "\t").encode("utf-16"), "export.txt")
    assert r.trainable and r.encoding == "utf-16" and r.delimiter == "\t"
    assert codes(r) == {"encoding"}


def test_crlf_classic_mac_line_endings_and_blank_trailing_rows():
    for text in (PAIRED_CSV.replace("\n", "\r\n") + ",,\r\n\r\n", PAIRED_CSV.replace("\n", "\r")):
        r = read(text)
        assert r.trainable and not r.issues, r.summary()
        assert (r.rows_total, r.rows_usable) == (2, 2)
        assert r.data["rejected"].tolist() == ["No idea.", "Go away."]


def test_quoted_multiline_cell_keeps_spreadsheet_row_numbers():
    text = 'prompt,chosen,rejected\n"Line one\nline two",Yes.,No.\nHi?,Hello!,Hello!\n'
    r = read(text)
    assert r.data["prompt"][0] == "Line one\nline two"
    assert not r.errors and r.trainable and r.dropped_rows == [3]
    assert [str(i) for i in r.warnings] == [
        "Row 3, column 'rejected': The chosen and rejected texts are identical, so the pair teaches nothing; the "
        "row is dropped. Change one of them or delete the row."
    ]


def test_headers_are_case_and_space_insensitive_and_optional_columns_kept():
    text = " Prompt ,CHOSEN,Rejected,System,reference,category\nHi?,Hello!,Go away.,Be kind.,Hello!,chat\n"
    r = read(text)
    assert r.trainable and not r.issues, r.summary()
    assert list(r.data.columns) == ["prompt", "chosen", "rejected", "system", "reference", "category", "row"]
    assert r.data.iloc[0]["system"] == "Be kind."


def test_json_message_prompt_in_a_csv_cell():
    msgs = [{"role": "user", "content": "Hi, can you help?"}]
    df = pd.DataFrame([{"prompt": json.dumps(msgs), "chosen": "Sure!", "rejected": "No."}])
    r = read(df.to_csv(index=False))
    assert r.trainable and not r.issues
    assert r.data["prompt"][0] == msgs
    # a plain-text prompt that merely starts with a bracket stays text
    r = read("prompt,chosen,rejected\n[Draft] shorten this,Done.,No.\n")
    assert r.data["prompt"][0] == "[Draft] shorten this"


TRUE_SPELLINGS = ["true", "TRUE", " True ", "1", "yes", "Y", "good", "up", "Up", "thumbs up", "thumbs_up", "👍",
                  "👍️", "👍🏽", "👍🏿️"]  # fmt: skip
FALSE_SPELLINGS = ["false", "False", "0", "no", "N", "bad", "down", "DOWN", "thumbs down", "👎", "👎️", "👎🏻"]


@pytest.mark.parametrize("spelling", TRUE_SPELLINGS + FALSE_SPELLINGS)
def test_each_label_spelling(spelling):
    expected = spelling in TRUE_SPELLINGS
    assert parse_label(spelling) is expected
    other = "no" if expected else "yes"
    r = read(f"prompt,completion,label\nHi?,Hello!,{spelling}\nHi?,Go away.,{other}\n")
    assert r.trainable and not r.errors, r.summary()
    assert r.data["label"].tolist() == [expected, not expected]


@pytest.mark.parametrize("value", ["maybe", "2", "", "👌", "-1", None, 0.5, [1]])
def test_unrecognised_labels(value):
    assert parse_label(value) is None


# --------------------------------------------------------------------------------------------------------------------
# Bad files: every mistake has a small file in tests/bad_files and an expected message (tests/bad_file_table.py).



def test_every_bad_file_is_in_the_table():
    assert sorted(p.name for p in BAD.iterdir() if p.suffix != ".md") == sorted(BAD_FILES)


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_bad_file(name):
    severity, code, substring, trainable = BAD_FILES[name]
    r = read_feedback(BAD / name)
    matching = [i for i in r.issues if i.code == code and i.severity == severity]
    assert matching, r.summary()
    assert any(substring in str(i) for i in matching), [str(i) for i in matching]
    assert r.trainable is trainable, r.summary()
    if not trainable and r.file_errors:
        assert r.data.empty
    # the words and the verdict agree: every error blocks, and the Result line says what `trainable` says
    assert r.trainable is (not r.errors), r.summary()
    result = next(line for line in r.summary().splitlines() if line.startswith("Result: "))
    assert result.startswith("Result: can be trained on") is trainable, result
    if severity == "warning" and all(i.row is not None for i in matching) and code != "formula":
        assert {i.row for i in matching} <= set(r.dropped_rows), r.summary()  # a row warning here drops its row
    # the same bytes uploaded without a path give the same verdict
    again = read_feedback((BAD / name).read_bytes(), filename=name)
    assert [str(i) for i in again.issues] == [str(i) for i in r.issues]


@pytest.mark.parametrize("name", sorted(DAMAGED_FILES))
def test_a_damaged_file_blocks_until_the_intact_rows_are_chosen(name):
    r = read_feedback(BAD / name)
    assert not r.trainable and r.damaged and r.intact_rows_available, r.summary()
    assert f"choose to train on the {DAMAGED_FILES[name]} intact row" in r.verdict()
    assert "looks cut off or corrupt" in r.summary()
    chosen = read_feedback(BAD / name, intact_rows=True)
    assert chosen.trainable and not chosen.errors, chosen.summary()
    assert chosen.rows_usable == len(chosen.data) == DAMAGED_FILES[name]
    assert "Result: can be trained on the " in chosen.summary() and "intact, as you chose" in chosen.summary()
    # a file with no damage is not changed by the choice
    assert read_feedback(BAD / "duplicate_rows.csv", intact_rows=True).summary() == read_feedback(
        BAD / "duplicate_rows.csv").summary()


def test_a_few_nul_bytes_inside_text_damage_their_rows_only():
    text = "prompt,chosen,rejected\nHi?,Hello!,Go away.\nSort?,Use sor\x00ted().,No.\nCopy?,Use copy().,No.\n"
    r = read(text)
    assert [(i.code, i.row) for i in r.errors] == [("damaged_nul", 3)], r.summary()
    assert read(text, intact_rows=True).data["row"].tolist() == [2, 4]


def test_misspelled_column_still_checks_the_rows():
    r = read_feedback(EXAMPLES / "mistakes_example.csv")
    assert not r.trainable and r.format == "paired"
    assert {"missing_column", "empty_cell", "duplicate_row", "same_text", "formula", "cell_count"} <= codes(r)
    assert (r.rows_total, r.rows_usable) == (7, 3)
    r = read_feedback(EXAMPLES / "mistakes_unpaired_example.csv")
    assert not r.trainable and r.format == "unpaired"
    assert {"missing_column", "bad_label", "empty_cell", "duplicate_row", "contradiction"} <= codes(r)


def test_row_dropped_for_errors_but_rest_usable():
    r = read_feedback(BAD / "empty_cell.csv")
    assert (r.rows_total, r.rows_usable) == (2, 1)
    assert r.data["row"].tolist() == [3]


def test_size_cap_is_checked_before_reading(tmp_path):
    big = tmp_path / "big.csv"
    with open(big, "wb") as fh:  # sparse: 25 MiB of NUL bytes, which would be a binary-file error if read
        fh.truncate(25 * 2**20)
    start = time.perf_counter()
    r = read_feedback(big)
    assert time.perf_counter() - start < 0.5
    assert codes(r) == {"too_big"} and "25.0 MiB, over the 20.0 MiB limit" in r.errors[0].message
    assert r.sha256 is None  # never read
    small_limit = replace(FEEDBACK, max_bytes=100)
    assert codes(read(PAIRED_CSV * 3, limits=small_limit)) == {"too_big"}


def test_a_million_rows_are_refused_quickly(tmp_path):
    path = tmp_path / "million.csv"
    path.write_text("prompt,chosen,rejected\n" + "Hi?,Hello!,Go away.\n" * 1_000_000)  # 20 MB: under the byte cap
    assert path.stat().st_size < FEEDBACK.max_bytes
    start = time.perf_counter()
    r = read_feedback(path)
    elapsed = time.perf_counter() - start
    assert codes(r) == {"too_many_rows"} and "more than 20,000 data rows" in r.errors[0].message
    assert not r.trainable and r.data.empty
    assert elapsed < 2.0, elapsed


def test_row_cap_jsonl_and_custom_limit():
    limits = replace(FEEDBACK, max_rows=3)
    lines = "\n".join(json.dumps({"prompt": f"p{i}", "chosen": "a", "rejected": "b"}) for i in range(4))
    assert codes(read(lines, "x.jsonl", limits=limits)) == {"too_many_rows"}
    assert read(lines, "x.jsonl", limits=replace(FEEDBACK, max_rows=4)).trainable


def test_100k_character_cell_is_truncated_with_a_warning():
    text = "prompt,chosen,rejected\nHi?," + "a" * 100_000 + ",No.\n"
    r = read(text)
    assert r.trainable
    (warning,) = r.warnings
    assert warning.code == "truncated" and (warning.row, warning.column) == (2, "chosen")
    assert "100,000 characters long, over the limit of 20,000" in warning.message
    assert len(r.data["chosen"][0]) == FEEDBACK.max_cell_chars
    r = read(text, max_chars=50)
    assert len(r.data["chosen"][0]) == 50


def test_token_limit_truncates_with_the_callers_tokenizer():
    def count_words(s: str) -> int:
        return len(s.split())

    text = "prompt,chosen,rejected\nHi?,one two three four five six seven,No.\n"
    r = read(text, max_tokens=4, count_tokens=count_words)
    assert r.data["chosen"][0] == "one two three four"
    assert "7 tokens long, more than the model's limit of 4" in r.warnings[0].message
    msgs = json.dumps([{"role": "user", "content": "a b c d e f"}])
    r = read(pd.DataFrame([{"prompt": msgs, "chosen": "x", "rejected": "y"}]).to_csv(index=False), max_tokens=2,
             count_tokens=count_words)  # fmt: skip
    assert r.data["prompt"][0] == [{"role": "user", "content": "a b"}]


def test_missing_path_and_folder_and_wrong_type(tmp_path):
    r = read_feedback(tmp_path / "nope.csv")
    assert codes(r) == {"not_found"} and "File not found" in r.summary()
    assert codes(read_feedback(tmp_path)) == {"not_found"}
    with pytest.raises(TypeError):
        read_feedback(12345)  # type: ignore[arg-type]


def test_issue_str_and_summary():
    issue = Issue("error", 5, "label", "'maybe' is not a recognised label.")
    assert str(issue) == "Row 5, column 'label': 'maybe' is not a recognised label."
    assert str(Issue("warning", None, "notes", "Ignored.")) == "Column 'notes': Ignored."
    assert str(Issue("error", 3, None, "Bad.", unit="line")) == "Line 3: Bad."
    assert str(Issue("error", None, None, "The file is empty.")) == "The file is empty."
    summary = read_feedback(BAD / "bad_label.csv").summary()
    assert "Format: unpaired (prompt, completion, label)" in summary
    assert "Rows: 3 data rows, 2 usable, 1 dropped (row 3)" in summary
    assert "Result: can be trained on (2 of 3 data rows usable; 0 errors, 1 warning)." in summary
    assert ROW_CONVENTION in summary


def test_summary_caps_repeated_issues():
    text = "prompt,chosen,rejected\n" + "".join(f"p{i},,r\n" for i in range(12)) + "ok,yes,no\n"
    summary = read(text).summary(max_per_kind=5)
    assert summary.count("The cell is empty") == 5
    assert "… and 7 more of the same kind (empty_cell)" in summary


# --------------------------------------------------------------------------------------------------------------------
# Conversions


def test_paired_to_unpaired():
    pairs = pd.DataFrame(
        {
            "prompt": ["Hi?", "Hi?", "Sort?"],
            "chosen": ["Hello!", "Hello!", "Use sorted()."],
            "rejected": ["Go away.", "Whatever.", "No."],
            "reference": ["Hello!", "Hello!", ""],
        }
    )
    expected = pd.DataFrame(
        {
            "prompt": ["Hi?", "Hi?", "Hi?", "Sort?", "Sort?"],
            "completion": ["Hello!", "Go away.", "Whatever.", "Use sorted().", "No."],
            "label": [True, False, False, True, False],
            "reference": ["Hello!", "Hello!", "Hello!", "", ""],
        }
    )
    pd.testing.assert_frame_equal(paired_to_unpaired(pairs), expected)
    assert len(paired_to_unpaired(pairs, drop_duplicates=False)) == 6


def test_unpaired_to_paired():
    msgs = [{"role": "user", "content": "Hi?"}]
    rows = pd.DataFrame(
        {
            "prompt": ["A", "A", "B", "A", "C", "C", "D", "D", "E", "E"],
            "completion": ["a+", "a-", "b+", "a2+", "c-", "c2-", "d-", "d+", "e+", "e-"],
            "label": [True, False, True, "👍", False, "no", False, "yes", 1, 0],
        }
    )
    rows["prompt"] = rows["prompt"].astype(object)
    rows.at[8, "prompt"] = msgs
    rows.at[9, "prompt"] = list(msgs)
    pairs, stats = unpaired_to_paired(rows)
    expected = pd.DataFrame({"prompt": ["A", "D", msgs], "chosen": ["a+", "d+", "e+"], "rejected": ["a-", "d-", "e-"]})
    pd.testing.assert_frame_equal(pairs, expected, check_dtype=False)
    assert stats == ConversionStats(
        pairs=3,
        prompts=5,
        prompts_paired=3,
        prompts_only_desirable=1,
        prompts_only_undesirable=1,
        unused_desirable=2,
        unused_undesirable=2,
    )
    assert str(stats).startswith("Made 3 pairs from 3 of 5 prompts.")


def test_unpaired_to_paired_keeps_system_prompts_apart_and_carries_reference():
    rows = pd.DataFrame(
        {
            "prompt": ["Hi?"] * 4,
            "completion": ["Hello!", "Go away.", "Ahoy!", "Meh."],
            "label": [True, False, True, False],
            "system": ["", "", "Talk like a pirate.", "Talk like a pirate."],
            "reference": ["", "Hello there!", "", ""],
        }
    )
    pairs, stats = unpaired_to_paired(rows)
    expected = pd.DataFrame(
        {
            "prompt": ["Hi?", "Hi?"],
            "chosen": ["Hello!", "Ahoy!"],
            "rejected": ["Go away.", "Meh."],
            "system": ["", "Talk like a pirate."],
            "reference": ["Hello there!", ""],
        }
    )
    pd.testing.assert_frame_equal(pairs, expected, check_dtype=False)
    assert (stats.pairs, stats.prompts) == (2, 2)


def test_conversions_round_trip_and_reject_bad_labels():
    pairs = read_feedback(EXAMPLES / "paired_example.csv").data[["prompt", "chosen", "rejected"]]
    back, stats = unpaired_to_paired(paired_to_unpaired(pairs))
    pd.testing.assert_frame_equal(back, pairs.reset_index(drop=True), check_dtype=False)
    assert stats.unused_desirable == stats.unused_undesirable == 0
    with pytest.raises(ValueError, match="unrecognised label 'maybe'"):
        unpaired_to_paired(pd.DataFrame({"prompt": ["a"], "completion": ["b"], "label": ["maybe"]}))


# --------------------------------------------------------------------------------------------------------------------
# Safe CSV export


@pytest.mark.parametrize("text", ["=1+2", "+1", "-2+3", "@SUM(A1)", "\tx", "\rx", '=HYPERLINK("http://x")'])
def test_neutralise_formula(text):
    assert neutralise_formula(text) == "'" + text


@pytest.mark.parametrize("value", ["Hello", " =not first", "", "1+1", "'=already", 5, -2.5, None, True])
def test_neutralise_leaves_safe_values(value):
    assert neutralise_formula(value) == value


def test_to_safe_csv():
    df = pd.DataFrame(
        {
            "=bad header": ["=cmd|' /C calc'!A0", "plain, with comma", None],
            "loss": [-0.5, 1.0, float("nan")],
            "label": [True, False, True],
            "prompt": [[{"role": "user", "content": "-hi"}], "@me", "\ttab"],
        }
    )
    assert to_safe_csv(df) == (
        "'=bad header,loss,label,prompt\n"
        """'=cmd|' /C calc'!A0,-0.5,true,"[{""role"": ""user"", ""content"": ""-hi""}]"\n"""
        '"plain, with comma",1.0,false,\'@me\n'
        ",,true,'\ttab\n"
    )


def test_votes_to_csv_paired_round_trips_through_the_reader():
    votes = [
        {"prompt": "Hi?", "chosen": "=Hello!", "rejected": "Go away.", "timestamp": 123, "system": ""},
        {"prompt": [{"role": "user", "content": "Sort?"}], "chosen": "Use sorted().", "rejected": "-No."},
    ]
    text = votes_to_csv(votes)
    assert text.splitlines()[0] == "prompt,chosen,rejected"  # extra keys and empty optional columns left out
    assert "'=Hello!" in text and "'-No." in text
    r = read(text)
    assert r.trainable and not r.errors, r.summary()
    assert r.data["chosen"].tolist() == ["=Hello!", "Use sorted()."]  # the neutralising quote is undone on reading
    assert r.data["rejected"].tolist() == ["Go away.", "-No."]
    assert r.data["prompt"][1] == [{"role": "user", "content": "Sort?"}]


def test_votes_to_csv_unpaired():
    votes = [
        {"prompt": "Hi?", "completion": "Hello!", "label": "👍", "reference": "Hello there!"},
        {"prompt": "Hi?", "completion": "Go away.", "label": False},
    ]
    text = votes_to_csv(votes)
    assert text == "prompt,completion,label,reference\nHi?,Hello!,true,Hello there!\nHi?,Go away.,false,\n"
    r = read(text)
    assert r.trainable and not r.issues and r.data["label"].tolist() == [True, False]
    assert votes_to_csv([], fmt="unpaired") == "prompt,completion,label\n"
    with pytest.raises(ValueError, match="has no rejected"):
        votes_to_csv([{"prompt": "a", "chosen": "b"}])
    with pytest.raises(ValueError, match="unrecognised label"):
        votes_to_csv([{"prompt": "a", "completion": "b", "label": "meh"}])


def test_hash_file(tmp_path):
    path = tmp_path / "f.csv"
    path.write_bytes(PAIRED_CSV.encode())
    assert sha256_file(path) == sha256_bytes(PAIRED_CSV.encode()) == hashlib.sha256(PAIRED_CSV.encode()).hexdigest()
    assert read_feedback(path).sha256 == sha256_file(path)


# --------------------------------------------------------------------------------------------------------------------
# Command line


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "playground.feedback", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=60,
    )


CLI_CASES = [
    (["data/examples/paired_example.csv"], 0, "Result: can be trained on"),
    (["tests/bad_files/duplicate_rows.csv"], 0, "repeats row 2"),
    (["data/examples/mistakes_example.csv"], 1, "Missing column 'chosen'"),
    (["tests/bad_files/binary_xlsx.csv"], 1, "ZIP archive"),
    (["tests/bad_files/empty.csv"], 1, "The file is empty"),
    (["no/such/file.csv"], 1, "File not found"),
    (["--max-rows", "1", "data/examples/paired_example.csv"], 1, "more than 1 data rows"),
    ([], 1, "usage"),
    (["--help"], 0, "usage"),
]


@pytest.mark.parametrize(("args", "rc", "expected"), CLI_CASES)
def test_cli_exit_codes(args, rc, expected, capsys, monkeypatch):
    monkeypatch.chdir(REPO_ROOT)
    assert main(args) == rc
    out = capsys.readouterr()
    assert expected in out.out + out.err
    assert "Traceback" not in out.out + out.err


@pytest.mark.parametrize(("args", "rc", "expected"), [CLI_CASES[0], CLI_CASES[5]])
def test_cli_as_a_subprocess(args, rc, expected):
    proc = run_cli(*args)
    out = proc.stdout + proc.stderr
    assert proc.returncode == rc, out
    assert expected in out
    assert "Traceback" not in out


# --------------------------------------------------------------------------------------------------------------------
# The shipped demo data


def test_demo_data_validates_cleanly():
    prompts = {}
    for kind, split, minimum in [("paired", "train", 300), ("paired", "heldout", 50),
                                 ("unpaired", "train", 600), ("unpaired", "heldout", 100)]:  # fmt: skip
        r = read_feedback(demo_file(kind, split))
        assert r.trainable and not r.issues, r.summary()
        assert r.format == kind and r.rows_usable == r.rows_total >= minimum
        assert {"reference", "category"} <= set(r.data.columns)
        prompts[kind, split] = set(r.data["prompt"])
        if kind == "unpaired":
            assert r.data["label"].sum() == (~r.data["label"]).sum()  # balanced
    for kind in ("paired", "unpaired"):
        assert not prompts[kind, "train"] & prompts[kind, "heldout"]
        assert prompts[kind, "train"] and prompts[kind, "heldout"]
    assert len(prompts["paired", "train"]) >= 175


def test_demo_data_is_varied_and_styles_are_mixed():
    df = read_feedback(demo_file("paired", "train")).data
    assert set(df["category"]) == {"cooking", "travel", "health", "writing", "coding", "customer_service", "decline"}
    assert set(df["rejected_style"]) == {"rambling", "evasive", "preachy", "curt", "complies", "lectures"}
    assert df["rejected_style"].value_counts().max() < len(df) / 3
    assert df["chosen"].nunique() == len(df)  # every chosen text is distinct (closers on the second variant)
    words = df["chosen"].str.split().str.len()
    assert words.max() <= 60 and words.median() < 30  # concise


def test_demo_examples():
    r = read_feedback(EXAMPLES / "paired_example.csv")
    assert r.trainable and not r.issues and r.rows_usable == 20
    r = read_feedback(EXAMPLES / "unpaired_example.csv")
    assert r.trainable and not r.issues and r.rows_usable == 20
    raw = pd.read_csv(EXAMPLES / "unpaired_example.csv", dtype=str, keep_default_na=False)
    assert raw["label"].nunique() >= 15  # mixed spellings


def test_demo_data_is_up_to_date_with_its_generator():
    spec = importlib.util.spec_from_file_location("build_demo_data", DATA / "build_demo_data.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    for path, text in module.build_all().items():
        assert path.read_text(encoding="utf-8") == text, f"{path} is stale: run python data/build_demo_data.py"
