"""Fine-tuning throughput: this project's DPO/KTO LoRA loop against TRL's DPOTrainer / KTOTrainer (PEFT LoRA).

Identical for every contender: the model (the embedded SmolLM2-135M-Instruct, a fresh copy per run), the rows (a
fixed random sample of the demo set, (warmup + steps) x batch rows, so every run is exactly one epoch over the same
rows), the chat template and tokens (TRL gets conversational rows; tests/objectives/test_trl_parity.py checks the
token ids are ours), LoRA (config.TRAIN.lora), max length, batch size, beta, learning rate, optimizer steps and
device/precision.

Contenders:
  ours         playground.training.loop.train: reference log-probs precomputed once, bf16 autocast where the CPU has it.
  trl_fast     the fastest TRL settings found: precompute_ref_log_probs=True, gradient_checkpointing=False,
               bf16=True (autocast), no dataloader workers, sequential sampling over the rows pre-ordered into OUR
               length-bucketed batches (what group_by_length does, with the identical batches), logging once.
               (padding_free is accepted but disabled by TRL 1.16 itself; torch.compile is left out: compiling on a
               small CPU takes longer than the whole run, and every new batch width recompiles.)
  trl_default  TRL's defaults with only the shared settings above: reference log-probs recomputed every step with the
               adapter disabled, gradient checkpointing on, bf16=True (TRL's default), random (DPO) / sequential
               (KTO, required) sampling.

Measured per run: steady-state throughput (rows/s over the steps after the warm-up steps), loop throughput (all
steps), reference precompute seconds, end-to-end seconds (tokenisation + LoRA attach + precompute + all steps; the
model copy is excluded for everyone). Contenders are interleaved (ours, trl_fast, trl_default, ours, trl_fast, ...)
and ratios are of medians.

Model-FLOPs utilisation (MFU): model FLOPs of the steady-state steps / their time / the measured GEMM peak.
Per trained sequence of n = p + r tokens (p prompt, r response):
    (4 N + 6 N_lora) n  +  3 A(n)  +  4 V d r
  4 N: forward 2N plus the activation-gradient backward 2N through the frozen linear weights (no weight gradient);
  6 N_lora: LoRA's forward 2, input-gradient 2 and weight-gradient 2 per parameter; A(n) = 4 L d_attn n(n+1)/2, the
  causal attention forward (scores and values), x3 with its backward; 4 V d r: the LM head at the r response positions
  only, forward and input-gradient. A no-grad sequence (KTO's mismatched KL pair) counts (2 N + 2 N_lora) n + A(n) +
  2 V d r. N counts the decoder's linear weights (embeddings excluded; the tied LM head is the V d term). Reference
  log-probs are not model FLOPs (they can be precomputed); the same nominal sequences are counted for every
  contender, so a loop that shares a prompt between chosen and rejected does fewer FLOPs than it is credited with:
  its MFU is an effective one.

    .venv/bin/python -m bench.bench_train [--quick] [--device cpu|cuda] [--threads N] [--steps 5] [--warmup 1]
        [--batch-size 8] [--repeats 2]
"""

from __future__ import annotations

import copy
import dataclasses
import gc
import logging
import os
import sys
import time
import uuid
import warnings
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common  # noqa: E402
from playground.engine import threads  # noqa: E402
from playground.engine.base_model import load_base_model  # noqa: E402
from playground.engine.device import pick_device  # noqa: E402
from playground.feedback import read_feedback  # noqa: E402
from playground.objectives.kto import mismatched_pairs  # noqa: E402
from playground.training.data import plan_batches, tokenize_frame  # noqa: E402
from playground.training.loop import train  # noqa: E402

PAIRED_FILE = common.REPO_ROOT / "data" / "demo_pairs_train.csv"
UNPAIRED_FILE = common.REPO_ROOT / "data" / "demo_unpaired_train.csv"


# --------------------------------------------------------------------------------------------------------------------
# Set-up shared by every contender


@dataclasses.dataclass
class Setup:
    method: str
    frame: Any  # pandas rows, the identical rows for every contender
    train: Any  # config.TrainConfig
    device: Any  # DeviceChoice
    base: Any  # pristine base model; each run trains a deep copy
    tokenizer: Any
    plan: list[list[int]]  # our batches (row indices into frame), given to trl_fast as its batch order
    step_rows: list[int]  # rows per step
    step_flops: list[float]  # model FLOPs per step (see the module docstring)
    step_tokens: list[int]  # nominal tokens (prompt + response, no padding) per step, trained and KL sequences


