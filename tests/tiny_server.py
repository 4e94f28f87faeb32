"""The playground on a tiny random Llama, for tests that need a real server: in this process or as a subprocess.

``python tests/tiny_server.py --data-dir DIR --port PORT`` builds ``Services.for_engine`` on a 2-layer random Llama
(the real SmolLM2 tokenizer, from the embedded checkpoint) with ``DIR`` as the data directory and serves the page on
127.0.0.1:PORT until killed. With ``--adapters`` it first writes two random adapters, ``dpo`` and ``kto``, into a
folder next to the data directory and attaches them as the shipped ones.

Votes are cast on the page with buttons that are not API endpoints, so :func:`add_test_endpoints` adds two
test-only endpoints that call the page's own vote handlers (``compare_tab.vote_thumb`` / ``votes_view``):
``/test_vote`` and ``/test_votes``. They exist only in servers the tests build.

Crash tests need a SIGKILL to land inside an adapter save, which takes milliseconds. With the environment variable
``TINY_SERVER_PAUSE_IN_SAVE`` set to a stage (see :data:`SAVE_STAGES`) the launcher wraps functions of
``playground.training.saving`` so that the trainer thread stops there for good, after writing where it stopped to
the file named by ``TINY_SERVER_PAUSE_MARKER``; the test waits for that file and kills the process. Without the
variable nothing is wrapped. ``TINY_SERVER_NO_PROBES=1`` turns the probe answers of a training off (each probe round
generates on the tiny base for seconds), for tests that train only to have a training.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import time
from contextlib import contextmanager
from pathlib import Path

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
for entry in (str(ROOT), str(TESTS)):
    if entry not in sys.path:
        sys.path.insert(0, entry)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def serving(demo):
    """Serve ``demo`` on a free loopback port in this process; yield its URL, close it afterwards."""
    from playground.ui.page import launch_options

    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, **launch_options())
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        demo.close()


def tiny_engine(tokenizer=None, adapters_dir: Path | None = None):
    """An Engine on a tiny random base (fp32, CPU); with ``adapters_dir``, random 'dpo' and 'kto' attached."""
    import torch
    from conftest import make_tiny_model, save_random_adapter

    from playground.engine.base_model import BaseModelSource, ensure_embedded_checkpoint, load_tokenizer
    from playground.engine.device import DeviceChoice
    from playground.engine.engine import Engine

    tokenizer = tokenizer or load_tokenizer(str(ensure_embedded_checkpoint()))
    base = make_tiny_model(len(tokenizer), 0)
    engine = Engine(base, tokenizer, DeviceChoice(torch.device("cpu"), torch.float32, None),
                    BaseModelSource("local", "tiny-random-llama", "test"),
                    base_factory=lambda: make_tiny_model(len(tokenizer), 0))
    if adapters_dir is not None:
        adapters_dir = Path(adapters_dir)
        adapters_dir.mkdir(parents=True, exist_ok=True)
        for seed, name in ((1, "dpo"), (2, "kto")):
            if not (adapters_dir / name / "meta.json").is_file():
                save_random_adapter(base, adapters_dir / name, seed=seed, method=name)
        assert engine.attach_all(adapters_dir) == []
    return engine


def add_test_endpoints(demo, services) -> None:
    """Test-only endpoints that drive the page's vote handlers for a given session id."""
    import gradio as gr

    from playground.ui import compare_tab

    def test_vote(session_id: str, prompt: str, variant: str, answer: str, up: bool = True) -> str:
        last = {"prompt": prompt, "system": "", "variants": [variant], "answers": {variant: answer}}
        compare_tab.vote_thumb(services, 0, bool(up), session_id, last)
        return "ok"

    def test_votes(session_id: str) -> list[dict]:
        table, _note, _paired, _unpaired = compare_tab.votes_view(services, session_id)
        return table.astype(object).where(table.notna(), None).to_dict("records")

    with demo:
        gr.api(test_vote, api_name="test_vote", concurrency_limit=None)
        gr.api(test_votes, api_name="test_votes", concurrency_limit=None)


def build(data_dir: Path, *, adapters: bool = False, tokenizer=None, engine=None):
    """(services, demo) for the tiny engine on ``data_dir``, with the test endpoints."""
    from playground.serving.services import Services
    from playground.ui.page import build_app

    data_dir = Path(data_dir)
    if engine is None:
        engine = tiny_engine(tokenizer, data_dir.parent / f"{data_dir.name}-shipped" if adapters else None)
    services = Services.for_engine(engine, data_dir)
    demo = build_app(services)
    add_test_endpoints(demo, services)
    return services, demo


def wait_until_up(port: int, timeout: float = 120.0, process=None) -> None:
    """Return once something accepts connections on 127.0.0.1:port; fail when ``process`` died or time ran out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode} before it was up")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"no server on port {port} after {timeout:.0f} s")


NO_PROBES = "TINY_SERVER_NO_PROBES"
PAUSE_IN_SAVE = "TINY_SERVER_PAUSE_IN_SAVE"
PAUSE_MARKER = "TINY_SERVER_PAUSE_MARKER"
# writing: the temporary folder holds the weights and meta.json, not yet our README.md (``model_card`` runs);
# before_rename: the temporary folder is complete, not yet renamed into place; after_rename: the adapter folder is
# in place, the job not yet marked done.
SAVE_STAGES = ("writing", "before_rename", "after_rename")


def _pause_forever(marker: Path, where: str) -> None:
    """Say where we stopped (atomically, so a reader never sees half of it), then never return."""
    tmp = marker.with_name(marker.name + ".part")
    tmp.write_text(where, encoding="utf-8")
    os.replace(tmp, marker)
    while True:
        time.sleep(3600)


def install_save_pause(stage: str, marker: Path) -> None:
    """Make every adapter save stop at ``stage`` (one of :data:`SAVE_STAGES`) until the process is killed."""
    from playground.training import saving

    marker = Path(marker)
    if stage == "writing":
        real_sibling, folders = saving.temporary_sibling, []

        def temporary_sibling(target):
            folders.append(real_sibling(target))
            return folders[-1]

        def model_card(meta):  # save_adapter_atomically calls it after the weights and meta.json are written
            _pause_forever(marker, str(folders[-1]))

        saving.temporary_sibling, saving.model_card = temporary_sibling, model_card
    elif stage in ("before_rename", "after_rename"):
        real = saving.replace_directory

        def replace_directory(filled, target):
            if stage == "before_rename":
                _pause_forever(marker, str(filled))
            real(filled, target)
            _pause_forever(marker, str(target))

        saving.replace_directory = replace_directory
    else:
        raise SystemExit(f"{PAUSE_IN_SAVE}={stage!r}: use one of {', '.join(SAVE_STAGES)}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True, type=Path)
    parser.add_argument("--port", required=True, type=int)
    parser.add_argument("--adapters", action="store_true", help="attach random 'dpo' and 'kto' adapters")
    args = parser.parse_args(argv)
    from playground.ui.page import launch_options

    if os.environ.get(NO_PROBES) == "1":
        import dataclasses

        from playground import config

        config.TRAIN = dataclasses.replace(config.TRAIN, probes=dataclasses.replace(config.TRAIN.probes, enabled=False))
    if os.environ.get(PAUSE_IN_SAVE):
        install_save_pause(os.environ[PAUSE_IN_SAVE],
                           Path(os.environ.get(PAUSE_MARKER) or args.data_dir.parent / "paused-in-save"))
    _services, demo = build(args.data_dir, adapters=args.adapters)
    demo.launch(server_name="127.0.0.1", server_port=args.port, quiet=True, **launch_options())


if __name__ == "__main__":
    main()
