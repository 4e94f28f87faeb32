"""Every model call that wants the accelerator, as a module-level function of plain arguments.

On a ZeroGPU Space each function here is wrapped in ``spaces.GPU`` (see :mod:`playground.zerogpu`): it runs in a
forked worker that holds a GPU for at most its duration, and its arguments, results and yielded values are pickled
across. So these functions take the engine's registry key (a string) instead of the engine, and data (strings,
dicts, DataFrames, frozen configs) instead of the server's objects; they return plain values (lists, floats, numpy
arrays), never tensors. Off ZeroGPU the wrapping is a no-op and they run in the calling thread, exactly as before.

=================  ==============================================  =========================================
function           used by                                         seconds held (``zerogpu``)
=================  ==============================================  =========================================
stream_answers     Compare's streaming handler                     ``GENERATION_SECONDS``
score_answers      Compare's metrics after the last token          ``GENERATION_SECONDS``
generate_and_score the ``/generate`` API                           ``GENERATION_SECONDS``
score_rows         Inspect's Score button and ``/inspect`` API     ``SCORING_SECONDS``
train_adapter      the training queue (one job)                    ``TRAINING_SECONDS``
=================  ==============================================  =========================================
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

from playground import config, values, zerogpu

# The durations each function is wrapped with; tests check that the wrapping matches this table.
DURATIONS = {
    "stream_answers": zerogpu.GENERATION_SECONDS,
    "score_answers": zerogpu.GENERATION_SECONDS,
    "generate_and_score": zerogpu.GENERATION_SECONDS,
    "score_rows": zerogpu.SCORING_SECONDS,
    "train_adapter": zerogpu.TRAINING_SECONDS,
}


# --------------------------------------------------------------------------------------------------------------------
# Plain helpers (take the engine itself; called inside the GPU functions)


def answer_metrics(engine, prompt, answers: dict[str, str], system: str | None = None,
                   beta: float = config.LOSS.beta) -> dict[str, dict[str, Any]]:
    """Per-answer metrics with ONE scoring call: each answer under its own variant and under the base.

    Returns, per variant: ``value`` (V(x,y), the likelihood construction of ``config.VALUES``), ``implied_reward``
    (beta * log pi/pi_ref summed over the answer), ``mean_logp`` (mean token log-prob under the variant),
    ``sum_logp``, ``length`` (response tokens, end-of-turn included), and per token ``tokens`` (text pieces),
    ``token_logp`` and ``token_logratio`` (log pi - log pi_ref of that token).
    """
    from playground.scoring import score

    names = list(answers)
    if not names:
        return {}
    adapter_names = engine.adapter_names_for(names)
    rows = adapter_names + [config.BASE_VARIANT] * len(names)
    texts = [answers[name] for name in names] * 2
    systems = [system or None] * len(rows)
    with engine.lock:
        scores = score(engine.model, engine.tokenizer, [prompt] * len(rows), texts, systems=systems,
                       adapter=rows if engine.adapters else None)
    n = len(names)
    policy_sum, base_sum, lengths = scores.sum_logps[:n], scores.sum_logps[n:], scores.lengths[:n]
    value = values.likelihood_value(policy_sum, lengths, reduce=config.VALUES.likelihood_reduce,
                                    calibrate=config.VALUES.calibrate, reference_sum_logps=base_sum).value
    implied = values.implied_reward(policy_sum, base_sum, beta=beta)
    tokenizer = engine.tokenizer
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    result = {}
    for i, name in enumerate(names):
        ids = scores.token_ids[i]
        own, ref = scores.token_logps[i], scores.token_logps[n + i]
        pieces = [("⏎" if tid in special else tokenizer.decode([tid])) for tid in ids]
        result[name] = {
            "value": float(value[i]),
            "implied_reward": float(implied[i]),
            "mean_logp": float(scores.mean_logps[i]),
            "sum_logp": float(policy_sum[i]),
            "length": int(lengths[i]),
            "tokens": pieces,
            "special": [tid in special for tid in ids],
            "token_logp": [float(x) for x in own],
            "token_logratio": [float(a - b) for a, b in zip(own, ref)],
            "truncated": bool(scores.truncated[i]),
        }
    return result


# --------------------------------------------------------------------------------------------------------------------
# The GPU functions (plain arguments in, plain values out)


def _stream_answers(engine_key: str, prompt, variants: list[str], settings: config.GenerationConfig,
                    system: str | None = None) -> Iterator:
    """The growing answers (``generation.GenerationState``) of ``variants``, batched in one pass. Closing this
    generator stops generation at the next token."""
    from playground.generation import stream_generate

    engine = zerogpu.engine_for(engine_key)
    with closing(stream_generate(engine, prompt, list(variants), settings, system)) as stream:
        yield from stream


def _score_answers(engine_key: str, prompt, answers: dict[str, str], system: str | None = None,
                   beta: float = config.LOSS.beta) -> dict[str, dict[str, Any]]:
    return answer_metrics(zerogpu.engine_for(engine_key), prompt, dict(answers), system, beta)


def _generate_and_score(engine_key: str, prompt, variants: list[str], settings: config.GenerationConfig,
                        system: str | None = None) -> dict[str, dict[str, Any]]:
    """Blocking generation of every variant in one batched pass, then the one scoring call."""
    from playground.generation import generate

    engine = zerogpu.engine_for(engine_key)
    outputs = generate(engine, prompt, list(variants), settings, system or None)
    answers = {name: out.text for name, out in outputs.items()}
    metrics = answer_metrics(engine, prompt, answers, system)
    return {name: {"text": answers[name], **metrics[name]} for name in variants}


def _score_rows(engine_key: str, pairs, names: list[str], progress: Callable[[float, str], None] | None = None, *,
                max_length: int = config.SCORING.max_length, batch_size: int = config.SCORING.batch_size):
    """Inspect's log-probs: ``analysis.SideScores`` per name (numpy arrays) for the prepared pairs. ``progress``
    must be None where the call crosses a process boundary (a callback does not survive pickling)."""
    from playground import analysis

    return analysis.score_rows_on(zerogpu.engine_for(engine_key), pairs, list(names), progress,
                                  max_length=max_length, batch_size=batch_size)


def _train_adapter(engine_key: str, frame, train_config: config.TrainConfig, heldout, out_dir: str,
                   extra_meta: dict[str, Any], hooks) -> Any:
    """One training job on a fresh copy of the base: ``training.train`` with the job's hooks (``on_step``,
    ``on_phase``, ``cancel``; see ``jobs``). Returns ``training.TrainResult`` (paths, metadata, floats)."""
    from playground import training

    engine = zerogpu.engine_for(engine_key)
    hooks.on_phase("Loading a fresh copy of the base model")
    base = engine.fresh_base()
    return training.train(base, engine.tokenizer, frame, train_config, device=engine.device, heldout_frame=heldout,
                          callback=hooks.on_step, cancel=hooks.cancel, out_dir=Path(out_dir), extra_meta=extra_meta,
                          on_phase=hooks.on_phase)


stream_answers = zerogpu.gpu(DURATIONS["stream_answers"])(_stream_answers)
score_answers = zerogpu.gpu(DURATIONS["score_answers"])(_score_answers)
generate_and_score = zerogpu.gpu(DURATIONS["generate_and_score"])(_generate_and_score)
score_rows = zerogpu.gpu(DURATIONS["score_rows"])(_score_rows)
train_adapter = zerogpu.gpu(DURATIONS["train_adapter"])(_train_adapter)
