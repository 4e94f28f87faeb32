"""Nothing is lost when the server is killed: votes, finished adapters and the partial metrics of a cut training.

The app (tiny engine, ``tests/tiny_server.py``) runs in a subprocess. Through ``gradio_client`` we cast votes, finish
a 2-step training, start a long one and SIGKILL the process while it trains; a new process on the same data
directory must show the votes, list and attach the finished adapter, hold no half adapter (and clean the dot-folders
a crash mid-save leaves), and report the cut job as interrupted with the steps it had logged.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from gradio_client import Client, handle_file
from tiny_server import free_port, wait_until_up

EXAMPLES = Path(__file__).resolve().parents[2] / "data" / "examples"
LAUNCHER = Path(__file__).resolve().parents[1] / "tiny_server.py"
SESSION = "r" * 32
TINY = {"steps": 2, "batch_size": 2, "max_length": 64, "lora_r": 4, "lora_alpha": 8}
LONG = {**TINY, "steps": 5000}  # far more steps than the test waits for: the kill lands mid-training
FINISHED = ("done", "failed", "cancelled", "interrupted")


def _start(data_dir: Path, log: Path) -> tuple[subprocess.Popen, Client]:
    port = free_port()
    with log.open("ab") as sink:  # a file, not a pipe: a chatty server never blocks on a full pipe
        process = subprocess.Popen([sys.executable, str(LAUNCHER), "--data-dir", str(data_dir), "--port", str(port)],
                                   stdout=sink, stderr=subprocess.STDOUT)
    try:
        wait_until_up(port, timeout=120, process=process)
        return process, Client(f"http://127.0.0.1:{port}/", verbose=False)
    except BaseException:
        _stop(process)
        raise AssertionError("the server did not start:\n" + log.read_text(errors="replace")[-3000:]) from None


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)


def _status(client, job_id):
    return client.predict(job_id=job_id, api_name="/train_status")


def _wait_for(client, job_id, done, timeout=120.0, what="the job"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = _status(client, job_id)
        if done(status):
            return status
        time.sleep(0.3)
    raise AssertionError(f"{what} did not get there in {timeout:.0f} s: {status}")


def test_kill_mid_training_and_restart_loses_nothing(tmp_path):
    data_dir = tmp_path / "data"
    first, client = _start(data_dir, tmp_path / "first.log")
    try:
        answers = [("dpo", "Tip: write the ask first.", True), ("base", "Emails are hard.", False),
                   ("kto", "Keep it short.", True)]
        for variant, answer, up in answers:
            assert client.predict(session_id=SESSION, prompt="One email tip?", variant=variant, answer=answer, up=up,
                                  api_name="/test_vote") == "ok"

        paired = handle_file(str(EXAMPLES / "paired_example.csv"))
        kept = client.predict(file=paired, method="dpo", name="kept", hyperparameters=TINY, api_name="/train_start")
        assert _wait_for(client, kept["job_id"], lambda s: s["status"] in FINISHED)["status"] == "done"

        long = client.predict(file=paired, method="dpo", name="long", hyperparameters=LONG, api_name="/train_start")
        seen = _wait_for(client, long["job_id"], lambda s: s["status"] == "running" and s["steps_done"] >= 3,
                         what="the long training")
        _stop(first)  # SIGKILL while it trains
        assert first.returncode == -signal.SIGKILL
    finally:
        _stop(first)

    # What a kill during an adapter save leaves behind: a dot-folder with half the files.
    half = data_dir / "adapters" / ".tmp-long-deadbeef"
    half.mkdir()
    (half / "adapter_config.json").write_text("{}")

    second, client = _start(data_dir, tmp_path / "second.log")
    try:
        votes = client.predict(session_id=SESSION, api_name="/test_votes")
        assert [(v["left, or the rated answer"], v["vote"]) for v in votes] == [  # the table is newest first
            ("kto", "👍 good"), ("base", "👎 bad"), ("dpo", "👍 good")]
        assert client.predict(session_id="o" * 32, api_name="/test_votes") == []

        assert "kept" in client.predict(api_name="/variants")
        answer = client.predict(prompt="Hi", variants=["kept"], settings={"max_new_tokens": 3}, api_name="/generate")
        assert set(answer["variants"]) == {"kept"}  # attached: it generates
        assert _status(client, kept["job_id"])["status"] == "done"

        folders = list((data_dir / "adapters").iterdir())
        assert not [p.name for p in folders if p.name.startswith(".")]  # crash leftovers cleaned
        for folder in folders:
            assert (folder / "adapter_model.safetensors").is_file() and (folder / "meta.json").is_file(), folder
        assert [p.name for p in folders] == ["kept"]  # nothing of the cut run

        cut = _status(client, long["job_id"])
        assert cut["status"] == "interrupted" and "Interrupted" in cut["phase"]
        assert cut["steps_done"] >= seen["steps_done"] >= 3
        assert len(cut["history"]) == cut["steps_done"]
        assert all(row["loss"] is not None for row in cut["history"])
        assert cut["adapter_attached"] is False
    finally:
        _stop(second)
