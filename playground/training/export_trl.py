"""The way out: a fine-tune of this playground as a folder that runs the same training with TRL and accelerate.

:func:`write_trl_project` writes, for the rows a job trains on and its ``TrainConfig``:

* ``train.jsonl`` (and ``eval.jsonl`` with the held-out pairs, when there are some) in TRL's conversational format:
  DPO ``{"prompt": [messages], "chosen": [assistant], "rejected": [assistant]}``, KTO ``{"prompt", "completion",
  "label"}``; a system prompt is the first message of the prompt;
* ``settings.json``: the method, base model, LoRA shape, beta, loss type and weights, learning rate, warmup and the
  total steps, batch size, max length, seed (:func:`trl_settings`);
* ``train.py`` (``templates/train_trl.py``): TRL's ``DPOTrainer`` / ``KTOTrainer`` (SimPO: ``trl.experimental.cpo``,
  ORPO: ``trl.experimental.orpo``) with those settings and this playground's learning-rate schedule (linear warmup,
  then linear decay to 10% of the peak);
* ``accelerate_config.yaml`` for every GPU of one machine, and a ``README.md`` with the commands and what differs.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import pandas as pd

from playground import config
from playground.common.files import atomic_write_text, read_jsonl, sha256_file, write_jsonl
from playground.feedback import frame_for_method
from playground.training.data import count_steps

TEMPLATE = Path(__file__).resolve().parent / "templates" / "train_trl.py"
TRL_REQUIREMENT = "trl>=1.10,<2"
# trl.experimental may change between minor releases: a SimPO or ORPO export pins the release it was written for
TRL_EXPERIMENTAL_REQUIREMENT = "trl==1.16.*"

ACCELERATE_CONFIG = """\
# accelerate launch --config_file accelerate_config.yaml train.py
compute_environment: LOCAL_MACHINE
distributed_type: MULTI_GPU
num_machines: 1
num_processes: 8  # the GPUs of the machine; the per-device batch is the batch divided by this
machine_rank: 0
mixed_precision: bf16
main_training_function: main
use_cpu: false
"""


def messages(prompt: Any, system: str | None = None) -> list[dict[str, str]]:
    """A prompt (text or a list of chat messages) as TRL's conversational prompt, the system prompt first."""
    turns = [dict(m) for m in prompt] if isinstance(prompt, list) else [{"role": "user", "content": str(prompt)}]
    if system and not (turns and turns[0].get("role") == "system"):
        turns.insert(0, {"role": "system", "content": str(system)})
    return turns


def trl_rows(frame: pd.DataFrame, method: str) -> list[dict[str, Any]]:
    """The training rows of ``method`` (a frame of ``feedback.frame_for_method``) in TRL's conversational format."""
    rows = []
    for record in frame.to_dict("records"):
        system = record.get("system") or None
        prompt = messages(record["prompt"], system if isinstance(system, str) else None)
        if config.is_paired(method):
            rows.append({"prompt": prompt, "chosen": [{"role": "assistant", "content": str(record["chosen"])}],
                         "rejected": [{"role": "assistant", "content": str(record["rejected"])}]})
        else:
            rows.append({"prompt": prompt, "completion": [{"role": "assistant", "content": str(record["completion"])}],
                         "label": bool(record["label"])})
    return rows


# The TRL 1.16 trainer (and loss type) each exportable method runs with: DPO and APO through DPOTrainer, SimPO through
# trl.experimental.cpo's CPOTrainer (loss_type "simpo", cpo_alpha = the SFT weight), ORPO through
# trl.experimental.orpo. BCO is refused: TRL 1.16 has no BCO trainer (DPOTrainer's "bco_pair" is BCO on both answers of
# a pair without the running baseline's delta, not the unpaired method).
TRL_TRAINERS: dict[str, tuple[str, str | None]] = {"dpo": ("dpo", None), "kto": ("kto", None),
                                                   "apo_zero": ("dpo", "apo_zero"), "apo_down": ("dpo", "apo_down"),
                                                   "simpo": ("cpo", "simpo"), "orpo": ("orpo", None)}
EXPERIMENTAL_TRAINERS = frozenset({"cpo", "orpo"})


