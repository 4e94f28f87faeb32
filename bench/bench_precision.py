"""Decode precision: the base's weights in float32 (what the app serves), bfloat16, and int8 (dynamic quantisation
of the linear layers), for generation on this CPU.

Adopted only if the greedy answers to the probe prompts stay identical (or per-token log-probs stay within
``LOGP_TOLERANCE`` nats) and the decode is really faster. Measured per precision: wall time of N greedy tokens for
one row and for three rows (end-of-sequence suppressed), interleaved by round; the share of the first held-out
prompts whose greedy answer is identical to float32's; and the largest per-token log-prob difference, under that
precision, on float32's own greedy answers.

    .venv/bin/python -m bench.bench_precision [--quick] [--threads 1]
"""

from __future__ import annotations

import copy
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common  # noqa: E402
from playground.engine import threads  # noqa: E402
from playground.engine.base_model import load_base_model  # noqa: E402
from playground.engine.device import pick_device  # noqa: E402
from playground.engine.generation import greedy_answers  # noqa: E402
from playground.engine.scoring import score  # noqa: E402
from playground.engine.templating import prompt_ids  # noqa: E402

LOGP_TOLERANCE = 0.05  # nats per token: well below the log-ratios the app colours (clip at 1.0)


def main(argv: list[str] | None = None) -> int:
    parser = common.base_parser(__doc__.split("\n")[0])
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--prompts", type=int, default=6)
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args(argv)
    if args.quick:
        args.new_tokens, args.repeats, args.prompts = 4, 1, 2

    import torch

    warnings.filterwarnings("ignore")
    if args.threads:
        threads.limit(args.threads)
    device = pick_device("cpu")
    fp32, tokenizer = load_base_model(common.embedded_source(), device)
    models = {"float32": fp32, "bfloat16": copy.deepcopy(fp32).to(torch.bfloat16)}
    try:
        models["int8_dynamic"] = torch.ao.quantization.quantize_dynamic(copy.deepcopy(fp32), {torch.nn.Linear},
                                                                        dtype=torch.qint8)
    except Exception as exc:  # noqa: BLE001 - a build without the quantised kernels: reported, not fatal
        print("int8 dynamic quantisation unavailable:", exc)
    n = args.new_tokens
    ids = prompt_ids(tokenizer, common.heldout_prompt(0))
    kwargs = dict(max_new_tokens=n, min_new_tokens=n, do_sample=False, temperature=None, top_p=None, top_k=None,
                  pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)

    def decode(model, rows: int):
        def run() -> float:
            x = torch.tensor([ids] * rows)
            started = time.perf_counter()
            with torch.inference_mode():
                model.generate(input_ids=x, attention_mask=torch.ones_like(x), **kwargs)
            return time.perf_counter() - started
        return run

    contenders = {f"{name}_{rows}row": decode(model, rows) for name, model in models.items() for rows in (1, 3)}
    for run in contenders.values():
        run()  # warm-up
    times = common.interleave(contenders, args.repeats)
    med = {k: common.median(v) for k, v in times.items()}
    prompts = [common.heldout_prompt(i) for i in range(args.prompts)]
    answers = {name: greedy_answers(model, tokenizer, prompts, n) for name, model in models.items()}
    reference = score(fp32, tokenizer, prompts, answers["float32"])
    quality = {}
    for name, model in models.items():
        scored = score(model, tokenizer, prompts, answers["float32"])
        worst = max(float((a - b).abs().max()) for a, b in zip(scored.token_logps, reference.token_logps))
        same = sum(a == b for a, b in zip(answers[name], answers["float32"]))
        quality[name] = {"identical_answers": same, "prompts": len(prompts), "max_token_logp_difference": worst}
    speedup = {name: {rows: common.ratio(med[f"float32_{rows}row"], med[f"{name}_{rows}row"]) for rows in (1, 3)}
               for name in models}
    adopt = {name: speedup[name][1] > 1.05 and (quality[name]["identical_answers"] == len(prompts)
                                                 or quality[name]["max_token_logp_difference"] <= LOGP_TOLERANCE)
             for name in models if name != "float32"}
    for name in models:
        print(f"{name:13s} 1 row {med[f'{name}_1row']:.2f} s, 3 rows {med[f'{name}_3row']:.2f} s, speed-up over "
              f"float32 {speedup[name][1]:.2f}x / {speedup[name][3]:.2f}x; identical answers "
              f"{quality[name]['identical_answers']}/{len(prompts)}, max |d log p| "
              f"{quality[name]['max_token_logp_difference']:.4f}")
    result = {"settings": {**vars(args), "tolerance_nats": LOGP_TOLERANCE, "torch_threads": torch.get_num_threads(),
                           "cpu_bf16": common.machine_info().get("cpu_bf16")},
              "seconds": times, "median_seconds": med, "speedup_over_float32": speedup, "quality": quality,
              "adopt": adopt, "answers": answers}
    common.write_result("precision", result, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
