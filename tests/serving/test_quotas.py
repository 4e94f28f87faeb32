"""A shared server cannot be filled or crossed: per-visitor training limits, adapter and run quotas with eviction of
the oldest unpinned, vote quotas, sessions that cannot see or cancel each other's jobs (UI and API), 128-bit ids,
and an interrupted training restarted from the Fine-tune tab with its rows and settings."""

from __future__ import annotations

import dataclasses
import json
import os
import time

import gradio as gr
import pytest
from gradio_client import Client
from tiny_server import build, serving

from playground import config
from playground.common.files import folder_bytes, oldest_first_over
from playground.feedback.votes import VoteError, VoteStore, valid_session_id
from playground.serving import quotas
from playground.serving.services import Services
from playground.training.jobs import Job, TrainingQueue
from playground.ui import finetune_tab
from playground.ui.page import init_session

SESSION, OTHER = "q" * 32, "o" * 32
TINY = {"method": "DPO (pairs)", "beta": 0.1, "learning_rate": 5e-4, "steps": 2, "epochs": 1.0, "batch_size": 2,
        "max_length": 64, "desirable_weight": 1.0, "undesirable_weight": 1.0, "lora_r": 4, "lora_alpha": 8,
        "lora_dropout": 0.0, "sft_weight": 0.0, "early_stop": False, "drift_budget": 0.0, "heldout_share": 0.0,
        "probe_prompts": ""}


@pytest.fixture()
def services(tiny_engine, tmp_path):
    return Services.for_engine(tiny_engine, tmp_path / "data")


def _data(services, session=SESSION):
    return finetune_tab.load_data(services, finetune_tab.SOURCE_EXAMPLE, None, "paired_example.csv", session,
                                  "DPO (pairs)")[0]


def _start(services, session=SESSION, name="q-run", **over):
    return finetune_tab.start_training(services, session, _data(services, session), {**TINY, "name": name, **over})


def _wait(services, job_id, session=SESSION, timeout=240):
    deadline, seen = time.time() + timeout, None
    while time.time() < deadline:
        out = finetune_tab.poll_job(services, job_id, seen, None, session)
        seen = out["seen"]
        job = services.queue.get(job_id)
        if job is not None and job.finished and (seen or {}).get("final"):
            return out
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not finish: {services.job_view(job_id)}")


# --------------------------------------------------------------------------------------------------------------------
# The eviction rule


def test_oldest_first_over_removes_the_oldest_until_what_stays_fits():
    items = [("c", 3.0, 10), ("a", 1.0, 10), ("b", 2.0, 50)]
    assert oldest_first_over(items, max_count=3, max_bytes=100) == []
    assert oldest_first_over(items, max_count=3, max_bytes=100, room=1) == ["a"]
    assert oldest_first_over(items, max_count=3, max_bytes=40) == ["a", "b"]  # 70 -> 60 -> 10 bytes
    assert oldest_first_over(items, max_count=0, max_bytes=100) == ["a", "b", "c"]
    assert oldest_first_over([], max_count=0, max_bytes=0, room=1) == []  # nothing removable: the caller decides


def _fake_adapter(root, name, age, size=100, pinned=False):
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "meta.json").write_text("{}")
    (folder / "adapter_model.safetensors").write_bytes(b"x" * size)
    if pinned:
        (folder / config.QUOTAS.pin_file).touch()
    os.utime(folder / "meta.json", (age, age))
    return folder


def test_make_room_evicts_the_oldest_unpinned_and_never_a_pinned_busy_or_shipped_one(tiny_engine, tmp_path):
    root = tmp_path / "adapters"  # the tiny engine's shipped dpo and kto live here too: they must stay
    for age, name in enumerate(("old", "pinned", "mid", "busy", "new"), start=1):
        _fake_adapter(root, name, 1_000_000 + age, pinned=name == "pinned")
    small = dataclasses.replace(config.QUOTAS, user_adapters=6, user_adapter_bytes=1 << 30)
    evicted = quotas.make_room_for_adapter(tiny_engine, root, small, is_busy={"busy"}.__contains__)
    assert evicted == ["old", "mid"]  # 4 that stay + 3 removable + 1 to come, at most 6: the two oldest go
    assert sorted(p.name for p in root.iterdir()) == ["busy", "dpo", "kto", "new", "pinned"]
    assert {"dpo", "kto"} <= set(tiny_engine.adapters)
    assert "the oldest were removed: old, mid" in quotas.eviction_note(evicted, small)
    kept = sum(folder_bytes(root / name) for name in ("busy", "dpo", "kto", "pinned"))
    by_bytes = dataclasses.replace(small, user_adapters=10, user_adapter_bytes=kept + 50)
    assert quotas.make_room_for_adapter(tiny_engine, root, by_bytes, is_busy={"busy"}.__contains__) == ["new"]
    only_kept = dataclasses.replace(small, user_adapters=4)
    with pytest.raises(quotas.QuotaFull, match="at most 4 trained adapters .* pinned ones fill that"):
        quotas.make_room_for_adapter(tiny_engine, root, only_kept, is_busy={"busy"}.__contains__)


