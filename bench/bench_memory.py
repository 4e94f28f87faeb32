"""Memory: peak RSS of the base with two LoRA adapters attached against the base alone and three merged models.

Each configuration runs in a fresh subprocess (so nothing is shared or cached between them), loads what it needs,
then generates a few tokens (so activations and the KV cache count too):

  base          the base model alone, one row
  base+2        the base with the dpo and kto adapters attached (one model object), three rows [base, dpo, kto]
  merged3       three separate full models: the base, base+dpo merged, base+kto merged, one row each

The parent samples the child's RSS with psutil every 10 ms (peak = the largest sample); the child also reports the
kernel's exact peak (``ru_maxrss``) and its RSS after the imports (the interpreter + torch + transformers floor).
Targets: base+2 <= 1.2 x base. Configurations interleave over ``--repeats`` rounds; ratios are of medians.

    .venv/bin/python -m bench.bench_memory [--quick] [--repeats 2] [--new-tokens 16]
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common  # noqa: E402
from playground.engine.base_model import load_base_model  # noqa: E402
from playground.engine.device import pick_device  # noqa: E402
from playground.engine.engine import Engine  # noqa: E402
from playground.engine.templating import prompt_ids  # noqa: E402

CONFIGS = ("base", "base+2", "merged3")
TARGET = 1.2


def child(config_name: str, adapter_root: str, new_tokens: int) -> None:
    """Runs in the subprocess: load ``config_name``, generate, print one JSON line."""
    import warnings

    import psutil

    warnings.filterwarnings("ignore")
    process = psutil.Process()
    import torch
    from peft import PeftModel

    from playground import config

    after_imports = process.memory_info().rss
    device = pick_device()
    source = common.embedded_source()
    started = time.perf_counter()
    models_to_run = []  # (model, adapter_names or None, rows)
    if config_name == "base":
        model, tokenizer = load_base_model(source, device)
        models_to_run.append((model, None, 1))
    elif config_name == "base+2":
        engine = Engine.load(source, device)
        tokenizer = engine.tokenizer
        skipped = engine.attach_all(Path(adapter_root))
        assert not skipped and sorted(engine.adapters) == ["dpo", "kto"], skipped
        models_to_run.append((engine.model, [config.PEFT_BASE_ADAPTER, "dpo", "kto"], 3))
    elif config_name == "merged3":
        model, tokenizer = load_base_model(source, device)
        models_to_run.append((model, None, 1))
        for name in ("dpo", "kto"):
            copy_, _ = load_base_model(source, device)
            merged = PeftModel.from_pretrained(copy_, str(Path(adapter_root) / name)).merge_and_unload()
            models_to_run.append((merged.eval(), None, 1))
    else:
        raise SystemExit(f"unknown configuration {config_name}")
    loaded = process.memory_info().rss
    load_seconds = time.perf_counter() - started
    ids = prompt_ids(tokenizer, common.heldout_prompt(0))
    with torch.inference_mode():
        for model, names, rows in models_to_run:
            input_ids = torch.tensor([ids] * rows, dtype=torch.long, device=device.device)
            kwargs = dict(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), max_new_tokens=new_tokens,
                          min_new_tokens=new_tokens, do_sample=False, temperature=None, top_p=None, top_k=None,
                          pad_token_id=tokenizer.pad_token_id)
            if names:
                kwargs["adapter_names"] = names
            model.generate(**kwargs)
    print(json.dumps({
        "config": config_name,
        "rss_after_imports": after_imports,
        "rss_after_load": loaded,
        "rss_end": process.memory_info().rss,
        "ru_maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,  # Linux reports KiB
        "load_seconds": load_seconds,
        "device": device.describe(),
    }))


def measure(config_name: str, adapter_root: Path, new_tokens: int) -> dict:
    import psutil

    command = [sys.executable, "-m", "bench.bench_memory", "--child", config_name, "--adapter-root",
               str(adapter_root), "--new-tokens", str(new_tokens)]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.Popen(command, cwd=common.REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    handle = psutil.Process(proc.pid)
    peak = 0
    while proc.poll() is None:
        try:
            peak = max(peak, handle.memory_info().rss)
        except psutil.Error:
            break
        time.sleep(0.01)
    stdout, stderr = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"{config_name} failed ({proc.returncode}):\n{stderr[-3000:]}")
    record = json.loads(stdout.strip().splitlines()[-1])
    record["psutil_peak_rss"] = peak
    return record


def main(argv: list[str] | None = None) -> int:
    parser = common.base_parser(__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument("--child", choices=CONFIGS, help=argparse_hidden())
    parser.add_argument("--adapter-root", help=argparse_hidden())
    args = parser.parse_args(argv)
    if args.child:
        child(args.child, args.adapter_root, args.new_tokens)
        return 0
    if args.quick:
        args.repeats, args.new_tokens = 1, 4

    with tempfile.TemporaryDirectory(prefix="bench-mem-") as tmp:
        root, adapters = common.adapter_root(Path(tmp))
        runs = common.interleave({c: (lambda c=c: measure(c, root, args.new_tokens)) for c in CONFIGS}, args.repeats)
    mib = 2**20
    med = {c: {key: common.median([r[key] for r in rs]) / mib
               for key in ("psutil_peak_rss", "ru_maxrss", "rss_after_imports", "rss_after_load")}
           for c, rs in runs.items()}
    for c in med:
        med[c]["peak_above_imports"] = med[c]["psutil_peak_rss"] - med[c]["rss_after_imports"]
    ratios = {
        "base+2_over_base": common.ratio(med["base+2"]["psutil_peak_rss"], med["base"]["psutil_peak_rss"]),
        "merged3_over_base": common.ratio(med["merged3"]["psutil_peak_rss"], med["base"]["psutil_peak_rss"]),
        "merged3_over_base+2": common.ratio(med["merged3"]["psutil_peak_rss"], med["base+2"]["psutil_peak_rss"]),
        "base+2_over_base_above_imports": common.ratio(med["base+2"]["peak_above_imports"],
                                                       med["base"]["peak_above_imports"]),
        "merged3_over_base+2_above_imports": common.ratio(med["merged3"]["peak_above_imports"],
                                                          med["base+2"]["peak_above_imports"]),
        "base+2_over_base_ru_maxrss": common.ratio(med["base+2"]["ru_maxrss"], med["base"]["ru_maxrss"]),
    }
    for c, m in med.items():
        print(f"{c:8s} peak {m['psutil_peak_rss']:.0f} MiB (ru_maxrss {m['ru_maxrss']:.0f}), "
              f"imports {m['rss_after_imports']:.0f} MiB")
    print(f"base+2/base {ratios['base+2_over_base']:.2f}x (target <= {TARGET}); "
          f"merged3/base+2 {ratios['merged3_over_base+2']:.2f}x")
    common.write_result("memory", {
        "settings": {**{k: v for k, v in vars(args).items() if k not in ("child", "adapter_root")},
                     "adapters": adapters},
        "runs": runs, "median_mib": med, "ratios": ratios, "target": f"base+2 <= {TARGET} x base (peak RSS)",
        "target_met": ratios["base+2_over_base"] <= TARGET,
    }, args.out)
    return 0


def argparse_hidden():
    import argparse

    return argparse.SUPPRESS


if __name__ == "__main__":
    raise SystemExit(main())
