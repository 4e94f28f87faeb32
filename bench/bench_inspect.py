"""Benchmark of the Inspect tab: cold scoring of the bundled held-out set, then redraws from the cache.

    python bench/bench_inspect.py                 # the real base model with the shipped adapters (base, dpo, kto)
    python bench/bench_inspect.py --tiny          # a tiny random Llama with two random adapters (checks the script)

Writes JSON to --out (default bench/results/inspect.json): the scoring time in seconds (cold: an empty cache; on the
padded path and on the packed path, interleaved, with their ratio and largest difference in summed log-probs), the
time of a second Score click (cache hit), and redraw times in milliseconds (median of --repeats): ``analyse`` alone,
the ten figures, and the whole redraw handler (``inspect_tab.render``: analyse + every variant's summary + figures).
It also puts the packed path against this machine's speed limit: the model's matmul work (decoder Linear layers per
fed token, the head per scored token) over the cold time, against one float32 matmul of the model's MLP shape.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import torch  # noqa: E402

from playground import plots  # noqa: E402
from playground.analysis.cache import InspectCache  # noqa: E402
from playground.analysis.curves import kto_value_curves, pair_focus, prospect_curves  # noqa: E402
from playground.analysis.datasets import DEFAULT_DATASET, load_heldout  # noqa: E402
from playground.analysis.scores import DatasetScores, score_dataset  # noqa: E402
from playground.analysis.views import InspectAnalysis, InspectSettings, analyse  # noqa: E402
from playground.config import SCORING  # noqa: E402
from playground.engine.base_model import BaseModelSource, ensure_embedded_checkpoint, load_tokenizer, resolve_base_model  # noqa: E402
from playground.engine.device import DeviceChoice  # noqa: E402
from playground.engine.engine import Engine  # noqa: E402


def tiny_engine() -> Engine:
    """A 2-layer random Llama with the real tokenizer and two random LoRA adapters named dpo and kto."""
    import copy

    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = load_tokenizer(str(ensure_embedded_checkpoint()))
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                      tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, pad_token_id=2)
    cfg.architectures = ["LlamaForCausalLM"]
    base = LlamaForCausalLM(cfg).eval()
    root = Path(tempfile.mkdtemp(prefix="bench-inspect-"))
    for seed, name in ((1, "dpo"), (2, "kto")):
        torch.manual_seed(seed)
        peft = get_peft_model(copy.deepcopy(base), LoraConfig(r=4, lora_alpha=8, init_lora_weights=False,
                                                              target_modules=["q_proj", "v_proj"]))
        peft.save_pretrained(str(root / name), safe_serialization=True)
        (root / name / "meta.json").write_text(json.dumps({"method": name, "base_model": "tiny",
                                                           "base_architecture": "LlamaForCausalLM"}))
    engine = Engine(base, tokenizer, DeviceChoice(torch.device("cpu"), torch.float32, None),
                           BaseModelSource("local", "tiny-random-llama", "bench"))
    engine.attach_all(root)
    return engine


def real_engine(base_model: str | None, checkpoints: Path) -> Engine:
    engine = Engine.load(resolve_base_model(base_model))
    skipped = engine.attach_all(checkpoints)
    for message in skipped:
        print("skipped:", message)
    return engine


def median_ms(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def matmul_gflops(tokens: int, hidden: int, inner: int, repeats: int = 20) -> float:
    """GFLOP/s of one (tokens x hidden) @ (hidden x inner) float32 matmul on this machine, the speed limit of a
    forward made of such layers."""
    a, b = torch.randn(tokens, hidden), torch.randn(hidden, inner)
    for _ in range(3):
        a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * tokens * hidden * inner * repeats / (time.perf_counter() - start) / 1e9


class DecoderTokens:
    """Counts the tokens the packed path feeds the decoder (prompts shared), by wrapping ``packed._run_decoder``."""

    def __init__(self):
        from playground.engine import packed

        self.module, self.original, self.tokens = packed, packed._run_decoder, 0

    def __enter__(self):
        def counted(decoder, cfg, plan, ids, *rest, **kwargs):
            self.tokens += len(ids)
            return self.original(decoder, cfg, plan, ids, *rest, **kwargs)

        self.module._run_decoder = counted
        return self

    def __exit__(self, *exc):
        self.module._run_decoder = self.original


def figures(result: InspectAnalysis, scores: DatasetScores) -> list:
    focus = pair_focus(result, scores, 0)
    s, search = result.summary, result.alpha_search
    return [
        plots.dpo_scatter_figure(result.pairs, result.variant, 0),
        plots.dpo_bars_figure(result.pairs, result.variant, 0),
        plots.dpo_waterfall_figure(focus, result.variant),
        plots.kto_scatter_figure(result.samples, s.z0, focus["samples"]),
        plots.kto_value_curve_figure(result.samples, kto_value_curves(result), focus["samples"]),
        plots.kto_loss_figure(result.samples, focus["samples"]),
        plots.value_histogram_figure(result.samples, result.taus, result.settings.tau_method, result.value_label),
        plots.prospect_bars_figure(result.samples, s.tau, result.settings.loss_aversion, result.value_label),
        plots.objective_comparison_figure(result.samples, prospect_curves(result), result.value_label),
        plots.alpha_search_figure(search.alphas, search.accuracies, search.best_alpha, result.settings.alpha),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="use a tiny random model (checks the script quickly)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "inspect.json")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATASET)
    parser.add_argument("--base-model", default=None)
    parser.add_argument("--checkpoints", type=Path, default=ROOT / "checkpoints")
    parser.add_argument("--variants", nargs="*", default=["base", "dpo", "kto"])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--limit", type=int, default=0, help="score only the first N pairs (0: all)")
    parser.add_argument("--rounds", type=int, default=1, help="interleaved rounds of padded and packed cold scoring")
    args = parser.parse_args(argv)

    load_start = time.perf_counter()
    engine = tiny_engine() if args.tiny else real_engine(args.base_model, args.checkpoints)
    load_s = time.perf_counter() - load_start
    variants = [v for v in args.variants if v in engine.variant_names()]
    pairs = load_heldout(args.data)
    if args.limit:
        pairs = pairs.head(args.limit)

    # cold scoring on the padded path (one row per sequence, as before the packed path) and on the packed,
    # prompt-sharing path with per-token adapters (the default), interleaved for --rounds rounds
    from playground.engine import packed

    supported = packed.packed_logps_supported
    cold: dict[str, list[float]] = {"padded": [], "packed": []}
    padded_scores = None
    for _ in range(args.rounds):
        for path in ("padded", "packed"):
            packed.packed_logps_supported = supported if path == "packed" else (lambda model: False)
            try:
                with DecoderTokens() as counter:
                    start = time.perf_counter()
                    got = score_dataset(engine, pairs, variants, cache=InspectCache())
                    cold[path].append(time.perf_counter() - start)
                if path == "packed":
                    decoder_tokens = counter.tokens
            finally:
                packed.packed_logps_supported = supported
            if path == "padded":
                padded_scores = got
    cache = InspectCache()
    start = time.perf_counter()
    scores = score_dataset(engine, pairs, variants, cache=cache)
    cold_s = statistics.median(cold["packed"])
    agreement = max(float(abs(scores.side(v).chosen_sum - padded_scores.side(v).chosen_sum).max()) for v in variants)
    start = time.perf_counter()
    score_dataset(engine, pairs, variants, cache=cache)
    warm_ms = (time.perf_counter() - start) * 1000

    view = next((v for v in variants if v != "base"), "base")
    settings = InspectSettings()
    redraw = {
        "analyse_ms": median_ms(lambda: analyse(scores, view, settings), args.repeats),
        "analyse_hybrid_ema_ms": median_ms(lambda: analyse(
            scores, view, InspectSettings(construction="hybrid", tau_method="ema")), args.repeats),
        "figures_ms": median_ms(lambda: figures(analyse(scores, view, settings), scores), args.repeats),
    }
    try:
        from playground.ui import inspect_tab

        redraw["render_handler_ms"] = median_ms(lambda: inspect_tab.render(scores, view, 0, settings), args.repeats)
    except ImportError as exc:  # gradio missing: the core numbers still stand
        redraw["render_handler_ms"] = None
        print("render handler not measured:", exc)

    # how close the packed path is to this machine's matmul speed: the decoder's Linear weights once per fed token,
    # the head once per scored response token (attention, the softmax and R_phi's feature pass not counted: a lower
    # bound)
    model = engine.model
    linear = sum(m.weight.numel() for n, m in model.named_modules()
                 if isinstance(m, torch.nn.Linear) and ".layers." in n and "lora_" not in n)
    head = model.get_output_embeddings().weight
    response_tokens = sum(int(s.chosen_len.sum() + s.rejected_len.sum() + s.kl_len.sum())
                          for s in [scores.reference] + [scores.side(v) for v in variants if v != "base"])
    model_gflop = (2 * linear * decoder_tokens + 2 * head.numel() * response_tokens) / 1e9
    config = getattr(model, "config", None)
    peak = matmul_gflops(SCORING.packed_tokens, head.shape[1], getattr(config, "intermediate_size", 4 * head.shape[1]))
    sequences = 4 * scores.n_pairs * len([v for v in variants if v != "base"] + ["reference"])
    result = {
        "benchmark": "inspect",
        "model": "tiny-random-llama" if args.tiny else engine.source.describe(),
        "device": engine.device.describe(),
        "torch_threads": torch.get_num_threads(),
        "machine": platform.platform(),
        "cpu_count": os.cpu_count(),
        "data": str(args.data),
        "n_pairs": scores.n_pairs,
        "variants": variants,
        "sequences_scored": sequences,
        "model_load_s": round(load_s, 2),
        "score_cold_s": round(cold_s, 3),
        "score_cold_sequences_per_s": round(sequences / cold_s, 2) if cold_s > 0 else None,
        "score_cold_padded_s": round(statistics.median(cold["padded"]), 3),
        "padded_over_packed": round(statistics.median(cold["padded"]) / cold_s, 2),
        "max_abs_difference_packed_vs_padded": agreement,
        "decoder_tokens_packed": decoder_tokens,
        "response_tokens_scored": response_tokens,
        "packed_model_gflop": round(model_gflop, 1),
        "packed_gflop_per_s": round(model_gflop / cold_s, 1),
        "matmul_gflop_per_s": round(peak, 1),
        "packed_share_of_matmul_speed": round(model_gflop / cold_s / peak, 2),
        "score_cached_ms": round(warm_ms, 2),
        "redraw_repeats": args.repeats,
        **{k: (round(v, 2) if v is not None else None) for k, v in redraw.items()},
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
