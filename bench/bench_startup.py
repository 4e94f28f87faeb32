"""Start-up: from ``python app.py`` to a served page (HTTP 200 on /), with the base model already cached.

Each round starts the app in a fresh process on a free loopback port with a throw-away data directory, polls
http://127.0.0.1:PORT/ every 0.2 s until it answers 200, then stops it. For context, the time to just import the
heavy libraries (torch, transformers, peft, gradio) in a fresh interpreter is measured in the same rounds
(interleaved). If the app does not launch (it is still being written, or it crashes), the result says so with the
end of its output instead of a number.

    .venv/bin/python -m bench.bench_startup [--quick] [--repeats 2] [--timeout 300]
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common  # noqa: E402


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _stop(proc: subprocess.Popen) -> None:
    """Stop the app this benchmark started (its own process group), politely first."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
    except (subprocess.TimeoutExpired, ProcessLookupError):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=20)


def start_app(timeout: float) -> dict:
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="bench-startup-") as tmp:
        log_path = Path(tmp) / "app.log"
        env = {**os.environ, "PLAYGROUND_DATA_DIR": str(Path(tmp) / "data"), "GRADIO_ANALYTICS_ENABLED": "False",
               "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
        url = f"http://127.0.0.1:{port}/"
        with open(log_path, "w") as log:
            started = time.perf_counter()
            proc = subprocess.Popen([sys.executable, "app.py", "--port", str(port)], cwd=common.REPO_ROOT,
                                    stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
            status, served_at = None, None
            try:
                while time.perf_counter() - started < timeout:
                    if proc.poll() is not None:
                        break
                    try:
                        with urllib.request.urlopen(url, timeout=5) as response:
                            status = response.status
                        if status == 200:
                            served_at = time.perf_counter()
                            break
                    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                        pass
                    time.sleep(0.2)
            finally:
                _stop(proc)
        tail = log_path.read_text(errors="replace")[-2500:]
    if served_at is None:
        reason = (f"the app exited with code {proc.returncode} before serving" if proc.returncode not in (None, 0,
                  -signal.SIGTERM) and status is None else f"no HTTP 200 on {url} within {timeout:.0f} s")
        return {"ok": False, "reason": reason, "log_tail": tail}
    return {"ok": True, "seconds": served_at - started, "port": port, "log_tail": tail[-800:]}


def import_time() -> dict:
    code = "import torch, transformers, peft, gradio"
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code], cwd=common.REPO_ROOT, capture_output=True, text=True)
    return {"ok": proc.returncode == 0, "seconds": time.perf_counter() - started, "stderr": proc.stderr[-500:]}


def main(argv: list[str] | None = None) -> int:
    parser = common.base_parser(__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for the page")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats = 1
    common.embedded_source()  # "with the base already cached": dequantize now if needed, outside the timing
    runs = {"app": [], "imports": []}
    for round_ in range(args.repeats):
        runs["imports"].append(import_time())
        runs["app"].append(start_app(args.timeout))
        app = runs["app"][-1]
        print(f"round {round_ + 1}: imports {runs['imports'][-1]['seconds']:.1f} s; app "
              + (f"served after {app['seconds']:.1f} s" if app["ok"] else f"DID NOT LAUNCH: {app['reason']}"))
        if not app["ok"]:
            print(app["log_tail"][-1500:])
            break
    ok = [r["seconds"] for r in runs["app"] if r["ok"]]
    result = {
        "settings": vars(args),
        "runs": runs,
        "launched": bool(ok) and all(r["ok"] for r in runs["app"]),
        "median_seconds_to_page": common.median(ok) if ok else None,
        "median_import_seconds": common.median([r["seconds"] for r in runs["imports"] if r["ok"]]),
    }
    if ok:
        result["page_over_imports"] = common.ratio(result["median_seconds_to_page"], result["median_import_seconds"])
    else:
        result["not_launched_reason"] = runs["app"][-1]["reason"]
    common.write_result("startup", result, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
