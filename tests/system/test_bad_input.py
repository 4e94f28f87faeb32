"""Bad input never crashes the app or loses work: each case gets its own clear message, and the app keeps serving.

Driven through the UI handlers (what the page calls) and the served API (gradio_client and a raw upload), on the
tiny engine: feedback files (the whole tests/bad_files table through the Fine-tune upload path), uploads over the
size cap (refused by Gradio while streaming, before any parsing), empty and over-long prompts, absurd decoding
settings, out-of-range hyperparameters, unsafe adapter names, adapter folders with corrupt files or a pickle, and
paths that try to leave the data directory.
"""

from __future__ import annotations

import json
import pickle
import re
from pathlib import Path

import gradio as gr
import httpx
import pytest
from bad_file_table import BAD, BAD_FILES, DAMAGED_FILES
from gradio_client import Client, handle_file
from tiny_server import build, serving, tiny_engine

from playground import config
from playground.analysis.datasets import load_heldout  # noqa: E402
from playground.engine.adapters import AdapterError, AdapterInfo  # noqa: E402
from playground.feedback import demo_file, read_heldout_pairs  # noqa: E402
from playground.serving.services import Services  # noqa: E402
from playground.serving.settings import ServiceInputError  # noqa: E402
from playground.ui import api, compare_tab, finetune_tab
from playground.ui.page import build_app, launch_options

SESSION = "d" * 32
DPO = "DPO (pairs)"


@pytest.fixture(scope="module")
def engine(tokenizer, tmp_path_factory):
    return tiny_engine(tokenizer, tmp_path_factory.mktemp("shipped") / "adapters")


@pytest.fixture()
def services(engine, tmp_path):
    return Services.for_engine(engine, tmp_path / "data")


@pytest.fixture(scope="module")
def served(engine, tmp_path_factory):
    services, demo = build(tmp_path_factory.mktemp("served") / "data", engine=engine)
    with serving(demo) as url:
        yield services, Client(url, verbose=False)


def _message(excinfo) -> str:
    return getattr(excinfo.value, "message", None) or str(excinfo.value)


def _still_serving(client) -> None:
    assert client.predict(api_name="/variants")[:1] == ["base"]
    out = client.predict(prompt="Hi", variants=["base"], settings={"max_new_tokens": 2}, api_name="/generate")
    assert set(out["variants"]) == {"base"}


