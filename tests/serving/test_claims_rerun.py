"""A claim measured again from the Claims view, on the tiny model: the re-run goes through the training queue (its
one-at-a-time worker and the visitor's quota), reports its run and step, writes the claim in the shipped file's
format, can be cancelled (keeping nothing), and the Learn tab's handlers draw it."""

from __future__ import annotations

import dataclasses
import time

import pytest

from playground import config
from playground.analysis.claims import load_results
from playground.serving.services import Services
from playground.training.jobs import QueueFull
from playground.ui import learn_tab

SESSION = "c" * 32
OTHER = "d" * 32
SMALL = config.ClaimSweep(steps=1, pairs=8, heldout=4, rates=(0.0, 0.5), seeds=(0,))


@pytest.fixture()
def services(tiny_engine, tmp_path):
    services = Services.for_engine(tiny_engine, tmp_path / "data")
    services.claims_sweep = SMALL
    return services


def wait_for(services, job_id, until=lambda job: job.finished, seconds=240):
    deadline = time.time() + seconds
    job = services.queue.get(job_id)
    while not until(job) and time.time() < deadline:
        time.sleep(0.1)
    return job


def test_a_rerun_trains_the_claim_s_runs_and_writes_them_as_shipped(services):
    job = services.start_claim_rerun("unpaired", SESSION)
    assert job.kind == "experiment" and job.total_steps == 3 * SMALL.steps
    job = wait_for(services, job.id)
    assert job.status == "done", job.error
    claims = load_results(services.claims_rerun_file)
    payload = claims["unpaired"]
    assert [r["label"] for r in payload["runs"]] == ["DPO, pairs", "KTO, both answers", "KTO, thumbs only"]
    assert payload["command"] == ("python -m playground.experiments unpaired --steps 1 --pairs 8 --heldout 4 "
                                  "--seeds 0 --out claims_rerun.json")
    assert payload["rerun"]["size"] == "custom" and payload["rerun"]["job"] == job.id
    assert all(r["heldout_pairs"] == 4 and r["settings"]["steps"] == 1 for r in payload["runs"])
    view = services.claim_rerun_view(job.id, SESSION)
    assert view["progress"] == 1.0 and view["runs_done"] == 3 and view["claim"] == "unpaired"
    # the re-run is no training: the Fine-tune tab never re-attaches to it, and it cannot be restarted
    assert services.latest_job_for(SESSION) is None
    assert services.latest_job_for(SESSION, kind="experiment").id == job.id
    with pytest.raises(ValueError, match="No training of yours"):
        services.queue.restart(job.id, SESSION)
    assert services.claim_rerun_view(job.id, OTHER) is None  # another browser's re-run reads as none

    drawn = learn_tab.rerun_claims_view(services)
    order = ["unpaired", "noise", "imbalance", "compute"]
    assert len(drawn) == 2 * len(order)
    assert "Re-run here (custom version, 3 runs" in drawn[0] and "the shipped results say" in drawn[0]
    assert all("not re-run on this server yet" in md for md in drawn[2::2])
    assert len(drawn[1].data) >= 1  # the unpaired figure has its bars


def test_cancelling_a_rerun_stops_it_at_its_next_step_and_keeps_nothing(services):
    services.claims_sweep = config.ClaimSweep(steps=40, pairs=8, heldout=4, rates=(0.0, 0.5), seeds=(0,))
    job = services.start_claim_rerun("noise", SESSION)
    job = wait_for(services, job.id, until=lambda job: (job.meta or {}).get("steps_done", 0) >= 1 or job.finished)
    assert job.status == "running" and job.phase.startswith("Run 1 of 6: DPO at 0%, seed 0 · step ")
    assert services.queue.cancel(job.id)
    job = wait_for(services, job.id)
    assert job.status == "cancelled" and "not kept" in job.phase
    assert job.meta["steps_done"] < 40 and job.meta["runs_done"] == 0
    assert not services.claims_rerun_file.exists()


def test_a_rerun_waits_behind_a_training_and_counts_against_the_visitor(services):
    from playground.feedback import read_feedback

    report = read_feedback(services.examples_dir / "paired_example.csv")
    cfg = dataclasses.replace(config.TRAIN, steps=3, batch_size=2,
                              probes=dataclasses.replace(config.TRAIN.probes, enabled=False))
    training, _ = services.start_training(report, cfg, "first", owner=SESSION)
    with pytest.raises(QueueFull, match="training\\(s\\) or experiment\\(s\\)"):
        services.start_claim_rerun("compute", SESSION)
    rerun = services.start_claim_rerun("compute", OTHER)
    if not training.finished:  # one at a time: the re-run waits while the training trains
        assert services.claim_rerun_view(rerun.id, OTHER)["status"] in ("queued", "running")
        assert services.queue.position(rerun.id) in (0, 1)
    assert wait_for(services, rerun.id).status == "done"
    assert training.status == "done" and training.created < rerun.created


def test_the_learn_tab_handlers_start_poll_and_cancel(services):
    import gradio as gr

    with pytest.raises(gr.Error, match="Unknown claim"):
        learn_tab.start_rerun(services, SESSION, "astrology")
    started = learn_tab.start_rerun(services, SESSION, "unpaired")
    assert "unpaired" not in started["status"] and "Unpaired thumbs" in started["status"]
    job = wait_for(services, started["job"])
    assert job.status == "done"
    polled = learn_tab.poll_rerun(services, SESSION, job.id)
    assert polled["source"] == learn_tab.RERUN and len(polled["claims"]) == 8
    assert polled["download"]["visible"] and polled["download"]["value"].endswith("claims_rerun.json")
    with pytest.raises(gr.Error, match="No re-run of yours"):
        learn_tab.cancel_rerun(services, SESSION, job.id)
    again = learn_tab.reattach_rerun(services, SESSION)
    assert again["job"] == job.id and again["download"]["visible"]
    assert learn_tab.show_results(services, learn_tab.SHIPPED)[::2] == learn_tab.claims_view()[::2]
    estimate = learn_tab.rerun_estimate(services, "noise")
    assert "**6 runs** of 1 step on 8 demo pairs" in estimate and "training queue" in estimate
    services.claims_sweep = None  # a CPU's quick version is the shipped results' size: their times estimate it
    quick = learn_tab.rerun_estimate(services, "unpaired")
    assert "**3 runs** of 6 steps on 96 demo pairs, measured on 40 held-out pairs" in quick
    assert "a shipped run of this size took" in quick


def test_a_waiting_rerun_names_its_claim_before_it_has_started():
    from playground.serving.claims import rerun_view
    from playground.training.jobs import Job

    job = Job("j" * 32, "claims-noise", "experiment", 36, kind="experiment", settings={"claim": "noise",
                                                                                       "size": "quick"})
    view = rerun_view(job, position=2)
    assert (view["claim"], view["size"], view["steps_done"], view["progress"]) == ("noise", "quick", 0, 0.0)
    assert learn_tab.rerun_status(view) == "**Label noise** re-run · ⏳ queued · position 2 in the queue"
