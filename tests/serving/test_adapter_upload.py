"""An adapter trained elsewhere (this playground's folder, or TRL's without meta.json) uploaded as a zip: attached
when it is a safetensors LoRA of the loaded base, refused by name otherwise, and nothing half-added left behind."""

from __future__ import annotations

import zipfile

import gradio as gr
import pytest

from playground.serving.services import Services
from playground.ui import finetune_tab


@pytest.fixture()
def services(tiny_engine, tmp_path):
    return Services.for_engine(tiny_engine, tmp_path / "data")


def _zip(tmp_path, source, name="upload.zip", skip=(), extra=None):
    target = tmp_path / name
    with zipfile.ZipFile(target, "w") as archive:
        for path in sorted(source.iterdir()):
            if path.name not in skip:
                archive.write(path, arcname=f"my-adapter/{path.name}")
        for arcname, data in (extra or {}).items():
            archive.writestr(arcname, data)
    return target


def _left(services):
    return sorted(p.name for p in services.queue.adapters_root.iterdir())


def test_a_trl_style_folder_is_attached_and_listed(services, tmp_path):
    source = services.engine.adapters["dpo"].path
    upload = _zip(tmp_path, source, skip=("meta.json",))  # TRL writes no meta.json
    note, changed, cleared = finetune_tab.add_adapter(services, str(upload), "from-trl")
    assert "**from-trl** is attached" in note and changed == "from-trl:done" and cleared is None
    assert "from-trl" in services.variant_names() and services.engine.adapters["from-trl"].method == "peft"
    assert _left(services) == ["from-trl"]
    with pytest.raises(gr.Error, match="already exists"):
        finetune_tab.add_adapter(services, str(upload), "from-trl")


@pytest.mark.parametrize("extra, message", [
    ({"my-adapter/training_args.bin": b"pickle"}, r"holds \['training_args.bin'\]; an adapter zip holds only"),
    ({"../evil/adapter_config.json": b"{}"}, "paths outside its folder"),
    ({"other/README.md": b"x"}, "more than one folder"),
])
def test_unsafe_or_foreign_zips_are_refused_and_leave_nothing(services, tmp_path, extra, message):
    upload = _zip(tmp_path, services.engine.adapters["kto"].path, extra=extra)
    with pytest.raises(gr.Error, match=message):
        finetune_tab.add_adapter(services, str(upload), "refused")
    assert _left(services) == [] and "refused" not in services.variant_names()


def test_not_a_zip_or_another_base_is_refused(services, tmp_path, tokenizer):
    not_zip = tmp_path / "a.zip"
    not_zip.write_bytes(b"plain text")
    with pytest.raises(gr.Error, match="is not a readable zip file"):
        finetune_tab.add_adapter(services, str(not_zip), "nozip")
    from conftest import save_random_adapter
    from transformers import LlamaConfig, LlamaForCausalLM

    other = LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=48, intermediate_size=64,
                                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2))
    folder = save_random_adapter(other, tmp_path / "other-base", seed=3)
    with pytest.raises(gr.Error, match="was made for base"):
        finetune_tab.add_adapter(services, str(_zip(tmp_path, folder, "other.zip")), "other")
    assert _left(services) == [] and "other" not in services.variant_names()
    with pytest.raises(gr.Error, match="Choose the adapter's .zip first"):
        finetune_tab.add_adapter(services, None, "x")


def test_a_refused_upload_evicts_nothing_and_a_good_one_makes_room(services, tmp_path, tokenizer):
    import dataclasses

    from conftest import save_random_adapter
    from transformers import LlamaConfig, LlamaForCausalLM

    from playground import config

    services.queue.quotas = dataclasses.replace(config.QUOTAS, user_adapters=1)
    good = _zip(tmp_path, services.engine.adapters["dpo"].path, "good.zip")
    finetune_tab.add_adapter(services, str(good), "first")
    other = LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=48, intermediate_size=64,
                                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2))
    foreign = _zip(tmp_path, save_random_adapter(other, tmp_path / "other-base", seed=3), "other.zip")
    with pytest.raises(gr.Error, match="was made for base"):
        finetune_tab.add_adapter(services, str(foreign), "second")
    assert _left(services) == ["first"] and "first" in services.variant_names()  # the refusal evicted nothing
    note, _, _ = finetune_tab.add_adapter(services, str(good), "third")
    assert "the oldest were removed: first" in note and _left(services) == ["third"]
    assert "first" not in services.variant_names()
