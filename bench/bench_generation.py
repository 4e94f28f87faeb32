"""Side-by-side generation: Base + DPO + KTO (and 8 variants) in one batch against one model alone; many users.

Wall time for N new tokens (greedy, end-of-sequence suppressed for N steps so every row runs exactly N) of one
held-out prompt:

  single        a plain base model (no PEFT wrapper), one row, transformers' generate: the cost of "one model"
  peft3         the engine, three rows [__base__, dpo, kto] through generate with PEFT's ``adapter_names=``
                (the path before the stacked LoRA; kept for the record)
  batched3      the engine, three rows through the batch decoder with the stacked LoRA (``engine.decoding``,
                ``engine.multi_lora``): what the app does
  batched8      the same with 8 variants (base + 7 adapters: the shipped two and copies of them)
  stream3       playground.engine.generation.generate for the three variants (the decoder thread, streaming,
                text decoding, EOS handling), for context: rows may stop early at EOS, so its token count is given
  alone3        one 3-way request through the engine's decoder thread (prompt 0)
  concurrent4   four 3-way requests (prompts 0-3) submitted at once from four threads: until all are done

Targets: batched3 <= 1.2 x single, batched8 <= 1.6 x single, concurrent4 <= 1.6 x alone3. Contenders interleave
(ABC... ABC...); ratios are of medians. The adapters are the shipped ones from checkpoints/ when present, else random
LoRA adapters of the shipped configuration.

    .venv/bin/python -m bench.bench_generation [--quick] [--new-tokens 64] [--repeats 3] [--threads 1]
"""

from __future__ import annotations

import dataclasses
import shutil
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common  # noqa: E402
from playground.engine import threads  # noqa: E402
from playground.engine.base_model import load_base_model  # noqa: E402
from playground.engine.decoding import DecodeRequest, decode_together  # noqa: E402
from playground.engine.device import pick_device  # noqa: E402
from playground.engine.engine import Engine  # noqa: E402
from playground.engine.generation import _eos_ids, generate  # noqa: E402
from playground.engine.templating import prompt_ids  # noqa: E402

TARGETS = {"batched3_over_single": 1.2, "batched8_over_single": 1.6, "concurrent4_over_alone3": 1.6}


