"""The playground on a tiny random Llama, for tests that need a real server: in this process or as a subprocess.

``python tests/tiny_server.py --data-dir DIR --port PORT`` builds ``Services.for_engine`` on a 2-layer random Llama
(the real SmolLM2 tokenizer, from the embedded checkpoint) with ``DIR`` as the data directory and serves the page on
127.0.0.1:PORT until killed. With ``--adapters`` it first writes two random adapters, ``dpo`` and ``kto``, into a
folder next to the data directory and attaches them as the shipped ones.

Votes are cast on the page with buttons that are not API endpoints, so :func:`add_test_endpoints` adds two
test-only endpoints that call the page's own vote handlers (``compare_tab.vote_thumb`` / ``votes_view``):
``/test_vote`` and ``/test_votes``. They exist only in servers the tests build.
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True, type=Path)
    parser.add_argument("--port", required=True, type=int)
    parser.add_argument("--adapters", action="store_true", help="attach random 'dpo' and 'kto' adapters")
    args = parser.parse_args(argv)
    from playground.ui.page import launch_options

    _services, demo = build(args.data_dir, adapters=args.adapters)
    demo.launch(server_name="127.0.0.1", server_port=args.port, quiet=True, **launch_options())


if __name__ == "__main__":
    main()