# --------------------------------------------------------------------------------------------------------------------
# Feedback files and uploads


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_every_bad_file_gets_the_same_words_and_verdict_on_every_path(served, name, capsys):
    """One reader, one verdict: the Fine-tune upload, the Inspect upload, the CLI and the API (/validate and
    /train_start through gradio_client) say the same words about each file of the corpus, and the Start button,
    the CLI's exit code and the API's ``trainable`` all follow the report's verdict. Nothing reaches the adapter,
    run or vote stores of a file that cannot be trained on."""
    from playground.cli.feedback_check import main as check_file
    from playground.feedback import read_feedback
    from playground.ui import inspect_tab

    services, client = served
    _severity, _code, substring, trainable = BAD_FILES[name]
    expected = read_feedback(BAD / name)
    summary = expected.summary()
    assert substring in summary and expected.trainable is trainable
    adapters_before = sorted(p.name for p in services.queue.adapters_root.iterdir())
    runs_before = sorted(p.name for p in services.queue.runs_root.iterdir())
    votes_before = services.votes.count(SESSION)

    # the Fine-tune upload: the report shown is the summary, Start follows the verdict, the box only for damage
    state, report, _preview, start, _upload, _example, intact = finetune_tab.load_data(
        services, finetune_tab.SOURCE_UPLOAD, str(BAD / name), None, SESSION, DPO)
    assert summary.replace("```", "\'\'\'") in report and "Traceback" not in report
    assert report.startswith("**✅ Ready to train" if trainable else "**⛔ ")
    assert start["interactive"] is trainable and state["trainable"] is trainable
    assert intact["visible"] is expected.damaged

    # the Inspect upload: usable exactly when trainable, refused with the same report otherwise
    if trainable:
        frame, label = inspect_tab.load_dataset(services, inspect_tab.DATA_UPLOAD, str(BAD / name), SESSION)
        assert len(frame) == expected.rows_usable and f"{expected.rows_usable} rows" in label
    else:
        with pytest.raises(gr.Error) as refused:
            inspect_tab.load_dataset(services, inspect_tab.DATA_UPLOAD, str(BAD / name), SESSION)
        assert summary in _message(refused)

    # the CLI: the same summary on stdout, exit code 0 exactly when trainable
    capsys.readouterr()
    assert check_file([str(BAD / name)]) == (0 if trainable else 1)
    assert capsys.readouterr().out.strip() == summary

    # the API: the same verdict and summary; /train_start refuses with them when the file cannot be trained on
    got = client.predict(file=handle_file(str(BAD / name)), api_name="/validate")
    assert got["trainable"] is trainable and got["verdict"] == expected.verdict()
    assert got["summary"] == summary
    assert got["errors"] == [str(i) for i in expected.errors] and got["damaged"] is expected.damaged
    if not trainable:
        with pytest.raises(Exception) as refused:
            client.predict(file=handle_file(str(BAD / name)), method="dpo", name="from-bad-file",
                           api_name="/train_start")
        assert "The file cannot be trained on" in str(refused.value) and expected.verdict() in str(refused.value)
        assert sorted(p.name for p in services.queue.adapters_root.iterdir()) == adapters_before
        assert sorted(p.name for p in services.queue.runs_root.iterdir()) == runs_before
    assert services.votes.count(SESSION) == votes_before


@pytest.mark.parametrize("name", sorted(DAMAGED_FILES))
def test_a_damaged_file_trains_only_when_its_intact_rows_are_chosen(served, name, capsys):
    """The explicit choice, on every path: the UI's box, the CLI's --intact-rows and the API's intact_rows turn a
    cut-off file's damage into warnings and its intact rows into training data, and say so."""
    from playground.cli.feedback_check import main as check_file

    services, client = served
    state, report, _preview, start, _upload, _example, intact = finetune_tab.load_data(
        services, finetune_tab.SOURCE_UPLOAD, str(BAD / name), None, SESSION, DPO, True)
    assert start["interactive"] is True and state["intact_rows"] is True and intact["value"] is True
    assert f"{DAMAGED_FILES[name]} of " in report and "intact, as you chose" in report
    assert check_file([str(BAD / name), "--intact-rows"]) == 0
    assert "intact, as you chose" in capsys.readouterr().out
    got = client.predict(file=handle_file(str(BAD / name)), intact_rows=True, api_name="/validate")
    assert got["trainable"] is True and got["rows_usable"] == DAMAGED_FILES[name] and not got["errors"]


def test_uploads_are_capped_before_parsing(served, tmp_path):
    _services, client = served
    assert launch_options()["max_file_size"] == config.FEEDBACK.max_bytes
    assert client.config["max_file_size"] == config.FEEDBACK.max_bytes
    big = b"prompt,chosen,rejected\n" + b"x" * config.FEEDBACK.max_bytes
    # A client that ignores the cap: the server stops reading the stream at the limit.
    response = httpx.post(client.upload_url, files={"files": ("big.csv", big, "text/csv")}, timeout=60)
    assert response.status_code == 413
    assert response.text == f"File size exceeded maximum allowed size of {config.FEEDBACK.max_bytes} bytes."
    # gradio_client refuses before sending.
    path = tmp_path / "big.csv"
    path.write_bytes(big)
    with pytest.raises(ValueError, match="exceeds the maximum file size"):
        client.predict(file=handle_file(str(path)), api_name="/validate")
    _still_serving(client)