def test_a_training_past_the_adapter_quota_evicts_the_oldest_and_says_so(services):
    root = services.queue.adapters_root
    _fake_adapter(root, "visitor-old", 1_000_000)
    _fake_adapter(root, "visitor-new", 2_000_000)
    services.queue.quotas = dataclasses.replace(config.QUOTAS, user_adapters=2)
    out = _start(services)
    assert "the oldest were removed: visitor-old" in out["status"]
    assert not (root / "visitor-old").exists() and (root / "visitor-new").exists()
    _wait(services, out["job_state"])
    assert sorted(p.name for p in root.iterdir() if not p.name.startswith(".")) == ["q-run", "visitor-new"]


# --------------------------------------------------------------------------------------------------------------------
# Per-visitor limits


def test_one_training_per_visitor_at_a_time(services):
    first = _start(services, name="q-first", steps=200)
    with pytest.raises(gr.Error, match=r"You already have 1 training.*the limit is 1 per visitor on this .*cancel it"):
        _start(services, name="q-second")
    other = _start(services, session=OTHER, name="q-other")  # another browser is not held back
    finetune_tab.cancel_training(services, SESSION, first["job_state"])
    _wait(services, first["job_state"])
    _wait(services, other["job_state"], session=OTHER)
    assert _start(services, name="q-third")["job_state"]  # the slot is free again
    _wait(services, services.latest_job_for(SESSION).id)


def test_votes_are_bounded_per_session_and_per_server(tmp_path):
    small = dataclasses.replace(config.QUOTAS, votes_per_session=2, votes_total=3)
    store = VoteStore(tmp_path / "votes.sqlite3", quotas=small)
    vote = {"kind": "thumbs_up", "prompt": "Hi", "variant_a": "dpo", "answer_a": "Hello"}
    store.add(SESSION, vote)
    store.add(SESSION, vote)
    with pytest.raises(VoteError, match="This session has 2 votes, the most one session may cast on this server"):
        store.add(SESSION, vote)
    store.add(OTHER, vote)
    with pytest.raises(VoteError, match="This server holds 3 votes, its limit"):
        store.add("n" * 32, vote)
    assert store.count(SESSION) == 2 and store.count(OTHER) == 1


def test_run_records_past_the_quota_are_pruned_oldest_finished_first(tiny_engine, tmp_path):
    small = dataclasses.replace(config.QUOTAS, runs=2)
    queue = TrainingQueue(tiny_engine, tmp_path / "adapters", tmp_path / "runs", quotas=small)
    for index, status in enumerate(("done", "failed", "running", "done")):
        job = Job(f"{index:032x}", f"j{index}", "dpo", 2, status=status, created=1000.0 + index)
        queue.jobs[job.id] = job
        queue._write_job(job)
    assert queue._prune_runs() == [f"{0:032x}", f"{1:032x}"]  # the running one counts and stays
    assert sorted(queue.jobs) == [f"{2:032x}", f"{3:032x}"]
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == sorted(queue.jobs)


# --------------------------------------------------------------------------------------------------------------------
# Isolation


def test_ids_carry_at_least_96_random_bits():
    session = init_session(None)
    assert len(session) == 32 and int(session, 16) >= 0 and valid_session_id(session)
    assert not valid_session_id("a" * 23)  # shorter ids than 96 bits of hex are refused
    assert init_session(session) == session


def test_another_browser_cannot_see_cancel_push_or_download_a_job(services):
    out = _start(services, steps=200)
    job_id = out["job_state"]
    assert len(job_id) == 32 and int(job_id, 16) >= 0  # 128 random bits
    theirs = finetune_tab.poll_job(services, job_id, None, None, OTHER)
    assert theirs["status"] == "No training yet." and "zip" not in theirs
    assert finetune_tab.reattach(services, OTHER, job_id)["job_state"] is None
    with pytest.raises(gr.Error, match="No running training of yours"):
        finetune_tab.cancel_training(services, OTHER, job_id)
    with pytest.raises(gr.Error, match="Train an adapter first"):
        finetune_tab.push_to_hub(services, OTHER, job_id, "me/x", "hf_token")
    with pytest.raises(gr.Error, match="No training of yours to restart"):
        finetune_tab.restart_training(services, OTHER, job_id)
    assert not services.queue.get(job_id).cancel_event.is_set()
    finetune_tab.cancel_training(services, SESSION, job_id)
    _wait(services, job_id)


