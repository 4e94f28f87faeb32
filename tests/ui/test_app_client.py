"""The page served for real on the tiny engine, driven through gradio_client: the headless API end to end."""

from __future__ import annotations

import time

import pytest
from gradio_client import Client, handle_file
from tiny_server import serving

from playground.serving.services import Services  # noqa: E402
from playground.ui import compare_tab
from playground.ui.page import build_app

SESSION = "c" * 32
EXAMPLES = Services.__dataclass_fields__["examples_dir"].default
TINY = {"steps": 2, "batch_size": 2, "max_length": 64, "lora_r": 4, "lora_alpha": 8}


@pytest.fixture()
def served(tiny_engine, tmp_path):
    services = Services.for_engine(tiny_engine, tmp_path / "data")
    with serving(build_app(services)) as url:
        yield services, Client(url, verbose=False)


def _wait(client, job_id, timeout=240):
    deadline = time.time() + timeout
    while time.time() < deadline:
        status = client.predict(job_id=job_id, api_name="/train_status")
        if status["status"] in ("done", "failed", "cancelled", "interrupted"):
            return status
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} did not finish")


def test_named_endpoints_and_nothing_else(served):
    _services, client = served
    endpoints = set(client.view_api(print_info=False, return_format="dict")["named_endpoints"])
    expected = {"/generate", "/variants", "/vote", "/validate", "/train_start", "/train_status", "/train_cancel"}
    assert expected <= endpoints
    assert all(name in expected or name.startswith("/inspect") for name in endpoints), endpoints


def test_generate_returns_text_and_metrics_for_each_variant(served):
    _services, client = served
    result = client.predict(prompt="Say hello", variants=["base", "dpo", "kto"],
                            settings={"max_new_tokens": 5, "mode": "greedy"}, api_name="/generate")
    assert set(result["variants"]) == {"base", "dpo", "kto"}
    for row in result["variants"].values():
        assert isinstance(row["text"], str) and row["length"] >= 1
        assert {"value", "implied_reward", "mean_logp"} <= set(row)
    assert result["variants"]["base"]["implied_reward"] == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(Exception, match="Unknown variant"):
        client.predict(prompt="hi", variants=["nope"], api_name="/generate")


def test_upload_validate_train_and_the_adapter_appears(served):
    services, client = served
    report = client.predict(file=handle_file(str(EXAMPLES / "mistakes_example.csv")), api_name="/validate")
    assert report["errors"] and report["format"] == "paired"
    report = client.predict(file=handle_file(str(EXAMPLES / "paired_example.csv")), api_name="/validate")
    assert report["trainable"] and report["rows_usable"] == 20

    started = client.predict(file=handle_file(str(EXAMPLES / "paired_example.csv")), method="dpo",
                             name="api-run", hyperparameters=TINY, api_name="/train_start")
    assert started["total_steps"] == 2
    status = _wait(client, started["job_id"])
    assert status["status"] == "done", status
    assert status["steps_done"] == 2 and len(status["history"]) == 2
    assert 0.0 <= status["heldout_metrics"]["preference_accuracy"] <= 1.0
    assert "api-run" in client.predict(api_name="/variants")
    again = client.predict(prompt="Hi", variants=["api-run"], settings={"max_new_tokens": 3}, api_name="/generate")
    assert "api-run" in again["variants"]

    with pytest.raises(Exception, match="already exists"):
        client.predict(csv_text="prompt,chosen,rejected\na,b,c\n", method="dpo", name="api-run",
                       hyperparameters={"steps": 1, "batch_size": 1}, api_name="/train_start")


def test_cancel_and_refusals(served):
    _services, client = served
    started = client.predict(file=handle_file(str(EXAMPLES / "unpaired_example.csv")), method="kto",
                             name="long-run", hyperparameters={**TINY, "steps": 500}, api_name="/train_start")
    cancelled = client.predict(job_id=started["job_id"], api_name="/train_cancel")
    assert cancelled["cancelled"] is True
    assert _wait(client, started["job_id"])["status"] == "cancelled"
    with pytest.raises(Exception, match="learning rate"):
        client.predict(csv_text="prompt,chosen,rejected\na,b,c\n", method="dpo", name="x",
                       hyperparameters={"learning_rate": 3.0, "steps": 1, "batch_size": 1}, api_name="/train_start")
    with pytest.raises(Exception, match="uploaded"):
        client.predict(file={"path": "/etc/hostname", "meta": {"_type": "json"}}, api_name="/validate")


def test_votes_survive_a_new_services_on_the_same_data_dir(served, tiny_engine):
    services, _client = served
    last = {"prompt": "Hi", "system": "", "variants": ["base", "dpo"], "answers": {"base": "Hello.", "dpo": "Hey!"}}
    compare_tab.vote_pair(services, "right_better", SESSION, last, "base", "dpo")
    compare_tab.vote_thumb(services, 0, False, SESSION, last)
    restarted = Services.for_engine(tiny_engine, services.data_dir)
    frame = restarted.votes_for(SESSION)
    assert list(frame["kind"]) == ["right_better", "thumbs_down"]
    assert restarted.secret == services.secret  # the browser's encrypted session id still decrypts