def main(argv: list[str] | None = None) -> int:
    parser = common.base_parser(__doc__.split("\n")[0])
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default=None, help="cpu | cuda (default: pick_device)")
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args(argv)
    if args.quick:
        args.new_tokens, args.repeats = 8, 1

    import torch

    from playground import config

    warnings.filterwarnings("ignore")
    if args.threads:
        threads.limit(args.threads)
    device = pick_device(args.device)
    source = common.embedded_source()
    plain, tokenizer = load_base_model(source, device)
    served, _ = load_base_model(source, device)
    engine = Engine(served, tokenizer, device, source)
    n = args.new_tokens
    prompts = [common.heldout_prompt(i) for i in range(4)]
    with tempfile.TemporaryDirectory(prefix="bench-gen-") as tmp:
        root, adapters = common.adapter_root(Path(tmp), plain)
        extra = Path(tmp) / "more"
        for i in range(5):  # 8 variants: base, dpo, kto and five copies (the stacked layers do not deduplicate)
            shutil.copytree(root / ("dpo", "kto")[i % 2], extra / f"copy{i + 1}")
        skipped = engine.attach_all(root, extra)
        if skipped or len(engine.adapters) != 7:
            raise SystemExit(f"could not attach the adapters: {skipped}")
        ids = [prompt_ids(tokenizer, p) for p in prompts]
        eos = _eos_ids(engine, tokenizer)
        settings = config.GenerationConfig(max_new_tokens=n, do_sample=False)
        three = [config.PEFT_BASE_ADAPTER, "dpo", "kto"]
        eight = [config.PEFT_BASE_ADAPTER, *engine.adapters]
        hf_kwargs = dict(max_new_tokens=n, min_new_tokens=n, do_sample=False, temperature=None, top_p=None,
                         top_k=None, pad_token_id=tokenizer.pad_token_id, eos_token_id=eos)

        def timed(fn) -> float:
            if device.device.type == "cuda":
                torch.cuda.synchronize()
            started = time.perf_counter()
            fn()
            if device.device.type == "cuda":
                torch.cuda.synchronize()
            return time.perf_counter() - started

        def request(names, prompt=0) -> tuple[DecodeRequest, list]:
            steps: list = []
            return DecodeRequest(ids[prompt], names, settings, eos, emit=steps.append, min_new_tokens=n), steps

        def hf(model, rows: int, **kwargs):
            input_ids = torch.tensor([ids[0]] * rows, dtype=torch.long, device=device.device)
            with torch.inference_mode():
                out = model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), **hf_kwargs,
                                     **kwargs)
            assert out.shape == (rows, len(ids[0]) + n), out.shape

        def single():
            hf(plain, 1)

        def peft3():
            with engine.lock:
                hf(engine.model, 3, adapter_names=three)

        def batched(names):
            def run():
                req, steps = request(names)
                with engine.lock, torch.inference_mode():
                    decode_together(engine.model, [req], tokenizer.pad_token_id, device.device)
                assert len(steps) == n and req.error is None
            return run

        stream_tokens: list[int] = []

        def stream3():
            outputs = generate(engine, prompts[0], ["base", "dpo", "kto"], settings)
            stream_tokens.append(max(len(o.token_ids) for o in outputs.values()))

        def through_decoder(count: int):
            def run():
                made = [request(three, i) for i in range(count)]
                senders = [threading.Thread(target=engine.decoder.submit, args=(req,)) for req, _ in made]
                for thread in senders:
                    thread.start()
                for req, steps in made:
                    req.finished.wait()
                    assert len(steps) == n and req.error is None
            return run

        contenders = {"single": single, "peft3": peft3, "batched3": batched(three), "batched8": batched(eight),
                      "stream3": stream3, "alone3": through_decoder(1), "concurrent4": through_decoder(4)}
        single()  # warm-up: first calls allocate and pick kernels
        batched(eight)()
        times = common.interleave({k: (lambda f=f: timed(f)) for k, f in contenders.items()}, args.repeats)
    med = {k: common.median(v) for k, v in times.items()}
    ratios = {
        "batched3_over_single": common.ratio(med["batched3"], med["single"]),
        "batched8_over_single": common.ratio(med["batched8"], med["single"]),
        "peft3_over_single": common.ratio(med["peft3"], med["single"]),
        "peft3_over_batched3": common.ratio(med["peft3"], med["batched3"]),
        "concurrent4_over_alone3": common.ratio(med["concurrent4"], med["alone3"]),
        "alone3_over_batched3": common.ratio(med["alone3"], med["batched3"]),
    }
    rows = {"single": 1, "peft3": 3, "batched3": 3, "batched8": 8, "alone3": 3, "concurrent4": 12}
    result = {
        "settings": {**vars(args), "device_choice": device.describe(), "prompt": prompts[0],
                     "prompt_tokens": [len(i) for i in ids], "adapters": adapters,
                     "batching": dataclasses.asdict(config.BATCHING)},
        "seconds": times,
        "median_seconds": med,
        "tokens_per_s": {k: rows[k] * n / v for k, v in med.items() if k in rows},
        "stream3_tokens": stream_tokens,
        "ratios": ratios,
        "targets": TARGETS,
        "targets_met": {k: ratios[k] <= v for k, v in TARGETS.items()},
        "target_met": all(ratios[k] <= v for k, v in TARGETS.items()),
    }
    for k, v in med.items():
        print(f"{k:12s} median {v:.2f} s")
    for k, v in ratios.items():
        print(f"{k:26s} {v:.2f}x" + (f" (target <= {TARGETS[k]})" if k in TARGETS else ""))
    common.write_result("generation", result, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
