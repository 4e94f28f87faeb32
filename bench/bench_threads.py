"""Thread policy: a training and a generation running at once on this machine, under each ``config.THREADS`` policy.

The training thread runs LoRA forward + backward passes of the base (batch 8 x 128 tokens, the work of a training
step) and calls ``threads.rebalance`` before each, as the training loop does; the generation side is a 3-way
request (base + dpo + kto, 32 tokens) through the engine's decoder thread. For each policy (torch = torch's
default, one = 1 thread each, share = the cores split between what runs, generation capped at
``config.THREADS.generation_threads``) it measures, interleaved by round:
training step alone, generation alone, and both at once (step time while a generation runs, and the generation's
time while steps run). Reported: slowdown together / alone for each side, per policy (lower is better).

    .venv/bin/python -m bench.bench_threads [--quick] [--repeats 3]
"""

from __future__ import annotations

import dataclasses
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common  # noqa: E402
from playground import config  # noqa: E402
from playground.engine import threads  # noqa: E402
from playground.engine.base_model import load_base_model  # noqa: E402
from playground.engine.decoding import DecodeRequest  # noqa: E402
from playground.engine.device import pick_device  # noqa: E402
from playground.engine.engine import Engine  # noqa: E402
from playground.engine.generation import _eos_ids  # noqa: E402
from playground.engine.templating import prompt_ids  # noqa: E402

POLICIES = ("torch", "one", "share")


def main(argv: list[str] | None = None) -> int:
    parser = common.base_parser(__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=2, help="training passes per measurement")
    parser.add_argument("--new-tokens", type=int, default=32)
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats, args.steps, args.new_tokens = 1, 1, 4

    import torch
    from peft import LoraConfig, get_peft_model

    warnings.filterwarnings("ignore")
    device = pick_device("cpu")
    source = common.embedded_source()
    served, tokenizer = load_base_model(source, device)
    engine = Engine(served, tokenizer, device, source)
    trained, _ = load_base_model(source, device)
    lora = config.TRAIN.lora
    trainee = get_peft_model(trained, LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=0.0,
                                                 target_modules=list(lora.target_modules), task_type="CAUSAL_LM"))
    trainee.train()
    batch = torch.randint(0, len(tokenizer), (8, 128), generator=torch.Generator().manual_seed(0))
    ids = prompt_ids(tokenizer, common.heldout_prompt(0))
    eos = _eos_ids(engine, tokenizer)
    n = args.new_tokens
    settings = config.GenerationConfig(max_new_tokens=n, do_sample=False)

    def train_steps(stop: threading.Event | None = None) -> list[float]:
        """Step times of ``args.steps`` passes (or until ``stop``), in the calling thread as the training role."""
        times = []
        with threads.for_role("training"):
            while len(times) < args.steps or (stop is not None and not stop.is_set()):
                threads.rebalance()
                started = time.perf_counter()
                with device.autocast():
                    loss = trainee(input_ids=batch, labels=batch).loss
                loss.backward()
                trainee.zero_grad(set_to_none=True)
                times.append(time.perf_counter() - started)
                if stop is not None and stop.is_set():
                    break
        return times

    def generation() -> float:
        steps: list = []
        request = DecodeRequest(ids, [config.PEFT_BASE_ADAPTER, "dpo", "kto"], settings, eos, emit=steps.append,
                                min_new_tokens=n)
        started = time.perf_counter()
        engine.decoder.submit(request)
        request.finished.wait()
        assert request.error is None and len(steps) == n
        return time.perf_counter() - started

    def together() -> dict[str, float]:
        stop = threading.Event()
        box: dict = {}
        trainer = threading.Thread(target=lambda: box.update(steps=train_steps(stop)))
        trainer.start()
        time.sleep(0.5)  # the first step is under way
        generated = generation()
        stop.set()
        trainer.join()
        return {"generation": generated, "step": common.median(box["steps"])}

    with tempfile.TemporaryDirectory(prefix="bench-threads-") as tmp:
        root, adapters = common.adapter_root(Path(tmp), None)
        engine.attach_all(root)
        generation()
        train_steps()
        results: dict[str, dict[str, list[float]]] = {p: {"step_alone": [], "generation_alone": [],
                                                          "step_together": [], "generation_together": []}
                                                      for p in POLICIES}
        for round_ in range(args.repeats):
            for policy in POLICIES:
                config.THREADS = dataclasses.replace(config.THREADS, policy=policy)
                results[policy]["step_alone"].append(common.median(train_steps()))
                results[policy]["generation_alone"].append(generation())
                both = together()
                results[policy]["step_together"].append(both["step"])
                results[policy]["generation_together"].append(both["generation"])
                print(f"  round {round_ + 1}/{args.repeats} {policy}: " + ", ".join(
                    f"{k} {v[-1]:.2f} s" for k, v in results[policy].items()))
    med = {p: {k: common.median(v) for k, v in r.items()} for p, r in results.items()}
    slowdown = {p: {"training": common.ratio(m["step_together"], m["step_alone"]),
                    "generation": common.ratio(m["generation_together"], m["generation_alone"])}
                for p, m in med.items()}
    versus_torch = {p: {"step_together": common.ratio(med["torch"]["step_together"], m["step_together"]),
                        "generation_together": common.ratio(med["torch"]["generation_together"],
                                                            m["generation_together"]),
                        "generation_alone": common.ratio(med["torch"]["generation_alone"], m["generation_alone"]),
                        "step_alone": common.ratio(med["torch"]["step_alone"], m["step_alone"])}
                    for p, m in med.items()}
    for p in POLICIES:
        print(f"{p:6s} alone: step {med[p]['step_alone']:.2f} s, generation {med[p]['generation_alone']:.2f} s; "
              f"together: step {med[p]['step_together']:.2f} s, generation {med[p]['generation_together']:.2f} s")
    result = {"settings": {**vars(args), "cores": threads.usable_cores(), "adapters": adapters,
                           "policies": POLICIES, "default_policy": config.ThreadPolicy().policy},
              "seconds": results, "median_seconds": med, "slowdown_together_over_alone": slowdown,
              "torch_over_policy": versus_torch}
    common.write_result("threads", result, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