def test_a_bad_file_through_the_api_is_a_report_not_a_crash(served):
    _services, client = served
    report = client.predict(file=handle_file(str(BAD / "binary_nul.csv")), api_name="/validate")
    assert not report["trainable"] and any("contains NUL bytes" in e for e in report["errors"])
    with pytest.raises(Exception, match="The file cannot be trained on"):
        client.predict(file=handle_file(str(BAD / "empty.csv")), method="dpo", name="from-empty",
                       api_name="/train_start")
    _still_serving(client)


# --------------------------------------------------------------------------------------------------------------------
# Prompts and decoding settings


def _generate(services, prompt="Say hello", mode="greedy", temperature=0.7, top_p=0.9, max_new=4, seed=0):
    return list(compare_tab.generate_answers(services, prompt, "", ["base", "dpo"], mode, temperature, top_p,
                                             max_new, seed))


def test_empty_and_overlong_prompts(services, served):
    for empty in ("", "   \n\t"):
        with pytest.raises(gr.Error) as excinfo:
            _generate(services, prompt=empty)
        assert _message(excinfo) == "Type a prompt or pick an example first."
    with pytest.raises(gr.Error) as excinfo:
        _generate(services, prompt="word " * 1500)
    assert re.fullmatch(r"The prompt is \d{4} tokens; with 4 new tokens it exceeds the model's context of 1024\. "
                        r"Shorten the prompt or ask for fewer tokens\.", _message(excinfo)), _message(excinfo)

    _services, client = served
    with pytest.raises(Exception, match="The prompt is empty: type a question or pick an example."):
        client.predict(prompt="", variants=["base"], api_name="/generate")
    with pytest.raises(Exception, match="exceeds the model's context of 1024"):
        client.predict(prompt="word " * 1500, variants=["base"], settings={"max_new_tokens": 4},
                       api_name="/generate")
    _still_serving(client)
    assert len(_generate(services)[-1][0]["answers"]) == 2  # and the page's handler still generates


ABSURD_SETTINGS = [
    (dict(max_new=100_000), "max new tokens must be between 1 and 512 (got 100000)."),
    (dict(max_new=0), "max new tokens must be between 1 and 512 (got 0)."),
    (dict(max_new=2.5), "max new tokens must be a whole number (got 2.5)."),
    (dict(max_new=None), "Max new tokens and seed need a value."),
    (dict(mode="sampled", temperature=0.0), "temperature must be in (0, 5] when sampling (got 0.0)."),
    (dict(mode="sampled", temperature=float("nan")), "temperature must be in (0, 5] when sampling (got nan)."),
    (dict(mode="sampled", top_p=1.5), "top-p must be in (0, 1] (got 1.5)."),
    (dict(mode="sampled", seed=-1), "seed must be a non-negative integer (got -1)."),
    (dict(mode="creative"), "mode must be 'greedy' or 'sampled' (got 'creative')."),
    (dict(temperature="hot"), "A decoding setting is not a number: could not convert string to float: 'hot'."),
]


@pytest.mark.parametrize(("settings", "message"), ABSURD_SETTINGS)
def test_absurd_decoding_settings_are_refused(services, settings, message):
    with pytest.raises(gr.Error) as excinfo:
        _generate(services, **settings)
    assert _message(excinfo) == message


def test_absurd_decoding_settings_through_the_api(served):
    _services, client = served
    for settings, message in [({"max_new_tokens": 10**6}, "max new tokens must be between 1 and 512"),
                              ({"beams": 4}, "Unknown decoding setting(s) ['beams']"),
                              ({"mode": "sampled", "top_p": 0}, "top-p must be in (0, 1] (got 0.0)")]:
        with pytest.raises(Exception, match=re.escape(message)):
            client.predict(prompt="Hi", variants=["base"], settings=settings, api_name="/generate")
    _still_serving(client)


# --------------------------------------------------------------------------------------------------------------------
# Hyperparameters and adapter names (the Fine-tune tab's Start)


def _example_state(services):
    return finetune_tab.load_data(services, finetune_tab.SOURCE_EXAMPLE, None, "paired_example.csv", SESSION, DPO)[0]