def read_frame(method: str, rows: int, seed: int):

    path = PAIRED_FILE if method == "dpo" else UNPAIRED_FILE
    report = read_feedback(path)
    if not report.trainable:
        raise SystemExit(f"{path} is not trainable: {report.issues[:3]}")
    frame = report.data
    if rows > len(frame):
        raise SystemExit(f"asked for {rows} rows but {path} has {len(frame)}")
    sample = frame.sample(n=rows, random_state=seed).reset_index(drop=True)
    keep = ["prompt", "chosen", "rejected"] if method == "dpo" else ["prompt", "completion", "label"]
    return sample[keep]


def model_dims(model) -> dict[str, int]:
    """Linear weights of the decoder (N), vocabulary, hidden size, layers and attention width for the FLOPs formula."""
    import torch

    cfg = model.config
    linear = sum(m.weight.numel() for name, m in model.named_modules()
                 if isinstance(m, torch.nn.Linear) and ".layers." in f".{name}")
    heads = cfg.num_attention_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
    return {"decoder_linear_params": linear, "vocab": cfg.vocab_size, "hidden": cfg.hidden_size,
            "layers": cfg.num_hidden_layers, "attention_width": heads * head_dim}


def lora_params(dims: dict[str, int], model, lora) -> int:
    """Trainable LoRA parameters: r x (in + out) for each targeted linear of the decoder."""
    import torch

    total = 0
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and name.rsplit(".", 1)[-1] in lora.target_modules:
            total += lora.r * (module.in_features + module.out_features)
    return total


def sequence_flops(dims, n_lora: int, prompt: int, response: int, trained: bool) -> float:
    n = prompt + response
    attention = 4 * dims["layers"] * dims["attention_width"] * n * (n + 1) / 2
    head = 2 * dims["vocab"] * dims["hidden"] * response
    if trained:
        return (4 * dims["decoder_linear_params"] + 6 * n_lora) * n + 3 * attention + 2 * head
    return (2 * dims["decoder_linear_params"] + 2 * n_lora) * n + attention + head


def make_setup(method: str, args, device, base, tokenizer) -> Setup:
    from playground import config

    rows = (args.warmup + args.steps) * args.batch_size
    frame = read_frame(method, rows, args.seed)
    loss = dataclasses.replace(config.TRAIN.loss, beta=args.beta)
    train = dataclasses.replace(config.TRAIN, method=method, steps=args.warmup + args.steps,
                                batch_size=args.batch_size, max_length=args.max_length, seed=args.seed,
                                warmup_ratio=0.0, loss=loss)
    data = tokenize_frame(tokenizer, frame, method, train.max_length)
    if method == "dpo":
        lengths = [len(c.input_ids) + len(r.input_ids) for c, r in zip(data.chosen, data.rejected)]
    else:
        lengths = [len(s.input_ids) for s in data.samples]
    # The same call train() makes, so trl_fast can be given our exact batches.
    plan = plan_batches(lengths, train.batch_size, train.steps, train.seed,
                                 bucket_batches=8 if method == "dpo" else 1)
    assert sorted(i for batch in plan for i in batch) == list(range(rows)), "the plan must be one epoch"
    dims = model_dims(base)
    n_lora = lora_params(dims, base, train.lora)
    step_flops, step_tokens = [], []
    for batch in plan:
        flops, tokens = 0.0, 0
        if method == "dpo":
            for i in batch:
                for seq in (data.chosen[i], data.rejected[i]):
                    flops += sequence_flops(dims, n_lora, len(seq.prompt_ids), len(seq.response_ids), True)
                    tokens += len(seq.input_ids)
        else:
            partner = mismatched_pairs(len(batch)).tolist()
            for k, i in enumerate(batch):
                seq = data.samples[i]
                kl_response = len(data.samples[batch[partner[k]]].response_ids)
                flops += sequence_flops(dims, n_lora, len(seq.prompt_ids), len(seq.response_ids), True)
                flops += sequence_flops(dims, n_lora, len(seq.prompt_ids), kl_response, False)
                tokens += len(seq.input_ids) + len(seq.prompt_ids) + kl_response
        step_flops.append(flops)
        step_tokens.append(tokens)
    return Setup(method, frame, train, device, base, tokenizer, plan, [len(b) for b in plan], step_flops,
                 step_tokens)


