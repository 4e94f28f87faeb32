"""Runs side by side: settings with the differences marked, held-out metrics and answer measures from each
adapter's meta.json, overlaid curves, and each run's answer to one prompt."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from playground.analysis.runs import flatten, results_table, settings_table
from playground.engine.adapters import AdapterInfo
from playground.serving.services import Services
from playground.ui import runs_tab

RUN_A = {"method": "dpo", "train_rows": 96, "steps_done": 12, "data_file": "a.csv",
         "hyperparameters": {"learning_rate": 5e-4, "loss": {"beta": 0.1, "sft_weight": 1.0},
                             "lora": {"r": 16, "target_modules": ["q_proj", "v_proj"]}},
         "heldout_metrics": {"preference_accuracy": 0.9, "mean_margin": 2.5, "pairs": 20},
         "answers_eval": {"summaries": {"base": {"mean_words": 60.0}, "a": {"mean_words": 40.0,
                                                                            "share_repetitive": 0.1}}},
         "history": [{"step": 1, "loss": 0.7}, {"step": 2, "loss": 0.5}], "heldout_source": "20 pairs"}
RUN_B = {**RUN_A, "method": "kto", "hyperparameters": {**RUN_A["hyperparameters"], "learning_rate": 1e-4},
         "heldout_metrics": {"preference_accuracy": 0.7}, "history": [{"step": 1, "loss": 0.9}], "answers_eval": {}}


def test_flatten_and_the_settings_table_mark_what_differs():
    assert flatten({"loss": {"beta": 0.1}, "lora": {"target_modules": ["q", "v"]}, "seed": 0}) == {
        "loss.beta": 0.1, "lora.target_modules": "q, v", "seed": 0}
    table = settings_table({"a": RUN_A, "b": RUN_B}).set_index("setting")
    assert table.loc["method", "a"] == "dpo" and table.loc["method", "b"] == "kto" and table.loc["method", "differs"]
    assert table.loc["learning_rate", "differs"] and not table.loc["loss.beta", "differs"]
    assert sorted(table.index[table["differs"]]) == ["learning_rate", "method"]
    html_table = runs_tab.settings_html(settings_table({"a": RUN_A, "b": RUN_B}))
    assert "2 settings differ" in html_table and html_table.index("learning_rate") < html_table.index("loss.beta")


def test_results_come_from_each_record():
    frame = results_table({"a": RUN_A, "b": RUN_B})
    assert frame["held-out preference accuracy"].tolist() == [0.9, 0.7]
    assert frame["mean words"].tolist()[0] == 40.0 and pd.isna(frame["mean words"].tolist()[1])
    assert frame["measured on"].tolist() == ["20 pairs", "20 pairs"]


@pytest.fixture()
def services(tiny_engine, tmp_path):
    return Services.for_engine(tiny_engine, tmp_path / "data")


def test_the_tab_compares_attached_adapters_and_answers_one_prompt(services):
    services.engine.adapters["dpo"] = AdapterInfo("dpo", services.engine.adapters["dpo"].path, RUN_A, "shipped")
    curves, settings, results = runs_tab.compare_runs(services, ["dpo", "kto", "not-attached"], "loss")
    assert [trace.name for trace in curves.data] == ["dpo"]  # kto's record has no history in this fixture
    assert "setting" in settings and list(results["adapter"]) == ["dpo", "kto"]
    answers = runs_tab.answer_prompt(services, ["dpo", "kto"], "Say hello", 4)
    assert list(answers["variant"]) == ["base", "dpo", "kto"] and answers["tokens"].min() >= 1
    with pytest.raises(runs_tab.gr.Error, match="Type a prompt"):
        runs_tab.answer_prompt(services, ["dpo"], "  ", 4)


def test_numbers_measured_on_other_base_weights_are_not_shown_as_this_bases():
    loaded = "b" * 64
    remeasured = {**RUN_A, "base_fingerprint": "a" * 64, "heldout_eval": {"preference_accuracy": 0.8, "pairs": 30},
                  "evaluation": {"data": "held.csv", "pairs": 30, "base_fingerprint": loaded,
                                 "adapter": {"answers": {"mean_words": 22.0}}}}
    frame = results_table({"other": {**RUN_A, "base_fingerprint": "a" * 64}, "same": {**RUN_B, "base_fingerprint":
                           loaded}, "plain": RUN_A, "again": remeasured}, loaded).set_index("adapter")
    assert pd.isna(frame.loc["other", "held-out preference accuracy"]) and pd.isna(frame.loc["other", "mean words"])
    assert frame.loc["other", "measured on"].startswith("not shown: measured on other weights of this base")
    assert frame.loc["other", "base weights"] == "other weights of this base"
    assert frame.loc["same", "held-out preference accuracy"] == 0.7 and frame.loc["same", "base weights"] == \
        "the loaded ones"
    assert frame.loc["plain", "held-out preference accuracy"] == 0.9 and frame.loc["plain", "base weights"] == \
        "not recorded"
    assert frame.loc["again", "held-out preference accuracy"] == 0.8 and frame.loc["again", "mean words"] == 22.0
    assert frame.loc["again", "measured on"] == "30 pairs of held.csv, measured again on the loaded base weights"


def test_the_tab_offers_one_adapter_merged_into_the_base(services):
    import zipfile

    assert "MiB" in runs_tab.merged_note(services) and "merge_and_unload" in runs_tab.merged_note(services)
    update, note = runs_tab.merged_download(services, "kto")
    path = update["value"]
    assert update["visible"] and path.endswith("kto-merged.zip") and "MiB" in note and "kto" in note
    with zipfile.ZipFile(path) as archive:
        names = set(archive.namelist())
    assert {"kto-merged/config.json", "kto-merged/model.safetensors", "kto-merged/README.md",
            "kto-merged/tokenizer.json", "kto-merged/generation_config.json"} <= names
    again, _ = runs_tab.merged_download(services, "kto")  # one zip per adapter, replaced
    assert again["value"] == path and len(list(Path(path).parent.glob("kto-merged*"))) == 1
    with pytest.raises(runs_tab.gr.Error, match="Choose an attached adapter"):
        runs_tab.merged_download(services, "not-attached")
    assert runs_tab.merged_choices(services, "gone")["value"] == "dpo"