def trl_settings(train_config: config.TrainConfig, rows: int, base_model: str) -> dict[str, Any]:
    """What ``train.py`` reads: every setting of the run, with its total steps and warmup steps as the playground's
    loop computes them. ValueError for a method with no stable TRL trainer (:data:`TRL_TRAINERS`)."""
    if train_config.method not in TRL_TRAINERS:
        raise ValueError(f"{train_config.method.upper()} cannot be exported to TRL: TRL 1.16 has no trainer for it "
                         "(its DPOTrainer's bco_pair loss is paired BCO without the running baseline); export a DPO, "
                         "KTO, APO, SimPO or ORPO run instead.")
    trainer, loss_type = TRL_TRAINERS[train_config.method]
    total = count_steps(rows, train_config)
    loss, lora = train_config.loss, train_config.lora
    return {
        "method": train_config.method, "trainer": trainer, "base_model": base_model, "rows": rows,
        "trl_requirement": TRL_EXPERIMENTAL_REQUIREMENT if trainer in EXPERIMENTAL_TRAINERS else TRL_REQUIREMENT,
        "total_steps": total,
        "warmup_steps": int(round(train_config.warmup_ratio * total)), "batch_size": train_config.batch_size,
        "learning_rate": train_config.learning_rate, "weight_decay": train_config.weight_decay,
        "max_grad_norm": train_config.max_grad_norm, "max_length": train_config.max_length, "seed": train_config.seed,
        "beta": loss.beta, "dpo_loss_type": loss_type or loss.dpo_loss_type, "label_smoothing": loss.label_smoothing,
        "kto_loss_type": loss.kto_loss_type, "desirable_weight": loss.desirable_weight,
        "undesirable_weight": loss.undesirable_weight, "sft_weight": loss.sft_weight, "simpo_gamma": loss.simpo_gamma,
        "lora": {"r": lora.r, "alpha": lora.alpha, "dropout": lora.dropout,
                 "target_modules": list(lora.target_modules)},
    }


def _readme(settings: dict[str, Any], source: str, has_eval: bool) -> str:
    s = settings
    differences = [
        "Held-out early stopping, the drift budget and the probe answers are the playground's own: TRL trains every "
        f"one of the {s['total_steps']} steps" + (" (`eval.jsonl` holds the held-out pairs to evaluate on)."
                                                  if has_eval else "."),
        "Prompts longer than `max_length` are cut by TRL's rule (keep the start), not the playground's (cut the "
        "prompt's start first, so some answer is always scored).",
    ]
    if s["method"] == "kto" and s["sft_weight"]:
        differences.append(f"The SFT term (weight {s['sft_weight']:g} on the desirable answers) has no KTOTrainer "
                           "equivalent and is not applied.")
    if s["trainer"] == "cpo":
        differences.append("SimPO runs as TRL's CPOTrainer with `loss_type=\"simpo\"`, the same per-pair loss; the "
                           f"SFT weight ({s['sft_weight']:g}) is its `cpo_alpha`, TRL's NLL on the chosen answers.")
    if s["trainer"] == "orpo":
        differences.append("TRL's ORPOTrainer takes its NLL over the whole chosen sequence, prompt included; the "
                           "playground's covers the answer only, so the NLL part of the loss differs (the odds-ratio "
                           "part is the same).")
    if s["trainer"] in EXPERIMENTAL_TRAINERS:
        differences.append(f"The trainer is in `trl.experimental`, which may change between releases: the install "
                           f"line pins `{s['trl_requirement']}`, the release this export was written for.")
    lines = [
        f"# {s['method'].upper()} fine-tune, exported from the DPO vs KTO alignment playground",
        "",
        f"Data: {s['rows']} training rows from {source}, in TRL's conversational format (`train.jsonl`). Base model: "
        f"`{s['base_model']}`. LoRA r={s['lora']['r']}, alpha={s['lora']['alpha']}, dropout={s['lora']['dropout']} "
        f"on {', '.join(s['lora']['target_modules'])}. beta {s['beta']:g}, learning rate {s['learning_rate']:g} "
        f"(warmup {s['warmup_steps']} steps, then linear decay to 10%), {s['total_steps']} steps of batch "
        f"{s['batch_size']}, max length {s['max_length']}, seed {s['seed']}. Every value is in `settings.json`.",
        "",
        "```bash",
        f'pip install "{s["trl_requirement"]}" peft accelerate datasets',
        "python train.py                                                   # one GPU (or the CPU)",
        "accelerate launch --config_file accelerate_config.yaml train.py   # all GPUs of this machine",
        "```",
        "",
        "Set `num_processes` in `accelerate_config.yaml` to the number of GPUs; the global batch stays "
        f"{s['batch_size']} (the per-device batch is divided by the processes). The adapter is a PEFT folder "
        "(`adapter/`): upload it to the playground or drop it into its `user_data/adapters/` to compare it.",
        "",
        "What differs from the playground's own run:",
        "",
        *[f"- {line}" for line in differences],
        "",
    ]
    return "\n".join(lines)


