"""Run every benchmark, each as its own process writing JSON to bench/results/, then render BENCHMARKS.md from the JSON.

    .venv/bin/python -m bench.run_all [--quick] [--only train,generation] [--threads N] [--render-only]

A benchmark that fails (or a script that does not exist yet, such as bench_inspect.py while it is being written) is
reported in BENCHMARKS.md with the end of its output; the others still run. ``--render-only`` rebuilds BENCHMARKS.md
from the JSON already in bench/results/.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common  # noqa: E402

# (name, module, JSON file, takes --quick, takes --threads)
BENCHES = [
    ("math", "bench.bench_math", "math.json", False, False),
    ("inspect", "bench.bench_inspect", "inspect.json", None, None),  # another helper's script: options probed
    ("train", "bench.bench_train", "train.json", True, True),
    ("generation", "bench.bench_generation", "generation.json", True, True),
    ("memory", "bench.bench_memory", "memory.json", True, False),
    ("startup", "bench.bench_startup", "startup.json", True, False),
    ("threads", "bench.bench_threads", "threads.json", True, False),
    ("precision", "bench.bench_precision", "precision.json", True, True),
]
# Optional extra training runs rendered under the main one when their JSON exists (written by hand, e.g.
# `.venv/bin/python -m bench.bench_train --threads 2 --out bench/results/train_threads2.json`).
EXTRA_TRAIN_RUNS = [("train_threads2.json", "The same comparison with two torch threads (both cores)")]
OUTPUT = common.REPO_ROOT / "BENCHMARKS.md"
STATUS_FILE = common.RESULTS_DIR / "run_all_status.json"


def _help(module: str) -> str:
    proc = subprocess.run([sys.executable, "-m", module, "--help"], cwd=common.REPO_ROOT, capture_output=True,
                          text=True, timeout=300)
    return proc.stdout


def command_for(module: str, quick: bool, threads: int, takes_quick: bool | None,
                takes_threads: bool | None) -> list[str]:
    """The arguments for one benchmark; for a script this file does not own, its --help says what it accepts (its
    smoke-run flag may be --quick or --tiny)."""
    command = ["-m", module]
    help_text = _help(module) if takes_quick is None or takes_threads is None else ""
    if quick:
        if takes_quick:
            command.append("--quick")
        elif takes_quick is None:
            command += [flag for flag in ("--quick", "--tiny") if flag in help_text][:1]
    if threads and (takes_threads or (takes_threads is None and "--threads" in help_text)):
        command += ["--threads", str(threads)]
    return command


def run(names: list[str], quick: bool, threads: int) -> dict[str, Any]:
    status: dict[str, Any] = json.loads(STATUS_FILE.read_text()) if STATUS_FILE.is_file() else {}
    for name, module, _json, takes_quick, takes_threads in BENCHES:
        if name not in names:
            continue
        script = common.REPO_ROOT / (module.replace(".", "/") + ".py")
        if not script.is_file():
            status[name] = {"ok": False, "reason": f"{script.relative_to(common.REPO_ROOT)} does not exist yet"}
            print(f"== {name}: skipped ({status[name]['reason']})")
            continue
        command = command_for(module, quick, threads, takes_quick, takes_threads)
        print(f"== {name}: {common.PYTHON} {' '.join(command)}", flush=True)
        started = time.perf_counter()
        proc = subprocess.run([sys.executable, *command], cwd=common.REPO_ROOT, capture_output=True, text=True)
        seconds = time.perf_counter() - started
        tail = (proc.stdout + proc.stderr)[-3000:]
        print("\n".join(line for line in proc.stdout.splitlines()[-12:]))
        status[name] = {"ok": proc.returncode == 0, "returncode": proc.returncode, "seconds": round(seconds, 1),
                        "command": f"{common.PYTHON} {' '.join(command)}",
                        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}
        if proc.returncode != 0:
            status[name]["tail"] = tail
            print(f"   FAILED ({proc.returncode}):\n{tail[-1500:]}")
    status["_run_all"] = {"threads": threads, "quick": quick}
    STATUS_FILE.parent.mkdir(parents=True, exist_ok=True)
    STATUS_FILE.write_text(json.dumps(status, indent=1) + "\n")
    return status


# --------------------------------------------------------------------------------------------------------------------
# Rendering


def _load(file: str) -> dict[str, Any] | None:
    path = common.RESULTS_DIR / file
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return None


def _x(value, digits: int = 2) -> str:
    return common.fmt_ratio(value, digits)


def _n(value, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "n/a"
    return f"{value:.{digits}f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines


def _machine_lines(machine: dict[str, Any]) -> list[str]:
    return [
        f"- CPU: {machine.get('cpu')} ({machine.get('usable_cpus')} usable of {machine.get('logical_cpus')} logical "
        f"CPUs; native bf16: {machine.get('cpu_bf16')}), memory {machine.get('memory_gib')} GiB"
        + (f", GPU {machine['cuda']}" if machine.get("cuda") else ""),
        f"- torch {machine.get('torch')} ({machine.get('torch_threads')} intra-op threads, "
        f"{machine.get('torch_interop_threads')} inter-op), transformers {machine.get('transformers')}, "
        f"peft {machine.get('peft')}, trl {machine.get('trl')}, gradio {machine.get('gradio')}, "
        f"Python {machine.get('python')}",
        f"- {machine.get('platform')}",
        f"- load average when the run started: {machine.get('load_average_at_start')} (other jobs share this box)",
    ]


def render_train(data: dict[str, Any]) -> list[str]:
    lines = ["## Fine-tuning throughput (ours vs TRL 1.16, LoRA, same model/rows/settings)", ""]
    settings = data["settings"]
    lines.append(
        f"{settings['warmup']} warm-up + {settings['steps']} measured steps of batch {settings['batch_size']}, "
        f"max length {settings['max_length']}, beta {settings['beta']}, {settings['device_choice']}; "
        f"{settings['repeats']} interleaved round(s) of ours and trl_fast, {settings['default_repeats']} of "
        f"trl_default; torch threads {data['machine'].get('torch_threads')}. Ratios are ours over TRL "
        "(higher is better for ours); medians over rounds.")
    lines.append("")
    rows = []
    for method, block in data["methods"].items():
        summary = block["summary"]
        for other in ("trl_fast", "trl_default"):
            r = summary["ours_speedup_over"].get(other)
            if not r:
                continue
            target = " (target >= 2x)" if other == "trl_fast" else ""
            rows.append([method.upper(), f"ours / {other}", _x(r["steady_throughput"]) + target,
                         _x(r.get("steady_cpu_time")), _x(r["loop_throughput"]), _x(r["end_to_end"])])
    lines += _table(["method", "comparison", "steady-state throughput (wall)", "steady-state (CPU time)",
                     "all-steps throughput", "end-to-end (incl. tokenising, LoRA attach, reference precompute)"],
                    rows)
    lines += ["", "CPU time: this process's CPU seconds over the same steps, a measure of work that neighbours' load "
              "does not inflate; meaningful with one torch thread (with more it also counts spin-waiting)."]
    lines.append("")
    rows = []
    peak = data["gemm_peak"]
    for method, block in data["methods"].items():
        summary = block["summary"]
        for name, m in summary["medians"].items():
            rows.append([method.upper(), name, f"{_n(m['steady_rows_per_s'], 3)} {summary['unit']}",
                         _n(m["precompute_seconds"], 1), _n(m["end_to_end_seconds"], 1),
                         f"{100 * m['mfu_vs_bf16_peak']:.1f}%"])
    lines += _table(["method", "contender", "steady throughput", "reference precompute s", "end-to-end s",
                     "MFU (of the bf16 GEMM peak)"], rows)
    lines.append("")
    lines.append("MFU counts the model FLOPs of the nominal sequences for every contender (formula in "
                 "`bench/bench_train.py`); ours shares each prompt between chosen and rejected (and with KTO's "
                 "mismatched KL pair) and skips padding, so it executes fewer FLOPs than it is credited with: its "
                 "MFU is an effective one. Training runs under bf16 autocast, hence the bf16 peak.")
    lines.append("")
    lines.append(f"GEMM peak measured in the same run, same threads (2048x2048 torch.matmul, median): bf16 "
                 f"{_n(peak['bfloat16']['median_gflops'], 1)} GFLOP/s, fp32 {_n(peak['float32']['median_gflops'], 1)}"
                 f" GFLOP/s. Model: {data['model_dims']['decoder_linear_params'] / 1e6:.1f} M decoder linear weights, "
                 f"{data['lora_params'] / 1e6:.2f} M LoRA parameters.")
    lines.append("")
    some = next(iter(data["methods"].values()))["runs"]
    if some.get("trl_fast"):
        args = some["trl_fast"][0]["resolved_args"]
        lines.append(f"trl_fast resolved settings: `{json.dumps(args)}`.")
    if some.get("trl_default"):
        args = some["trl_default"][0]["resolved_args"]
        lines.append(f"trl_default resolved settings: `{json.dumps(args)}`.")
    lines += ["", "What the contenders are, how throughput and MFU are defined (FLOPs formula): see the docstring of "
              "`bench/bench_train.py`. Steady state excludes the warm-up steps and the precompute; ours and trl_fast "
              "run the identical batches in the identical order; trl_default samples its own batches from the same "
              "rows (one epoch over the same rows for everyone, so the all-steps and end-to-end columns compare "
              "identical work).", ""]
    return lines


def render_train_extra(data: dict[str, Any], title: str) -> list[str]:
    """A second training run with other settings (e.g. torch's default thread count): the ratios only."""
    settings = data["settings"]
    lines = [f"### {title}", "",
             f"`{data.get('command')}`: torch threads {data['machine'].get('torch_threads')}, "
             f"{settings['warmup']} warm-up + {settings['steps']} measured steps of batch {settings['batch_size']}, "
             f"{settings['repeats']} interleaved round(s); load average at start "
             f"{data['machine'].get('load_average_at_start')}.", ""]
    rows = []
    for method, block in data["methods"].items():
        for other, r in block["summary"]["ours_speedup_over"].items():
            rows.append([method.upper(), f"ours / {other}", _x(r["steady_throughput"]), _x(r["loop_throughput"]),
                         _x(r["end_to_end"])])
    lines += _table(["method", "comparison", "steady-state throughput (wall)", "all-steps throughput",
                     "end-to-end"], rows)
    lines.append("")
    return lines


def render_generation(data: dict[str, Any]) -> list[str]:
    s, r, med = data["settings"], data["ratios"], data["median_seconds"]
    met = data.get("targets_met", {})
    n = s["new_tokens"]

    def target(key: str) -> str:
        return f" (target <= {data['targets'][key]}: {'met' if met.get(key) else 'NOT met'})"

    lines = ["## Side-by-side generation (variants in one batch) and many users", "",
             f"{n} new tokens, greedy, end-of-sequence suppressed for {n} steps, prompts of {s['prompt_tokens']}"
             f" tokens, {s['repeats']} interleaved rounds, {s['device_choice']}; adapters: {s['adapters']}; "
             f"batching window {s['batching']['window_s']} s, at most {s['batching']['max_rows']} rows.", ""]
    lines += _table(["comparison", "ratio of median wall times"], [
        ["batched3 (base+dpo+kto, batch decoder + stacked LoRA) / single (plain base, one row)",
         _x(r["batched3_over_single"]) + target("batched3_over_single")],
        ["batched8 (base + 7 adapters) / single", _x(r["batched8_over_single"]) + target("batched8_over_single")],
        ["concurrent4 (four 3-way requests at once, decoder thread) / alone3 (one of them alone)",
         _x(r["concurrent4_over_alone3"]) + target("concurrent4_over_alone3")],
        ["peft3 (the same three rows through generate + PEFT's adapter_names) / batched3",
         _x(r["peft3_over_batched3"])],
        ["peft3 / single", _x(r["peft3_over_single"])],
        ["alone3 (through the decoder thread) / batched3 (direct)", _x(r["alone3_over_batched3"])],
    ])
    lines += ["", "Median seconds: " + ", ".join(f"{k} {_n(v)}" for k, v in med.items())
              + f" (stream3 is the app's streaming path; its rows stop at EOS: {data.get('stream3_tokens')} tokens).",
              "Tokens per second: " + ", ".join(f"{k} {_n(v, 1)}" for k, v in data["tokens_per_s"].items()) + ".",
              ""]
    if not data.get("target_met"):
        lines += [
            f"What stands in the way: per decode step the plain model takes {1000 * med['single'] / n:.0f} ms for "
            f"one row and the batch decoder {1000 * med['batched3'] / n:.0f} ms for three. The stacked LoRA "
            "removed PEFT's per-adapter loop (peft3 / batched3 above); what remains is mostly the base model "
            "itself: on this CPU, MKL's fp32 GEMM for 2-12 rows costs several times its matrix-vector product for "
            "one row (a 1536x576 layer: 0.10 ms for 1 row, 0.47 ms for 3, 0.52 ms for 12, one thread), so three "
            "rows of the plain model without any adapter cost about 1.9x one row. Weights pre-packed for oneDNN "
            "(`torch.ops.mkldnn._reorder_linear_weight` + `_linear_pointwise`) brought three plain rows to 1.2x "
            "one row in a trial (0.18 ms for the same layer and 3 rows), but keep a second copy of every weight "
            "(+540 MB) and change logits by up to 2e-4; not adopted (see the closing note of issue 12).", ""]
    return lines


def render_precision(data: dict[str, Any]) -> list[str]:
    s, med, speed, quality = data["settings"], data["median_seconds"], data["speedup_over_float32"], data["quality"]
    lines = ["## Decode precision (base weights for generation)", "",
             f"{s['new_tokens']} greedy tokens (end-of-sequence suppressed), {s['repeats']} interleaved rounds, "
             f"{s['torch_threads']} torch thread(s), CPU bf16 support: {s['cpu_bf16']}; answers compared on the "
             f"first {s['prompts']} held-out prompts. Adopted only if the answers are identical or every token's "
             f"log-prob is within {s['tolerance_nats']} nats, and 1 row decodes at least 5% faster.", ""]
    rows = []
    for name in speed:
        q = quality[name]
        rows.append([name, _n(med[f"{name}_1row"]), _n(med[f"{name}_3row"]), _x(speed[name]["1"]),
                     _x(speed[name]["3"]), f"{q['identical_answers']}/{q['prompts']}",
                     _n(q["max_token_logp_difference"], 4),
                     "(served)" if name == "float32" else ("adopt" if data["adopt"].get(name) else "not adopted")])
    lines += _table(["weights", "1 row s", "3 rows s", "speed-up 1 row", "speed-up 3 rows", "identical answers",
                     "max abs token log-prob difference", "verdict"], rows)
    lines.append("")
    return lines


def render_threads(data: dict[str, Any]) -> list[str]:
    s, med, slow = data["settings"], data["median_seconds"], data["slowdown_together_over_alone"]
    lines = ["## Thread policy (a training and a generation at once)", "",
             f"{s['cores']} cores; training = LoRA forward + backward of batch 8 x 128 tokens; generation = one "
             f"3-way request of {s['new_tokens']} tokens through the decoder thread; {s['repeats']} interleaved "
             f"rounds. Default policy: `{s['default_policy']}` (`config.THREADS`).", ""]
    rows = []
    for policy in s["policies"]:
        m = med[policy]
        rows.append([policy, _n(m["step_alone"]), _n(m["step_together"]), _x(slow[policy]["training"]),
                     _n(m["generation_alone"]), _n(m["generation_together"]), _x(slow[policy]["generation"])])
    lines += _table(["policy", "step alone s", "step during generation s", "training slowdown",
                     "generation alone s", "generation during training s", "generation slowdown"], rows)
    lines += ["", "torch: torch's default (every thread asks for every core); one: one thread per role; share: "
              "the cores split between the roles running at that moment (training alone gets all; generation at most "
              "`generation_threads`).", ""]
    return lines


def render_memory(data: dict[str, Any]) -> list[str]:
    r, med = data["ratios"], data["median_mib"]
    lines = ["## Memory (peak RSS, fresh process each)", "",
             f"Adapters: {data['settings']['adapters']}; each configuration loads and generates "
             f"{data['settings']['new_tokens']} tokens; {data['settings']['repeats']} interleaved round(s).", ""]
    lines += _table(["comparison", "ratio of peak RSS", "ratio above the import floor"], [
        ["base + 2 adapters / base alone", _x(r["base+2_over_base"])
         + f" (target <= 1.2: {'met' if data['target_met'] else 'NOT met'})", _x(r["base+2_over_base_above_imports"])],
        ["three merged models / base + 2 adapters", _x(r["merged3_over_base+2"]),
         _x(r["merged3_over_base+2_above_imports"])],
        ["three merged models / base alone", _x(r["merged3_over_base"]), ""],
    ])
    lines += ["", "Median MiB: " + "; ".join(
        f"{c}: peak {_n(m['psutil_peak_rss'], 0)} (kernel ru_maxrss {_n(m['ru_maxrss'], 0)}), after imports "
        f"{_n(m['rss_after_imports'], 0)}" for c, m in med.items()) + ".", ""]
    return lines


def render_startup(data: dict[str, Any]) -> list[str]:
    lines = ["## Start-up (`python app.py` to a served page, base already cached)", ""]
    if data.get("launched"):
        lines.append(f"Median {_n(data['median_seconds_to_page'], 1)} s to HTTP 200 on / "
                     f"({_x(data.get('page_over_imports'))} the {_n(data['median_import_seconds'], 1)} s it takes just "
                     "to import torch, transformers, peft and gradio in a fresh interpreter, measured in the same "
                     "rounds).")
    else:
        reason = data.get("not_launched_reason", "unknown")
        tail = (data["runs"]["app"][-1].get("log_tail") or "").strip().splitlines()[-6:]
        lines.append(f"**The app did not launch**: {reason}. Last lines of its output:")
        lines += ["", "```", *tail, "```"]
        lines.append(f"(Importing torch, transformers, peft and gradio alone takes "
                     f"{_n(data.get('median_import_seconds'), 1)} s here.)")
    lines.append("")
    return lines


def render_math(data: dict[str, Any]) -> list[str]:
    return ["## Loss and value math (slider path)", "",
            f"Every loss decomposition and V construction on {data.get('samples')} cached samples: median "
            f"{_n(data.get('total_ms_median'))} ms per full recompute, worst {_n(data.get('total_ms_max'))} ms "
            f"(target {data.get('target_ms')} ms: {'met' if data.get('within_target') else 'NOT met'}).", ""]


def render_generic(name: str, data: dict[str, Any]) -> list[str]:
    scalars = {k: v for k, v in data.items() if isinstance(v, (int, float, str, bool)) and k not in ("command",)}
    lines = [f"## {name}", ""]
    lines += _table(["key", "value"], [[k, _n(v) if isinstance(v, float) else str(v)] for k, v in scalars.items()])
    lines.append("")
    return lines


def render() -> str:
    status = json.loads(STATUS_FILE.read_text()) if STATUS_FILE.is_file() else {}
    loaded = {name: _load(file) for name, _m, file, _q, _t in BENCHES}
    machine = next((d["machine"] for d in loaded.values() if d and isinstance(d.get("machine"), dict)), {})
    dates = sorted(d.get("date") for d in loaded.values() if d and d.get("date"))
    lines = ["# Benchmarks", "",
             "Generated by `.venv/bin/python -m bench.run_all` from the JSON in `bench/results/` (git-ignored). "
             "The machines this project runs on are small and shared, so every comparison is measured side by side "
             "in one run, contenders interleaved, and reported as a ratio of medians; absolute seconds are given "
             "only for context.", ""]
    if dates:
        lines.append(f"Measured {dates[0]}" + (f" to {dates[-1]}" if dates[-1] != dates[0] else "") + " (UTC).")
        lines.append("")
    lines += ["## Machine", "", *_machine_lines(machine), ""]
    lines += ["## How to read these numbers", "",
              "- The box has two cores shared with other jobs. With two torch threads, a neighbour's load makes "
              "OpenMP threads wait on each other (spin) and the same training step varied threefold between "
              "repetitions in trials; with one thread it is steady. So the model benchmarks run with "
              "`--threads 1` (the same for every contender), and the training table also gives the ratio of CPU "
              "seconds, which a "
              "neighbour's load does not inflate. A run with two threads, when the box was quiet, is shown "
              "under the main training table when present.",
              "- Ratios compare contenders measured in the same process run, interleaved round by round; a ratio "
              "above 1 favours this project's code.", ""]
    renderers = {"train": render_train, "generation": render_generation, "memory": render_memory,
                 "startup": render_startup, "math": render_math, "threads": render_threads,
                 "precision": render_precision}
    order = ["train", "generation", "threads", "precision", "memory", "startup", "math"]
    for name, _module, _file, _q, _t in sorted(BENCHES, key=lambda b: order.index(b[0]) if b[0] in order else 99):
        data = loaded.get(name)
        state = status.get(name, {})
        if state and not state.get("ok", True):
            lines += [f"## {name}", "", f"**Not measured**: {state.get('reason') or 'the script failed'}."]
            if state.get("tail"):
                lines += ["", "```", *state["tail"].strip().splitlines()[-8:], "```"]
            lines.append("")
            continue
        if data is None:
            continue
        try:
            lines += renderers.get(name, lambda d, n=name: render_generic(n, d))(data)
        except (KeyError, TypeError, ValueError) as exc:
            lines += [f"## {name}", "", f"(could not render {name}.json: {exc!r})", ""]
        if name == "train":
            for extra, title in EXTRA_TRAIN_RUNS:
                extra_data = _load(extra)
                if extra_data:
                    try:
                        lines += render_train_extra(extra_data, title)
                    except (KeyError, TypeError, ValueError) as exc:
                        lines += [f"(could not render {extra}: {exc!r})", ""]
    threads = status.get("_run_all", {}).get("threads") or 0
    flag = f" --threads {threads}" if threads else ""
    lines += ["## Reproduce", "", "From the repository root, after `make setup-dev model` (everything offline):", "",
              "```", f"{common.PYTHON} -m bench.run_all{flag}   # all benchmarks as measured here, then this file",
              f"{common.PYTHON} -m bench.run_all --quick    # smoke run, tiny settings"]
    for name, _module, _file, _q, _t in BENCHES:
        data = loaded.get(name)
        command = (data or {}).get("command") or status.get(name, {}).get("command")
        if data and command:
            lines.append(f"{command:<60s} # {name}")
    for extra, _title in EXTRA_TRAIN_RUNS:
        data = _load(extra)
        if data and data.get("command"):
            lines.append(f"{data['command']:<60s} # {extra}")
    lines += [f"{common.PYTHON} -m bench.run_all --render-only  # rebuild this file from bench/results/*.json",
              "```", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny settings for every benchmark (a smoke run)")
    parser.add_argument("--only", help="comma-separated subset: " + ",".join(b[0] for b in BENCHES))
    parser.add_argument("--threads", type=int, default=0, help="torch threads for the model benchmarks (0: default)")
    parser.add_argument("--render-only", action="store_true", help="only rebuild BENCHMARKS.md from bench/results")
    args = parser.parse_args(argv)
    names = [b[0] for b in BENCHES] if not args.only else [n.strip() for n in args.only.split(",")]
    unknown = set(names) - {b[0] for b in BENCHES}
    if unknown:
        parser.error(f"unknown benchmark(s) {sorted(unknown)}")
    if not args.render_only:
        run(names, args.quick, args.threads)
    OUTPUT.write_text(render(), encoding="utf-8")
    print(f"wrote {OUTPUT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
