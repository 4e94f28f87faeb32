"""Every model call that wants the accelerator, as a module-level function of plain arguments.

On a ZeroGPU Space each function here is wrapped in ``spaces.GPU`` (see :mod:`playground.zerogpu`): it runs in a
forked worker that holds a GPU for at most its duration, and its arguments, results and yielded values are pickled
across. So these functions take the engine's registry key (a string) instead of the engine, and data (strings,
dicts, DataFrames, frozen configs) instead of the server's objects; they return plain values (lists, floats, numpy
arrays), never tensors. Off ZeroGPU the wrapping is a no-op and they run in the calling thread, exactly as before.

=================  ==============================================  =========================================
function           used by                                         seconds held (``config.ZEROGPU``)
=================  ==============================================  =========================================
stream_answers     Compare's streaming handler                     ``config.ZEROGPU.generation``
score_answers      Compare's metrics after the last token          ``config.ZEROGPU.generation``
generate_and_score the ``/generate`` API                           ``config.ZEROGPU.generation``
score_rows         Inspect's Score button and ``/inspect`` API     ``config.ZEROGPU.scoring``
reward_features    Inspect's R_phi (once per data set)             ``config.ZEROGPU.scoring``
train_adapter      the training queue (one job)                    ``config.ZEROGPU.training``
=================  ==============================================  =========================================
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass
from typing import Any

from playground import config
from playground.analysis.reward_model import reward_features_on
from playground.analysis.scores import SideScores, score_rows_on
from playground.engine.generation import generate, stream_generate
from playground.engine.metrics import answer_metrics
from playground.serving import zerogpu
from playground.training.jobs import train_on_fresh_base
from playground.training.loop import TrainResult

# The durations each function is wrapped with; tests check that the wrapping matches this table.
DURATIONS = {
    "stream_answers": config.ZEROGPU.generation,
    "score_answers": config.ZEROGPU.generation,
    "generate_and_score": config.ZEROGPU.generation,
    "score_rows": config.ZEROGPU.scoring,
    "reward_features": config.ZEROGPU.scoring,
    "train_adapter": config.ZEROGPU.training,
}


# --------------------------------------------------------------------------------------------------------------------
# The GPU functions (plain arguments in, plain values out)


def _stream_answers(engine_key: str, prompt, variants: list[str], settings: config.GenerationConfig,
                    system: str | None = None) -> Iterator:
    """The growing answers (``generation.GenerationState``) of ``variants``, batched in one pass. Closing this
    generator stops generation at the next token."""
    engine = zerogpu.engine_for(engine_key)
    with closing(stream_generate(engine, prompt, list(variants), settings, system)) as stream:
        yield from stream


def _score_answers(engine_key: str, prompt, answers: dict[str, str], system: str | None = None,
                   beta: float = config.LOSS.beta) -> dict[str, dict[str, Any]]:
    return answer_metrics(zerogpu.engine_for(engine_key), prompt, dict(answers), system, beta)


def _generate_and_score(engine_key: str, prompt, variants: list[str], settings: config.GenerationConfig,
                        system: str | None = None) -> dict[str, dict[str, Any]]:
    """Blocking generation of every variant in one batched pass, then the one scoring call."""
    engine = zerogpu.engine_for(engine_key)
    outputs = generate(engine, prompt, list(variants), settings, system or None)
    answers = {name: out.text for name, out in outputs.items()}
    metrics = answer_metrics(engine, prompt, answers, system)
    return {name: {"text": answers[name], **metrics[name]} for name in variants}


def _score_rows(engine_key: str, pairs, names: list[str], progress: Callable[[float, str], None] | None = None, *,
                max_length: int = config.SCORING.max_length,
                batch_size: int = config.SCORING.batch_size) -> dict[str, SideScores]:
    """Inspect's log-probs: ``SideScores`` per name (numpy arrays) for the prepared pairs. ``progress`` must be None
    where the call crosses a process boundary (a callback does not survive pickling)."""
    return score_rows_on(zerogpu.engine_for(engine_key), pairs, list(names), progress, max_length=max_length,
                         batch_size=batch_size)


def _reward_features(engine_key: str, pairs, *, max_length: int = config.SCORING.max_length,
                     batch_size: int = config.SCORING.batch_size):
    """The base's final hidden states of the prepared pairs' 2P responses (numpy), for Inspect's R_phi."""
    return reward_features_on(zerogpu.engine_for(engine_key), pairs, max_length=max_length, batch_size=batch_size)


def _train_adapter(engine_key: str, frame, train_config: config.TrainConfig, heldout, out_dir: str,
                   extra_meta: dict[str, Any], hooks, probe_prompts: list | None = None) -> TrainResult:
    """One training job on a fresh copy of the base (``jobs.train_on_fresh_base``) with the job's hooks."""
    return train_on_fresh_base(zerogpu.engine_for(engine_key), frame, train_config, heldout, out_dir, extra_meta,
                               hooks, probe_prompts)


stream_answers = zerogpu.gpu(DURATIONS["stream_answers"])(_stream_answers)
score_answers = zerogpu.gpu(DURATIONS["score_answers"])(_score_answers)
generate_and_score = zerogpu.gpu(DURATIONS["generate_and_score"])(_generate_and_score)
score_rows = zerogpu.gpu(DURATIONS["score_rows"])(_score_rows)
reward_features = zerogpu.gpu(DURATIONS["reward_features"])(_reward_features)
train_adapter = zerogpu.gpu(DURATIONS["train_adapter"])(_train_adapter)


@dataclass
class GpuTrainingRunner:
    """The training queue's runner in the app: each job through :data:`train_adapter` (a forked GPU worker on
    ZeroGPU, whose hooks must then be files)."""

    engine_key: str

    @property
    def isolated(self) -> bool:
        return zerogpu.on_zerogpu()

    def __call__(self, frame, train_config, heldout, out_dir, extra_meta, hooks, probe_prompts=None) -> TrainResult:
        return train_adapter(self.engine_key, frame, train_config, heldout, out_dir, extra_meta, hooks,
                             probe_prompts)


@dataclass
class GpuModelCalls:
    """Inspect's model calls (``analysis.scores.ModelCalls``) through :data:`score_rows` and :data:`reward_features`.
    A progress callback cannot cross into a ZeroGPU worker, so it is dropped there."""

    engine_key: str

    def score_rows(self, engine, pairs, names, progress, *, max_length, batch_size):
        return score_rows(self.engine_key, pairs, names, None if zerogpu.on_zerogpu() else progress,
                          max_length=max_length, batch_size=batch_size)

    def reward_features(self, engine, pairs, *, max_length, batch_size):
        return reward_features(self.engine_key, pairs, max_length=max_length, batch_size=batch_size)
