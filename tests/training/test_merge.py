"""An adapter merged into the base: a plain checkpoint that answers as base + adapter does, with nothing of the
adapter left in its config, plus the tokenizer, the generation config and a card saying what it is; and the CLI."""

from __future__ import annotations

import copy
import json
import zipfile

import torch
from conftest import make_tiny_model, save_random_adapter

from playground import config
from playground.cli import export
from playground.engine.fingerprint import weights_fingerprint
from playground.training.merge import estimated_bytes, write_merged_checkpoint, zip_checkpoint

IDS = torch.tensor([[1, 504, 3200, 28, 17, 9001, 2]])


def test_the_merged_checkpoint_gives_the_logits_of_base_plus_adapter(tokenizer, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = make_tiny_model(len(tokenizer))
    adapter = save_random_adapter(base, tmp_path / "dpo", seed=5)
    with torch.inference_mode():
        expected = PeftModel.from_pretrained(copy.deepcopy(base), str(adapter)).eval()(input_ids=IDS).logits
        base_logits = base(input_ids=IDS).logits
    out = write_merged_checkpoint(copy.deepcopy(base), tokenizer, adapter, tmp_path / "merged",
                                  base_id=config.HUB_BASE_MODEL, base_fingerprint=weights_fingerprint(base))
    assert out == tmp_path / "merged" and not list(tmp_path.glob(".tmp-*"))  # renamed into place
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "generation_config.json", "README.md", "tokenizer.json",
            "tokenizer_config.json"} <= names
    assert not any(n.startswith("adapter_") for n in names)
    config_text = (out / "config.json").read_text()
    assert not any(word in config_text.lower() for word in ("adapter", "peft", "lora", "_name_or_path"))

    loaded = AutoModelForCausalLM.from_pretrained(str(out)).eval()  # plain transformers, no PEFT
    assert not any("lora" in name for name, _ in loaded.named_parameters())
    with torch.inference_mode():
        merged = loaded(input_ids=IDS).logits
    torch.testing.assert_close(merged, expected, atol=1e-5, rtol=0)
    assert (merged - base_logits).abs().max() > 1e-3  # the adapter is in it

    card = (out / "README.md").read_text()
    assert f"base_model: {config.HUB_BASE_MODEL}" in card and "merge_and_unload" in card
    assert "LoRA adapter `dpo`" in card and weights_fingerprint(base)[:16] in card
    assert json.loads((out / "generation_config.json").read_text())["eos_token_id"] == 2

    zipped = zip_checkpoint(out, tmp_path / "dpo-merged.zip")
    with zipfile.ZipFile(zipped) as archive:
        assert {"dpo-merged/model.safetensors", "dpo-merged/config.json"} <= set(archive.namelist())
        assert archive.getinfo("dpo-merged/model.safetensors").compress_type == zipfile.ZIP_STORED
    assert abs(estimated_bytes(base) - (out / "model.safetensors").stat().st_size) < 64 * 1024  # the header


def test_the_cli_merges_an_adapter_folder_into_a_local_base(tokenizer, tmp_path, capsys):
    from transformers import LlamaConfig, LlamaForCausalLM

    base = make_tiny_model(len(tokenizer))
    base.save_pretrained(tmp_path / "base")
    tokenizer.save_pretrained(tmp_path / "base")
    adapter = save_random_adapter(base, tmp_path / "kto", seed=6, method="kto")
    out = tmp_path / "out"
    assert export.main(["--merged", str(adapter), "--out", str(out), "--base-model", str(tmp_path / "base"),
                        "--dtype", "bfloat16", "--zip"]) == 0
    printed = capsys.readouterr().out
    assert "kto merged into" in printed and "base weights not recorded" in printed  # a meta.json without one
    assert (out / "model.safetensors").is_file() and out.with_suffix(".zip").is_file()
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"
    assert "`, loaded from the local directory base (base weights fingerprint" in (out / "README.md").read_text()
    assert export.main(["--merged", str(adapter), "--out", str(out), "--base-model", str(tmp_path / "base")]) == 2
    assert "pass --force" in capsys.readouterr().err
    assert export.main(["--merged", str(tmp_path / "nothing"), "--out", str(tmp_path / "o2")]) == 2
    wide = LlamaForCausalLM(LlamaConfig(**{**base.config.to_dict(), "hidden_size": 64, "head_dim": 16}))
    other = save_random_adapter(wide, tmp_path / "wide", seed=7)  # made for a base of other shapes
    assert export.main(["--merged", str(other), "--out", str(tmp_path / "o3"), "--base-model",
                        str(tmp_path / "base")]) == 2
    assert "another base" in capsys.readouterr().err
