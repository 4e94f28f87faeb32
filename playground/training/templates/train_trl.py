"""Run this fine-tune with TRL: the same method, data, LoRA shape, beta, learning rate, schedule, steps and seed as
the DPO vs KTO playground run it was exported from (``settings.json``). One GPU, or several with accelerate:

    pip install "trl>=1.10,<2" peft accelerate datasets   # SimPO, ORPO: "trl==1.16.*" (trl.experimental)
    python train.py                                             # one process
    accelerate launch --config_file accelerate_config.yaml train.py  # every GPU of the machine

``--base-model`` overrides the base (a hub id or a local folder); ``--out`` the adapter folder (default ``adapter``).
The global batch stays the playground's: the per-device batch is the batch divided by the number of processes.
"""

import argparse
import json
import os
from pathlib import Path

import torch
from datasets import load_dataset
from peft import LoraConfig
from transformers import AutoModelForCausalLM, AutoTokenizer

HERE = Path(__file__).resolve().parent
SETTINGS = json.loads((HERE / "settings.json").read_text(encoding="utf-8"))


def playground_schedule(step: int) -> float:
    """The playground's learning-rate factor: linear warmup over ``warmup_steps``, then linear decay to 10% of the
    peak at the last step (``step`` 0-based)."""
    total, warmup = SETTINGS["total_steps"], SETTINGS["warmup_steps"]
    if warmup and step < warmup:
        return (step + 1) / warmup
    return 1.0 - 0.9 * (step - warmup) / max(1, total - warmup)


def with_playground_schedule(trainer_class):
    """``trainer_class`` with the schedule above in place of the Trainer's own (AdamW is the Trainer's default)."""

    class Trainer(trainer_class):
        def create_scheduler(self, num_training_steps, optimizer=None):
            self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer or self.optimizer, playground_schedule)
            return self.lr_scheduler

    return Trainer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base-model", default=SETTINGS["base_model"])
    parser.add_argument("--out", default=str(HERE / "adapter"))
    args = parser.parse_args()
    s = SETTINGS
    processes = int(os.environ.get("WORLD_SIZE", "1"))
    if s["batch_size"] % processes:
        print(f"note: batch {s['batch_size']} does not split evenly over {processes} processes")
    tokenizer = AutoTokenizer.from_pretrained(args.base_model)
    bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    model = AutoModelForCausalLM.from_pretrained(args.base_model, dtype=torch.bfloat16 if bf16 else torch.float32)
    train = load_dataset("json", data_files=str(HERE / "train.jsonl"), split="train")
    lora = LoraConfig(r=s["lora"]["r"], lora_alpha=s["lora"]["alpha"], lora_dropout=s["lora"]["dropout"],
                      target_modules=s["lora"]["target_modules"], task_type="CAUSAL_LM")
    common = dict(output_dir=args.out, max_steps=s["total_steps"], per_device_train_batch_size=max(
        1, s["batch_size"] // processes), learning_rate=s["learning_rate"], weight_decay=s["weight_decay"],
        max_grad_norm=s["max_grad_norm"], seed=s["seed"], max_length=s["max_length"], beta=s["beta"],
        logging_steps=1, save_strategy="no", report_to="none", bf16=bf16, use_cpu=not torch.cuda.is_available())
    if s.get("trainer", s["method"]) == "dpo":  # DPO, and APO-zero/down (DPOTrainer's loss types)
        from trl import DPOConfig, DPOTrainer

        losses, weights = [s["dpo_loss_type"]], [1.0]
        if s["sft_weight"]:
            losses, weights = losses + ["sft"], weights + [s["sft_weight"]]
        training_args = DPOConfig(**common, loss_type=losses, loss_weights=weights,
                                  label_smoothing=s["label_smoothing"])
        trainer_class = DPOTrainer
    elif s["trainer"] == "cpo":  # SimPO: CPO's simpo loss, its NLL weight (cpo_alpha) the playground's SFT weight
        from trl.experimental.cpo import CPOConfig, CPOTrainer

        training_args = CPOConfig(**common, loss_type="simpo", simpo_gamma=s["simpo_gamma"],
                                  cpo_alpha=s["sft_weight"], label_smoothing=s["label_smoothing"])
        trainer_class = CPOTrainer
    elif s["trainer"] == "orpo":
        from trl.experimental.orpo import ORPOConfig, ORPOTrainer

        training_args = ORPOConfig(**common)
        trainer_class = ORPOTrainer
    else:
        from trl import KTOConfig, KTOTrainer

        training_args = KTOConfig(**common, loss_type=s["kto_loss_type"], desirable_weight=s["desirable_weight"],
                                  undesirable_weight=s["undesirable_weight"])
        trainer_class = KTOTrainer
    trainer = with_playground_schedule(trainer_class)(model=model, args=training_args, train_dataset=train,
                                                      processing_class=tokenizer, peft_config=lora)
    trainer.train()
    # the adapter alone, as safetensors (no pickled training_args.bin), so the playground attaches it as it is
    trainer.model.save_pretrained(args.out, safe_serialization=True)
    print(f"adapter saved to {args.out}")


if __name__ == "__main__":
    main()