def summarise(setup: Setup, warmup: int, step_times: list[float], started: float, finished: float,
              precompute_s: float | None, loop_start: float, step_cpu: list[float]) -> dict[str, Any]:
    """Throughputs from the per-step end timestamps (``step_times``: wall clock, ``step_cpu``: this process's CPU
    time) of one run; ``loop_start``: the first step's start (after set-up and precompute)."""
    steps = len(step_times)
    cpu_s = step_cpu[-1] - step_cpu[warmup - 1] if warmup else None
    measured = slice(warmup, steps)
    steady_s = step_times[-1] - (step_times[warmup - 1] if warmup else loop_start)
    first_step_s = step_times[0] - loop_start
    loop_s = step_times[-1] - loop_start
    rows = sum(setup.step_rows[measured])
    return {
        "steps": steps,
        "steady_seconds": steady_s,
        "steady_rows_per_s": rows / steady_s,
        "steady_tokens_per_s": sum(setup.step_tokens[measured]) / steady_s,
        "steady_model_flops_per_s": sum(setup.step_flops[measured]) / steady_s,
        # CPU seconds of this process over the same steps: with one torch thread, a measure of the work done that
        # time spent descheduled by neighbours does not inflate (with more threads it counts spin-waiting too)
        "steady_cpu_seconds": cpu_s,
        "steady_rows_per_cpu_s": rows / cpu_s if cpu_s else None,
        "loop_rows_per_s": sum(setup.step_rows) / loop_s,
        "first_step_seconds_estimate": first_step_s,
        "precompute_seconds": precompute_s,
        "end_to_end_seconds": finished - started,
        "end_to_end_rows_per_s": sum(setup.step_rows) / (finished - started),
        "step_end_times": [round(t - started, 3) for t in step_times],
    }


def _sync(device) -> None:
    import torch

    if device.device.type == "cuda":
        torch.cuda.synchronize()


# --------------------------------------------------------------------------------------------------------------------
# Contenders


def run_ours(setup: Setup, warmup: int) -> dict[str, Any]:

    model = copy.deepcopy(setup.base)
    stamps: list[float] = []
    cpu: list[float] = []
    phases: dict[str, float] = {}

    def on_step(_metrics) -> None:
        _sync(setup.device)
        stamps.append(time.perf_counter())
        cpu.append(time.process_time())

    def on_phase(message: str) -> None:
        _sync(setup.device)
        phases[message.split(" ")[0]] = time.perf_counter()

    started = time.perf_counter()
    result = train(model, setup.tokenizer, setup.frame, setup.train, device=setup.device,
                            callback=on_step, on_phase=on_phase)
    _sync(setup.device)
    finished = time.perf_counter()
    assert len(result.history) == setup.train.steps
    precompute = phases.get("Training", finished) - phases.get("Computing", started)
    out = summarise(setup, warmup, stamps, started, finished, precompute, phases.get("Training", started), cpu)
    out["final_loss"] = result.history[-1]["loss"]
    del model, result
    gc.collect()
    return out


def trl_rows(setup: Setup, order: list[int]) -> list[dict[str, Any]]:
    """Conversational rows (TRL then applies the chat template, as we do), with a per-run column that gives the
    dataset a new fingerprint: TRL caches precomputed reference log-probs by fingerprint and would skip the work."""
    tag = uuid.uuid4().hex
    rows = []
    for i in order:
        row = setup.frame.iloc[i]
        prompt = [{"role": "user", "content": row["prompt"]}]
        if setup.method == "dpo":
            rows.append({"prompt": prompt, "chosen": [{"role": "assistant", "content": row["chosen"]}],
                         "rejected": [{"role": "assistant", "content": row["rejected"]}], "bench_run": tag})
        else:
            rows.append({"prompt": prompt, "completion": [{"role": "assistant", "content": row["completion"]}],
                         "label": bool(row["label"]), "bench_run": tag})
    return rows