def write_trl_project(folder: Path, frame: pd.DataFrame, train_config: config.TrainConfig, base_model: str, *,
                      heldout: pd.DataFrame | None = None, source: str = "uploaded feedback") -> list[Path]:
    """Write the TRL project of one fine-tune into ``folder`` (see the module docstring); return the files written.

    ``frame``: the training rows as the playground's loop gets them (``frame_for_method``); ``heldout``: paired
    held-out rows (written as ``eval.jsonl`` in the method's format), or None.
    """
    folder = Path(folder)
    method = train_config.method
    written = [write_jsonl(folder / "train.jsonl", trl_rows(frame, method))]
    has_eval = heldout is not None and len(heldout) > 0
    if has_eval:
        eval_rows, _ = frame_for_method(heldout, "paired", method)
        written.append(write_jsonl(folder / "eval.jsonl", trl_rows(eval_rows, method)))
    settings = trl_settings(train_config, len(frame), base_model)
    written += [
        atomic_write_text(folder / "settings.json", json.dumps(settings, indent=1) + "\n"),
        atomic_write_text(folder / "train.py", TEMPLATE.read_text(encoding="utf-8")),
        atomic_write_text(folder / "accelerate_config.yaml", ACCELERATE_CONFIG),
        atomic_write_text(folder / "README.md", _readme(settings, source, has_eval)),
    ]
    return written


def recorded_training(adapter_dir: Path, meta: dict[str, Any], data_roots: tuple[Path, ...] = (),
                      heldout_file: Path | None = None) -> tuple[pd.DataFrame, pd.DataFrame | None, str]:
    """(training rows, held-out pairs or None, where they came from) of an adapter already trained: the rows kept in
    its folder (a run of this server, ``jobs.KEPT_ROWS_FILE``), else its ``meta.json``'s ``data_file`` found under
    one of ``data_roots`` with the recorded sha256 (the shipped adapters and the CLI's), read and converted the
    way the training read them. ValueError, naming what is missing, when neither is there."""
    from playground.feedback import read_feedback
    from playground.training.jobs import KEPT_HELDOUT_FILE, KEPT_ROWS_FILE

    adapter_dir = Path(adapter_dir)
    method = str(meta.get("method", ""))
    kept = adapter_dir / KEPT_ROWS_FILE
    if kept.is_file():
        frame = pd.DataFrame(read_jsonl(kept))
        held_path = adapter_dir / KEPT_HELDOUT_FILE
        heldout = pd.DataFrame(read_jsonl(held_path)) if held_path.is_file() else None
        return frame, heldout, f"the {len(frame)} rows {adapter_dir.name} was trained on (kept with the adapter)"
    data_file = str(meta.get("data_file") or "")
    for root in data_roots:
        path = Path(root) / data_file
        if data_file and path.is_file() and sha256_file(path) == meta.get("data_sha256"):
            report = read_feedback(path)
            frame, _note = frame_for_method(report.data, report.format, method)
            heldout = None
            if heldout_file is not None and Path(heldout_file).name in str(meta.get("heldout_source", "")):
                held_report = read_feedback(heldout_file)
                heldout = held_report.data if held_report.format == "paired" else None
            return frame, heldout, f"`{data_file}` (sha256 {meta['data_sha256'][:12]}, as recorded in meta.json)"
    if data_file:
        raise ValueError(f"The data {adapter_dir.name} was trained on ({data_file}) is not on this server, or has "
                         "changed since: export from the Fine-tune tab with the file loaded instead.")
    raise ValueError(f"{adapter_dir.name} keeps no record of its training data (an uploaded or plain PEFT adapter): "
                     "export from the Fine-tune tab with the data loaded instead.")


def zip_project(folder: Path, target: Path) -> Path:
    """The project folder as a zip (one top folder named like ``target``'s stem)."""
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(Path(folder).iterdir()):
            if path.is_file():
                archive.write(path, arcname=f"{target.stem}/{path.name}")
    return target
