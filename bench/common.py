"""Shared helpers for the benchmark scripts: machine description, JSON results, GEMM peak, interleaved timing."""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from playground.engine.adapters import AdapterError, validate_adapter_dir  # noqa: E402
from playground.engine.base_model import ensure_embedded_checkpoint, load_base_model, resolve_base_model  # noqa: E402
from playground.engine.device import DeviceChoice, cpu_supports_bf16  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO_ROOT / "bench" / "results"
PYTHON = ".venv/bin/python"

if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # benchmarks never reach a hub
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(module: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(module)
    except Exception:  # noqa: BLE001 - a missing package is reported as None
        return None


def machine_info() -> dict[str, Any]:
    """What a reader needs to judge the numbers: CPU, cores, memory, library versions, threads, current load."""
    import torch

    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "transformers": _version("transformers"),
        "peft": _version("peft"),
        "trl": _version("trl"),
        "gradio": _version("gradio"),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    try:

        info["cpu_bf16"] = cpu_supports_bf16()
    except Exception:  # noqa: BLE001
        info["cpu_bf16"] = None
    try:
        import psutil

        info["memory_gib"] = round(psutil.virtual_memory().total / 2**30, 1)
    except Exception:  # noqa: BLE001
        info["memory_gib"] = None
    try:
        info["load_average_at_start"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        info["load_average_at_start"] = None
    return info


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def command_line() -> str:
    """The command that reproduces this run, as typed from the repository root."""
    argv = sys.argv[:]
    script = Path(argv[0])
    if script.suffix == ".py" and script.parent.name == "bench":
        head = [PYTHON, "-m", f"bench.{script.stem}"]
    else:
        head = [PYTHON, *argv[:1]]
    return " ".join(shlex.quote(x) for x in head + argv[1:])


def write_result(name: str, payload: dict[str, Any], out: str | Path | None = None) -> Path:
    """Write ``payload`` (plus machine, date, command) as JSON to ``out`` or bench/results/<name>.json."""
    path = Path(out) if out else RESULTS_DIR / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "benchmark": name,
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": command_line(),
        "machine": machine_info(),
        "load_average_at_end": load_average(),
        **payload,
    }
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(record, indent=1, default=_jsonable) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    print(f"wrote {path}")
    return path


def _jsonable(value):
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def median(values: list[float]) -> float:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else float("nan")


def ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else float("nan")


def interleave(contenders: dict[str, Callable[[], Any]], repeats: int, log: Callable[[str], None] = print
               ) -> dict[str, list[Any]]:
    """Run the contenders in turn, ``repeats`` rounds (A B C A B C ...), so all see the same machine load."""
    results: dict[str, list[Any]] = {name: [] for name in contenders}
    for round_ in range(repeats):
        for name, run in contenders.items():
            started = time.perf_counter()
            value = run()
            log(f"  round {round_ + 1}/{repeats} {name}: {time.perf_counter() - started:.1f} s")
            results[name].append(value)
    return results


def gemm_peak(dtype_name: str, size: int = 2048, repeats: int = 7, device: str = "cpu") -> dict[str, Any]:
    """Median and best GFLOP/s of ``size``-square ``torch.matmul`` in ``dtype_name`` (bfloat16 | float32)."""
    import torch

    dtype = getattr(torch, dtype_name)
    generator = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(size, size, generator=generator).to(device=device, dtype=dtype)
    b = torch.randn(size, size, generator=generator).to(device=device, dtype=dtype)
    flops = 2 * size**3
    torch.matmul(a, b)  # warm-up: first call allocates and picks kernels
    samples = []
    for _ in range(repeats):
        if device != "cpu":
            torch.cuda.synchronize()
        started = time.perf_counter()
        torch.matmul(a, b)
        if device != "cpu":
            torch.cuda.synchronize()
        samples.append(flops / (time.perf_counter() - started) / 1e9)
    return {"dtype": dtype_name, "size": size, "median_gflops": median(samples), "best_gflops": max(samples),
            "samples_gflops": [round(s, 1) for s in samples]}


def base_parser(description: str):
    import argparse

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="tiny settings: a smoke run, numbers not meaningful")
    parser.add_argument("--out", help="JSON output path (default bench/results/<name>.json)")
    return parser


def embedded_source():
    """The embedded base model (dequantized once into the cache; never downloads)."""

    ensure_embedded_checkpoint()
    return resolve_base_model(env={})


def fmt_ratio(value: float | None, digits: int = 2) -> str:
    if value is None or value != value:
        return "n/a"
    return f"{value:.{digits}f}x"


def heldout_prompt(index: int = 0) -> str:
    """A prompt from the held-out demo pairs (never trained on)."""
    import csv

    with open(REPO_ROOT / "data" / "demo_pairs_heldout.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    return rows[index % len(rows)]["prompt"]


def adapter_root(workdir: Path, base=None, log: Callable[[str], None] = print) -> tuple[Path, str]:
    """A folder holding ``dpo/`` and ``kto/`` adapters: the shipped ones in checkpoints/ when both are valid, else
    random (non-zero) LoRA adapters of config.TRAIN.lora written under ``workdir``. Returns (folder, description)."""
    import copy

    from playground import config

    shipped = REPO_ROOT / "checkpoints"
    try:
        for name in ("dpo", "kto"):
            validate_adapter_dir(shipped / name)
        return shipped, "shipped adapters from checkpoints/"
    except AdapterError:
        pass
    import torch
    from peft import LoraConfig, get_peft_model

    if base is None:
        base, _ = load_base_model(embedded_source(), DeviceChoice(torch.device("cpu"), torch.float32,
                                                                               None))
    root = Path(workdir) / "adapters"
    lora = config.TRAIN.lora
    for seed, name in ((1, "dpo"), (2, "kto")):
        target = root / name
        if (target / "meta.json").is_file():
            continue
        torch.manual_seed(seed)
        peft_model = get_peft_model(copy.deepcopy(base), LoraConfig(
            r=lora.r, lora_alpha=lora.alpha, lora_dropout=0.0, target_modules=list(lora.target_modules),
            init_lora_weights=False, task_type="CAUSAL_LM"))
        peft_model.save_pretrained(str(target), safe_serialization=True)
        (target / "meta.json").write_text(json.dumps({
            "method": name, "base_model": config.HUB_BASE_MODEL,
            "base_architecture": (base.config.architectures or ["LlamaForCausalLM"])[0],
            "note": "random LoRA weights for benchmarking"}), encoding="utf-8")
        del peft_model
    log(f"checkpoints/ has no dpo+kto adapters yet: using random LoRA adapters (r={lora.r}) in {root}")
    return root, f"random LoRA adapters of the shipped config (r={lora.r}, alpha={lora.alpha}, 7 target modules)"