def run_trl(setup: Setup, warmup: int, fast: bool, out_dir: Path) -> dict[str, Any]:
    import datasets
    import torch
    from peft import LoraConfig
    from transformers import TrainerCallback

    if setup.method == "dpo":
        from trl import DPOConfig as Config
        from trl import DPOTrainer as Trainer
    else:
        from trl import KTOConfig as Config
        from trl import KTOTrainer as Trainer

    timings: dict[str, float] = {}

    class Timed(Trainer):
        def _precompute_ref_logps(self, *a, **kw):  # noqa: D401 - timing wrapper
            started = time.perf_counter()
            try:
                return super()._precompute_ref_logps(*a, **kw)
            finally:
                _sync(setup.device)
                timings["precompute"] = timings.get("precompute", 0.0) + time.perf_counter() - started

    stamps: list[float] = []
    cpu: list[float] = []

    class StepClock(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            _sync(setup.device)
            timings["loop_start"] = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            _sync(setup.device)
            stamps.append(time.perf_counter())
            cpu.append(time.process_time())

    train, lora = setup.train, setup.train.lora
    on_cpu = setup.device.device.type == "cpu"
    bf16 = setup.device.autocast_dtype == torch.bfloat16 or setup.device.weight_dtype == torch.bfloat16
    shared = dict(output_dir=str(out_dir), per_device_train_batch_size=train.batch_size, max_steps=train.steps,
                  learning_rate=train.learning_rate, max_grad_norm=train.max_grad_norm, weight_decay=0.0,
                  beta=train.loss.beta, max_length=train.max_length, seed=train.seed, report_to="none",
                  save_strategy="no", disable_tqdm=True, use_cpu=on_cpu)
    if fast:
        order = [i for batch in setup.plan for i in batch]
        extra = dict(precompute_ref_log_probs=True, gradient_checkpointing=False, bf16=bf16,
                     dataloader_num_workers=0, logging_steps=train.steps, train_sampling_strategy="sequential")
        if setup.method == "dpo":
            extra["precompute_ref_batch_size"] = 2 * train.batch_size
        else:
            extra["precompute_ref_batch_size"] = 2 * train.batch_size
    else:
        order = list(range(len(setup.frame)))
        extra = {}
    args = Config(**shared, **extra)
    peft_config = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                             target_modules=list(lora.target_modules), task_type="CAUSAL_LM", bias="none")
    resolved = {"bf16": args.bf16, "gradient_checkpointing": args.gradient_checkpointing,
                "precompute_ref_log_probs": args.precompute_ref_log_probs,
                "train_sampling_strategy": args.train_sampling_strategy, "optim": str(args.optim),
                "dataloader_num_workers": args.dataloader_num_workers, "padding_free": getattr(args, "padding_free",
                                                                                              None),
                "logging_steps": args.logging_steps}
    model = copy.deepcopy(setup.base)
    tokenizer = copy.deepcopy(setup.tokenizer)
    started = time.perf_counter()
    dataset = datasets.Dataset.from_list(trl_rows(setup, order))
    trainer = Timed(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                    peft_config=peft_config, callbacks=[StepClock()])
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(PrinterCallback)  # console output only; nothing else listens
    trainer.remove_callback(ProgressCallback)
    trainer.train()
    _sync(setup.device)
    finished = time.perf_counter()
    assert len(stamps) == train.steps, f"TRL ran {len(stamps)} steps, expected {train.steps}"
    out = summarise(setup, warmup, stamps, started, finished, timings.get("precompute"), timings["loop_start"], cpu)
    out["resolved_args"] = resolved
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    out["final_loss"] = losses[-1] if losses else None
    del trainer, model, dataset
    gc.collect()
    return out


