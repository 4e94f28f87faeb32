"""Side-by-side generation: Base + DPO + KTO in one mixed-adapter batch against one model alone and three in a row.

Wall time for N new tokens (greedy, ``min_new_tokens=N`` so every row runs exactly N steps) of one held-out prompt:

  single        a plain base model (no PEFT wrapper), one row: the cost of "one model"
  engine_base   the serving engine (base with both adapters attached), one row on ``__base__``
  batched3      the engine, three rows [__base__, dpo, kto] in one pass (PEFT ``adapter_names=``): what the app does
  sequential3   the engine, the three variants one after another, one row each
  stream3       playground.engine.generation.generate for the three variants (streaming, decoding, EOS handling), for
                context: rows may stop early at EOS, so its token count is reported beside it

Target: batched3 <= 1.3 x single. Contenders interleave (ABCDE ABCDE ...); ratios are of medians. The adapters are
the shipped ones from checkpoints/ when present, else random LoRA adapters of the shipped configuration.

    .venv/bin/python -m bench.bench_generation [--quick] [--new-tokens 64] [--repeats 5]
"""

from __future__ import annotations

import dataclasses
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common  # noqa: E402
from playground.engine.base_model import load_base_model  # noqa: E402
from playground.engine.device import pick_device  # noqa: E402
from playground.engine.engine import Engine  # noqa: E402
from playground.engine.generation import _eos_ids, generate  # noqa: E402
from playground.engine.templating import prompt_ids  # noqa: E402

TARGET = 1.3


def main(argv: list[str] | None = None) -> int:
    parser = common.base_parser(__doc__.split("\n")[0])
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default=None, help="cpu | cuda (default: pick_device)")
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args(argv)
    if args.quick:
        args.new_tokens, args.repeats = 8, 1

    import torch

    from playground import config

    warnings.filterwarnings("ignore")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    source = common.embedded_source()
    plain, tokenizer = load_base_model(source, device)
    served, _ = load_base_model(source, device)
    engine = Engine(served, tokenizer, device, source)
    prompt = common.heldout_prompt(0)
    n = args.new_tokens
    with tempfile.TemporaryDirectory(prefix="bench-gen-") as tmp:
        root, adapters = common.adapter_root(Path(tmp), plain)
        skipped = engine.attach_all(root)
        if skipped or sorted(engine.adapters) != ["dpo", "kto"]:
            raise SystemExit(f"could not attach the adapters: {skipped}")
        ids = prompt_ids(tokenizer, prompt)
        eos = _eos_ids(engine, tokenizer)
        common_kwargs = dict(max_new_tokens=n, min_new_tokens=n, do_sample=False, temperature=None, top_p=None,
                             top_k=None, pad_token_id=tokenizer.pad_token_id, eos_token_id=eos)

        def inputs(rows: int):
            input_ids = torch.tensor([ids] * rows, dtype=torch.long, device=device.device)
            return dict(input_ids=input_ids, attention_mask=torch.ones_like(input_ids))

        def timed(fn) -> float:
            if device.device.type == "cuda":
                torch.cuda.synchronize()
            started = time.perf_counter()
            fn()
            if device.device.type == "cuda":
                torch.cuda.synchronize()
            return time.perf_counter() - started

        def check(output, rows: int) -> None:
            assert output.shape == (rows, len(ids) + n), output.shape

        def single():
            with torch.inference_mode():
                check(plain.generate(**inputs(1), **common_kwargs), 1)

        def engine_base():
            with engine.lock, torch.inference_mode():
                check(engine.model.generate(**inputs(1), adapter_names=[config.PEFT_BASE_ADAPTER], **common_kwargs), 1)

        def batched3():
            with engine.lock, torch.inference_mode():
                out = engine.model.generate(**inputs(3), adapter_names=[config.PEFT_BASE_ADAPTER, "dpo", "kto"],
                                            **common_kwargs)
                check(out, 3)

        def sequential3():
            with engine.lock, torch.inference_mode():
                for name in (config.PEFT_BASE_ADAPTER, "dpo", "kto"):
                    check(engine.model.generate(**inputs(1), adapter_names=[name], **common_kwargs), 1)

        stream_tokens: list[int] = []

        def stream3():
            settings = dataclasses.replace(config.GENERATION, max_new_tokens=n, do_sample=False)
            outputs = generate(engine, prompt, ["base", "dpo", "kto"], settings)
            stream_tokens.append(max(len(o.token_ids) for o in outputs.values()))

        contenders = {"single": single, "engine_base": engine_base, "batched3": batched3,
                      "sequential3": sequential3, "stream3": stream3}
        single()  # warm-up: first calls allocate and pick kernels
        batched3()
        times = common.interleave({k: (lambda f=f: timed(f)) for k, f in contenders.items()}, args.repeats)
    med = {k: common.median(v) for k, v in times.items()}
    ratios = {
        "batched3_over_single": common.ratio(med["batched3"], med["single"]),
        "engine_base_over_single": common.ratio(med["engine_base"], med["single"]),
        "sequential3_over_batched3": common.ratio(med["sequential3"], med["batched3"]),
        "sequential3_over_single": common.ratio(med["sequential3"], med["single"]),
    }
    result = {
        "settings": {**vars(args), "device_choice": device.describe(), "prompt": prompt,
                     "prompt_tokens": len(prompt_ids(tokenizer, prompt)), "adapters": adapters},
        "seconds": times,
        "median_seconds": med,
        "tokens_per_s": {k: (3 if k in ("batched3", "sequential3") else 1) * n / v for k, v in med.items()
                         if k != "stream3"},
        "stream3_tokens": stream_tokens,
        "ratios": ratios,
        "target": f"batched3 <= {TARGET} x single",
        "target_met": ratios["batched3_over_single"] <= TARGET,
    }
    for k, v in med.items():
        print(f"{k:12s} median {v:.2f} s")
    print(f"batched3/single {ratios['batched3_over_single']:.2f}x (target <= {TARGET}), "
          f"sequential3/batched3 {ratios['sequential3_over_batched3']:.2f}x")
    common.write_result("generation", result, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