# the test's short names for the Fine-tune form's fields
FORM_KEYS = {"method_label": "method", "lr": "learning_rate", "batch": "batch_size", "max_len": "max_length",
             "lam_d": "desirable_weight", "lam_u": "undesirable_weight", "r": "lora_r", "alpha": "lora_alpha",
             "dropout": "lora_dropout"}


def _start(services, data, name="bad-input-run", **over):
    args = dict(method_label=DPO, beta=0.1, lr=5e-4, steps=2, epochs=1.0, batch=2, max_len=64, lam_d=1.0, lam_u=1.0,
                r=4, alpha=8, dropout=0.0, sft_weight=0.0, early_stop=False, drift_budget=0.0)
    args.update(over)
    form = {FORM_KEYS.get(k, k): v for k, v in args.items()}
    return finetune_tab.start_training(services, SESSION, data, {**form, "name": name, "heldout_share": 0.0})


BAD_HYPERPARAMETERS = [
    (dict(beta=0), "beta must be between 1e-06 and 100 (got 0)."),
    (dict(beta=-1.0), "beta must be between 1e-06 and 100 (got -1)."),
    (dict(lr=0.0), "learning rate must be in (0, 1) (got 0.0)"),
    (dict(lr=-1e-3), "learning rate must be in (0, 1) (got -0.001)"),
    (dict(steps=0, epochs=0.0), "set steps > 0 or epochs > 0: 0 steps trains nothing"),
    (dict(batch=32), "batch size 32 is larger than the data (20 rows)"),
    (dict(steps=2.5), "steps must be a whole number (got 2.5)."),
    (dict(steps=10**6), "steps must be between 0 and 5000 (got 1e+06)."),
    (dict(lr=float("inf")), "learning rate must be a finite number (got inf)."),
    (dict(beta=None), "These fields are empty: beta. Fill them in (defaults are in config.py)."),
    (dict(method_label="KTO (labelled answers)", batch=1),
     "batch size must be >= 2 (got 1); KTO needs 2 samples per batch to estimate its reference point z0"),
]


@pytest.mark.parametrize(("over", "message"), BAD_HYPERPARAMETERS)
def test_out_of_range_hyperparameters_are_refused(services, over, message):
    data = _example_state(services)
    with pytest.raises(gr.Error) as excinfo:
        _start(services, data, **over)
    assert _message(excinfo) == message
    assert services.queue.jobs == {}  # nothing queued, nothing half-started


BAD_NAMES = [
    ("../evil", "The adapter name '../evil' contains a path ('..', '/' or '\\'); use a plain name."),
    ("a/b", "The adapter name 'a/b' contains a path ('..', '/' or '\\'); use a plain name."),
    ("..", "The adapter name '..' contains a path ('..', '/' or '\\'); use a plain name."),
    ("x\x00y", "The adapter name contains control characters; use letters, digits, '-' or '_'."),
    ("tab\there", "The adapter name contains control characters; use letters, digits, '-' or '_'."),
    ("base", "'base' is reserved; choose another name."),
    ("CON", "'CON' is reserved; choose another name."),
    ("__base__", "The adapter name '__base__' may only use letters, digits, '-' and '_' (1-48 characters, starting "
                 "with a letter or digit)."),
    ("default", "'default' is reserved; choose another name."),
    ("-lead", "The adapter name '-lead' may only use letters, digits, '-' and '_' (1-48 characters, starting with a "
              "letter or digit)."),
    ("a" * 49, f"The adapter name '{'a' * 49}' may only use letters, digits, '-' and '_' (1-48 characters, starting "
               "with a letter or digit)."),
    ("  ", "Give the adapter a name (letters, digits, '-' or '_')."),
    ("dpo", "An adapter named 'dpo' already exists; choose another name."),
]