# --------------------------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = common.base_parser(__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--methods", default="dpo,kto", help="comma-separated: dpo,kto")
    parser.add_argument("--steps", type=int, default=5, help="measured optimizer steps (after the warm-up)")
    parser.add_argument("--warmup", type=int, default=1, help="warm-up steps, excluded from steady throughput")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--beta", type=float, default=0.1)
    parser.add_argument("--repeats", type=int, default=2, help="rounds of ours and trl_fast (interleaved)")
    parser.add_argument("--default-repeats", type=int, default=1, help="rounds of trl_default (slow; context only)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.warmup, args.batch_size, args.repeats, args.default_repeats = 2, 1, 2, 1, 1
        args.max_length = min(args.max_length, 128)

    import tempfile

    import torch


    warnings.filterwarnings("ignore")
    logging.getLogger("transformers").setLevel(logging.ERROR)
    os.environ.setdefault("TQDM_DISABLE", "1")
    try:
        import datasets

        datasets.disable_progress_bars()
        datasets.logging.set_verbosity_error()
    except Exception:  # noqa: BLE001
        pass
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
    except Exception:  # noqa: BLE001
        pass
    if args.threads:
        threads.limit(args.threads)

    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device here")
    device = pick_device(args.device)
    source = common.embedded_source()
    base, tokenizer = load_base_model(source, device)
    base.train(False)
    peak_dtypes = ["bfloat16", "float32"]
    gemm: dict[str, list[dict]] = {d: [] for d in peak_dtypes}

    results: dict[str, Any] = {"settings": {**vars(args), "device_choice": device.describe()}, "methods": {}}
    started_all = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        for method in [m.strip() for m in args.methods.split(",") if m.strip()]:
            setup = make_setup(method, args, device, base, tokenizer)
            print(f"{method}: {len(setup.frame)} rows, {len(setup.plan)} steps of {args.batch_size}, "
                  f"{device.describe()}, torch threads {torch.get_num_threads()}")
            contenders = {
                "ours": lambda s=setup: run_ours(s, args.warmup),
                "trl_fast": lambda s=setup: run_trl(s, args.warmup, True, Path(tmp) / "fast"),
                "trl_default": lambda s=setup: run_trl(s, args.warmup, False, Path(tmp) / "default"),
            }
            runs: dict[str, list[dict]] = {name: [] for name in contenders}
            rounds = max(args.repeats, args.default_repeats)
            for round_ in range(rounds):
                for dtype in peak_dtypes:
                    gemm[dtype].append(common.gemm_peak(dtype, device=args.device))
                for name, run in contenders.items():
                    limit = args.default_repeats if name == "trl_default" else args.repeats
                    if round_ >= limit:
                        continue
                    t0 = time.perf_counter()
                    runs[name].append(run())
                    r = runs[name][-1]
                    print(f"  round {round_ + 1} {name}: {r['steady_rows_per_s']:.3f} rows/s steady, "
                          f"precompute {r['precompute_seconds'] or 0:.1f} s, "
                          f"end-to-end {r['end_to_end_seconds']:.1f} s "
                          f"(wall {time.perf_counter() - t0:.1f} s, load {common.load_average()})")
            results["methods"][method] = {
                "rows": len(setup.frame),
                "plan_rows_per_step": setup.step_rows,
                "plan_tokens_per_step": setup.step_tokens,
                "plan_model_flops_per_step": setup.step_flops,
                "runs": runs,
            }
    peak = {d: {"median_gflops": common.median([g["median_gflops"] for g in gemm[d]]), "runs": gemm[d]}
            for d in peak_dtypes}
    results["gemm_peak"] = peak
    results["model_dims"] = model_dims(base)
    results["lora_params"] = lora_params(results["model_dims"], base, setup.train.lora)
    summary = {}
    for method, block in results["methods"].items():
        runs = block["runs"]
        med = {name: {key: common.median([r[key] for r in rs if r.get(key) is not None])
                      for key in ("steady_rows_per_s", "loop_rows_per_s", "end_to_end_seconds",
                                  "precompute_seconds", "steady_model_flops_per_s", "end_to_end_rows_per_s",
                                  "steady_rows_per_cpu_s")}
               for name, rs in runs.items() if rs}
        for m in med.values():
            flops = m["steady_model_flops_per_s"]
            m["mfu_vs_bf16_peak"] = flops / (peak["bfloat16"]["median_gflops"] * 1e9)
            m["mfu_vs_fp32_peak"] = flops / (peak["float32"]["median_gflops"] * 1e9)
        ours = med.get("ours", {})
        ratios = {}
        for other in ("trl_fast", "trl_default"):
            if other in med and ours:
                ratios[other] = {
                    "steady_throughput": common.ratio(ours["steady_rows_per_s"], med[other]["steady_rows_per_s"]),
                    "loop_throughput": common.ratio(ours["loop_rows_per_s"], med[other]["loop_rows_per_s"]),
                    "end_to_end": common.ratio(med[other]["end_to_end_seconds"], ours["end_to_end_seconds"]),
                    "steady_cpu_time": common.ratio(ours["steady_rows_per_cpu_s"], med[other]["steady_rows_per_cpu_s"]),
                }
        summary[method] = {"medians": med, "ours_speedup_over": ratios,
                           "unit": "pairs/s" if method == "dpo" else "samples/s"}
        block["summary"] = summary[method]
        print(f"{method}: ours/trl_fast steady {common.fmt_ratio(ratios.get('trl_fast', {}).get('steady_throughput'))}"
              f", end-to-end {common.fmt_ratio(ratios.get('trl_fast', {}).get('end_to_end'))}; ours/trl_default "
              f"steady {common.fmt_ratio(ratios.get('trl_default', {}).get('steady_throughput'))}")
    results["summary"] = summary
    results["target"] = "ours >= 2x trl_fast steady throughput, for DPO and for KTO"
    results["wall_seconds"] = time.perf_counter() - started_all
    common.write_result("train", results, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
