"""Pushing an adapter to the Hugging Face Hub: refusals without a token or with a bad repo id, the right folder
uploaded (huggingface_hub's API monkeypatched: nothing leaves this machine), the token never echoed, and the Fine-tune
tab's button."""

from __future__ import annotations

import logging

import gradio as gr
import huggingface_hub
import pytest

from playground.serving.hub import HubError, push_adapter  # noqa: E402
from playground.serving.services import Services  # noqa: E402
from playground.training.jobs import Job  # noqa: E402
from playground.ui import finetune_tab

TOKEN = "hf_SECRETsecretSECRET123"
SESSION = "h" * 32


class FakeApi:
    """Records what HfApi would have been asked to do."""

    calls: list = []
    fail_with: Exception | None = None

    def __init__(self, token=None, **kwargs):
        FakeApi.calls.append(("init", {"token": token}))

    def create_repo(self, repo_id, **kwargs):
        FakeApi.calls.append(("create_repo", {"repo_id": repo_id, **kwargs}))
        return huggingface_hub.RepoUrl(f"https://huggingface.co/{repo_id}")

    def upload_folder(self, **kwargs):
        FakeApi.calls.append(("upload_folder", kwargs))
        if FakeApi.fail_with is not None:
            raise FakeApi.fail_with
        return None


@pytest.fixture()
def fake_hub(monkeypatch):
    FakeApi.calls = []
    FakeApi.fail_with = None
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    return FakeApi


@pytest.fixture()
def adapter(tiny_engine):
    return tiny_engine.adapters["dpo"].path


@pytest.mark.parametrize("token", [None, "", "   "])
def test_no_token_is_refused_before_anything_is_sent(fake_hub, adapter, token):
    with pytest.raises(HubError, match="No Hugging Face token: Paste a Hugging Face access token with write"):
        push_adapter(adapter, "me/my-adapter", token)
    assert fake_hub.calls == []


@pytest.mark.parametrize("repo_id", ["noslash", "a/b/c", "../etc", "me/../x", "me/a..b", "-me/x", "me/x-",
                                     "me/with space", "me/", "/x", "me/a--b", "me/" + "x" * 97, "me/ünïcode"])
def test_invalid_repo_ids_are_refused(fake_hub, adapter, repo_id):
    with pytest.raises(HubError, match="is not a hub repository id: use owner/name"):
        push_adapter(adapter, repo_id, TOKEN)
    assert fake_hub.calls == []


def test_an_empty_repo_id_says_what_to_type(fake_hub, adapter):
    with pytest.raises(HubError, match="Give the hub repository as owner/name"):
        push_adapter(adapter, "  ", TOKEN)


def test_a_folder_that_is_not_an_adapter_is_refused(fake_hub, tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(HubError, match="Not pushed: .* lacks adapter_config.json"):
        push_adapter(tmp_path, "me/x", TOKEN)
    assert fake_hub.calls == []


def test_upload_folder_gets_the_adapter_folder(fake_hub, adapter, caplog):
    caplog.set_level(logging.DEBUG)
    url = push_adapter(adapter, " me/my-dpo.v1 ", TOKEN)
    assert url == "https://huggingface.co/me/my-dpo.v1"
    kinds = [kind for kind, _ in fake_hub.calls]
    assert kinds == ["init", "create_repo", "upload_folder"]
    assert fake_hub.calls[0][1]["token"] == TOKEN
    assert fake_hub.calls[1][1] == {"repo_id": "me/my-dpo.v1", "repo_type": "model", "private": True,
                                    "exist_ok": True}
    upload = fake_hub.calls[2][1]
    assert upload["folder_path"] == str(adapter) and upload["repo_id"] == "me/my-dpo.v1"
    assert upload["repo_type"] == "model"
    assert set(upload["allow_patterns"]) == {"adapter_config.json", "adapter_model.safetensors", "meta.json",
                                             "README.md"}
    assert TOKEN not in caplog.text


def test_a_hub_refusal_is_a_message_without_the_token(fake_hub, adapter):
    fake_hub.fail_with = RuntimeError(f"401 Client Error: Unauthorized (token {TOKEN} is invalid)")
    with pytest.raises(HubError) as excinfo:
        push_adapter(adapter, "me/x", TOKEN)
    message = str(excinfo.value)
    assert TOKEN not in message and "***" in message and "write access" in message
    assert excinfo.value.__cause__ is None and excinfo.value.__suppress_context__


def test_the_finetune_tab_button(fake_hub, tiny_engine, tmp_path):
    services = Services.for_engine(tiny_engine, tmp_path / "data")
    with pytest.raises(gr.Error, match="Train an adapter first"):
        finetune_tab.push_to_hub(services, SESSION, None, "me/x", TOKEN)
    job = Job("j" * 12, "dpo", "dpo", 2, status="done", owner=SESSION)
    services.queue.jobs[job.id] = job
    with pytest.raises(gr.Error, match="No Hugging Face token"):
        finetune_tab.push_to_hub(services, SESSION, job.id, "me/x", "")
    with pytest.raises(gr.Error, match="not a hub repository id"):
        finetune_tab.push_to_hub(services, SESSION, job.id, "../x", TOKEN)
    with pytest.raises(gr.Error, match="Train an adapter first"):  # another browser's adapter reads as none
        finetune_tab.push_to_hub(services, "o" * 32, job.id, "me/x", TOKEN)
    note, token_box = finetune_tab.push_to_hub(services, SESSION, job.id, "me/x", TOKEN)
    assert "Pushed **dpo**" in note and "https://huggingface.co/me/x" in note
    assert token_box == ""  # the token is cleared from the page after use
    assert fake_hub.calls[-1][1]["folder_path"] == str(tiny_engine.adapters["dpo"].path)
    assert TOKEN not in repr(services.queue.jobs) and TOKEN not in note


def test_a_push_with_no_network_fails_cleanly_and_the_token_is_written_nowhere(tiny_engine, tmp_path, caplog,
                                                                                 monkeypatch):
    """The real huggingface_hub, offline (no network here): the push fails with a message, and the token is in no
    file the server wrote (data directory, vote exports, adapter zips), in no log line and no job record."""
    import tempfile
    import time
    from pathlib import Path

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    caplog.set_level(logging.DEBUG)
    started = time.time()
    services = Services.for_engine(tiny_engine, tmp_path / "data")
    job = Job("k" * 32, "dpo", "dpo", 2, status="done", owner=SESSION)
    services.queue.jobs[job.id] = job
    services.queue._write_job(job)
    with pytest.raises(gr.Error) as refused:
        finetune_tab.push_to_hub(services, SESSION, job.id, "me/x", TOKEN)
    assert "The hub refused the upload to me/x" in str(refused.value) and TOKEN not in str(refused.value)
    services.zip_adapter("dpo")
    temp = Path(tempfile.gettempdir())
    roots = [tmp_path, temp / "dpo-kto-playground-zips", temp / "dpo-kto-playground-exports"]
    written = [p for root in roots if root.is_dir() for p in root.rglob("*")
               if p.is_file() and not p.is_symlink() and p.stat().st_mtime >= started - 1]
    assert any(p.name == "job.json" for p in written)  # the scan does see what the server wrote
    leaked = [str(p) for p in written if TOKEN.encode() in p.read_bytes()]
    assert leaked == [] and TOKEN not in caplog.text and TOKEN not in repr(services.queue.jobs)