@pytest.mark.parametrize(("name", "message"), BAD_NAMES)
def test_unsafe_adapter_names_are_refused(services, tmp_path, name, message):
    with pytest.raises(gr.Error) as excinfo:
        _start(services, _example_state(services), name=name)
    assert _message(excinfo) == message
    assert services.queue.jobs == {}
    assert not list(tmp_path.rglob("evil")) and list((services.data_dir / "adapters").iterdir()) == []


def test_refusals_through_the_api_then_a_good_run(served):
    services, client = served
    csv_text = "prompt,chosen,rejected\n" + "".join(f"q{i}?,good {i},bad {i}\n" for i in range(4))
    for name, hyper, message in [("../x", {"steps": 1, "batch_size": 1}, "contains a path"),
                                 ("ok-name", {"beta": 0, "steps": 1, "batch_size": 1}, "beta must be between"),
                                 ("ok-name", {"learning_rate": 0, "steps": 1, "batch_size": 1}, "learning rate"),
                                 ("ok-name", {"steps": 1, "batch_size": 8}, "batch size 8 is larger than the data")]:
        with pytest.raises(Exception, match=re.escape(message)):
            client.predict(csv_text=csv_text, method="dpo", name=name, hyperparameters=hyper,
                           api_name="/train_start")
    assert not [job for job in services.queue.jobs.values() if job.name in ("../x", "ok-name")]
    started = client.predict(csv_text=csv_text, method="dpo", name="ok-name",
                             hyperparameters={"steps": 1, "batch_size": 2, "max_length": 64, "lora_r": 4},
                             api_name="/train_start")
    job = services.queue.get(started["job_id"])
    for _ in range(1200):
        if job.finished:
            break
        job.cancel_event.wait(0.1)
    assert job.status == "done", job.error
    _still_serving(client)


# --------------------------------------------------------------------------------------------------------------------
# Adapter folders with corrupt files or a pickle