def test_through_the_api_a_job_is_reached_by_its_id_and_a_page_job_not_at_all(tiny_engine, tmp_path):
    services, demo = build(tmp_path / "data", engine=tiny_engine)
    csv_text = "prompt,chosen,rejected\n" + "".join(f"Q{i}?,Good answer {i}.,Bad {i}.\n" for i in range(8))
    page_job = services.queue.submit(*_frame_and_config(services, steps=300), "page-job", owner=SESSION)
    with serving(demo) as url:
        mine, theirs = Client(url, verbose=False), Client(url, verbose=False)
        started = mine.predict(csv_text=csv_text, method="dpo", name="api-own",
                               hyperparameters={"steps": 300, "batch_size": 2, "max_length": 64, "lora_r": 4,
                                                "lora_alpha": 8}, heldout_share=0.0, api_name="/train_start")
        job_id = started["job_id"]
        assert len(job_id) == 32 and int(job_id, 16) >= 0  # 128 random bits, given to its starter only
        for client in (mine, theirs):
            for endpoint in ("/train_status", "/train_cancel"):
                with pytest.raises(Exception, match="was started through the API"):
                    client.predict(job_id=page_job.id, api_name=endpoint)
                with pytest.raises(Exception, match="was started through the API"):
                    client.predict(job_id="0" * 32, api_name=endpoint)
        with pytest.raises(Exception, match="the limit is 1 per visitor"):  # per client
            mine.predict(csv_text=csv_text, method="dpo", name="api-own-2", api_name="/train_start")
        assert mine.predict(job_id=job_id, api_name="/train_status")["status"] in ("queued", "running")
        assert mine.predict(job_id=job_id, api_name="/train_cancel")["cancelled"] is True
    assert not page_job.cancel_event.is_set()
    services.queue.cancel(page_job.id)


# --------------------------------------------------------------------------------------------------------------------
# Restart after a crash


def test_an_interrupted_training_is_restarted_from_the_tab_with_its_rows_and_settings(tiny_engine, tmp_path):
    data_dir = tmp_path / "data"
    first = Services.for_engine(tiny_engine, data_dir)
    job = first.queue.submit(*_frame_and_config(first), "q-restarted", owner=SESSION)
    rows_file = data_dir / "runs" / job.id / "rows.jsonl"
    assert rows_file.is_file() and len(rows_file.read_text().splitlines()) == 20
    job.cancel_event.set()  # stop it at its first step; then play a crash: the record says it was running
    deadline = time.time() + 120
    while not job.finished and time.time() < deadline:
        time.sleep(0.1)
    record = json.loads((data_dir / "runs" / job.id / "job.json").read_text())
    (data_dir / "runs" / job.id / "job.json").write_text(json.dumps({**record, "status": "running"}))
    second = Services.for_engine(tiny_engine, data_dir)  # the restarted server reads it as interrupted
    view = second.job_view(job.id, SESSION)
    assert view["status"] == "interrupted"
    shown = finetune_tab.reattach(second, SESSION, job.id)
    assert shown["restart"]["visible"] is True and "Run this training again" in shown["result"]
    out = finetune_tab.restart_training(second, SESSION, job.id)
    new_id = out["job_state"]
    assert new_id != job.id and second.queue.get(new_id).name == "q-restarted"
    assert second.queue.get(new_id).settings == second.queue.get(job.id).settings
    _wait(second, new_id)
    assert second.job_view(new_id, SESSION)["status"] == "done" and "q-restarted" in second.variant_names()
    assert not (data_dir / "runs" / new_id / "rows.jsonl").exists()  # done: nothing left to restart from
    second.engine.detach("q-restarted")


def _frame_and_config(services, steps=2):
    from playground.feedback import frame_for_method, read_feedback
    from playground.serving.settings import train_config_from

    report = read_feedback(services.examples_dir / "paired_example.csv")
    frame, _ = frame_for_method(report.data, report.format, "dpo")
    settings = train_config_from({"method": "dpo", "steps": steps, "batch_size": 2, "max_length": 64, "lora_r": 4,
                                  "lora_alpha": 8})
    return frame, settings