class _Trap:
    """Unpickling this creates a marker file: proof, if it ever appears, that a pickle was loaded."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _bad_adapters(base, root: Path, marker: Path) -> dict[str, str]:
    from conftest import save_random_adapter

    def fresh(name, seed):
        return save_random_adapter(base, root / name, seed=seed)

    expected = {}
    (fresh("garbage", 3) / "adapter_model.safetensors").write_bytes(b"definitely not safetensors")
    expected["garbage"] = "adapter_model.safetensors is not a readable safetensors file"
    weights = fresh("truncated", 4) / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-64])  # header intact, data cut short
    expected["truncated"] = "not a readable safetensors file (SafetensorError: Error while deserializing header: " \
                            "incomplete metadata, file not fully covered)"
    (fresh("empty-weights", 5) / "adapter_model.safetensors").write_bytes(b"")
    expected["empty-weights"] = "adapter_model.safetensors is not a readable safetensors file"
    (fresh("with-pickle", 6) / "adapter_model.bin").write_bytes(pickle.dumps(_Trap(marker)))
    expected["with-pickle"] = "contains pickled files ['adapter_model.bin']; only safetensors are loaded"
    folder = fresh("pickle-as-safetensors", 7)
    (folder / "adapter_model.safetensors").write_bytes(pickle.dumps(_Trap(marker)))
    expected["pickle-as-safetensors"] = "adapter_model.safetensors is not a readable safetensors file"
    (fresh("bad-config", 8) / "adapter_config.json").write_text("{not json")
    expected["bad-config"] = "adapter_config.json is unreadable"
    (fresh("bad-meta", 9) / "meta.json").write_text("[1,")
    expected["bad-meta"] = "meta.json is unreadable"
    (fresh("no-meta", 10) / "meta.json").unlink()  # a plain PEFT folder (TRL's): attached, not refused
    config_file = fresh("not-lora", 11) / "adapter_config.json"
    config_file.write_text(json.dumps({**json.loads(config_file.read_text()), "peft_type": "PREFIX_TUNING"}))
    expected["not-lora"] = "is a 'PREFIX_TUNING' adapter, not LoRA"
    return expected


def test_corrupt_or_pickled_adapters_are_skipped_with_a_message(tokenizer, tmp_path):
    from conftest import make_tiny_model

    engine = tiny_engine(tokenizer)
    data_dir = tmp_path / "data"
    marker = tmp_path / "unpickled.marker"
    expected = _bad_adapters(make_tiny_model(len(tokenizer), 0), data_dir / "adapters", marker)
    services = Services.for_engine(engine, data_dir)
    assert services.variant_names() == ["base", "no-meta"]
    assert services.engine.adapters["no-meta"].method == "peft"
    for name, fragment in expected.items():
        notes = [m for m in services.messages if f"/{name}" in m or f"'{name}'" in m]
        assert len(notes) == 1 and fragment in notes[0], (name, services.messages)
    assert not marker.exists()  # no pickle was ever loaded
    demo = build_app(services)  # the page builds and lists the notes
    assert demo is not None
    info = AdapterInfo("direct", data_dir / "adapters" / "with-pickle", {}, "user")
    with pytest.raises(AdapterError, match=re.escape("contains pickled files ['adapter_model.bin']")):
        engine.attach(info)
    assert not marker.exists()


# --------------------------------------------------------------------------------------------------------------------
# Paths never leave their folders


def test_user_paths_never_escape(services, tmp_path):
    for bad in ("../../etc", "..", "a/b", "", None, "x" * 7):
        with pytest.raises(ServiceInputError, match="No valid session id"):
            services.exports_folder(bad)
        assert compare_tab.votes_view(services, bad)[1] == "No session yet."
    root = services.exports_folder(SESSION).parent
    assert services.exports_folder(SESSION).resolve().parent == root.resolve()
    with pytest.raises(ServiceInputError, match="No adapter named '../dpo' is attached."):
        services.zip_adapter("../dpo")
    out = finetune_tab.load_data(services, finetune_tab.SOURCE_EXAMPLE, None, "../../README.md", SESSION, DPO)
    assert out[0] is None and out[1] == "Pick an example file."
    with pytest.raises(gr.Error, match="Only files uploaded through the client are accepted"):
        api._uploaded_path({"path": str(Path(gr.utils.get_upload_folder()) / ".." / ".." / "etc" / "hostname")})
    with pytest.raises(gr.Error, match="Only files uploaded through the client are accepted"):
        api._uploaded_path({"path": str(tmp_path)})


def test_no_remote_code_no_pickle_loading_loopback_by_default():
    root = Path(__file__).resolve().parents[2]
    sources = [p for p in (root / "playground").rglob("*.py")] + [root / "app.py"]
    for path in sources:
        text = path.read_text(encoding="utf-8")
        assert "trust_remote_code=True" not in text, path
        assert not re.search(r"torch\.load\(|pickle\.loads?\(|import pickle|allow_pickle=True", text), path
    assert config.APP.host == "127.0.0.1"


def test_a_bad_heldout_file_is_a_note_and_the_reader_is_shared(engine, tmp_path):

    bad = tmp_path / "heldout.csv"
    bad.write_text("prompt,completion,label\nq,a,true\nq,b,false\n")  # unpaired: not held-out pairs
    services = Services.for_engine(engine, tmp_path / "data", heldout_file=bad)
    assert services.heldout_pairs is None
    assert f"The held-out file {bad} is not a valid paired file; held-out metrics are off." in services.messages
    with pytest.raises(ValueError, match="not a valid paired file"):
        load_heldout(bad)
    missing = Services.for_engine(engine, tmp_path / "data2", heldout_file=tmp_path / "nope.csv")
    assert missing.heldout_pairs is None and any("No held-out pairs file" in m for m in missing.messages)
    # the app and the Inspect precompute read the demo file through the same public function: the same rows
    demo = Services.for_engine(engine, tmp_path / "data3")
    shared, note = read_heldout_pairs(demo_file("paired", "heldout"), config.APP.heldout_pairs_limit)
    assert note == "" and shared.equals(demo.heldout_pairs) and shared.equals(load_heldout())
