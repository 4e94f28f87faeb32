"""The headless API: named endpoints for ``gradio_client``, registered with ``gr.api`` inside the page's Blocks.

No ``from __future__ import annotations`` here on purpose: Gradio derives each endpoint's schema from the real type
hints. Files come in as Gradio FileData dicts (``gradio_client.handle_file``); only files the client uploaded (in
Gradio's upload folder) are read, never an arbitrary server path. See docs/API.md for example calls.
"""

from pathlib import Path
from typing import Any

import gradio as gr
from gradio import utils as gr_utils

from playground import config, feedback
from playground.analysis.views import InspectSettings, analyse, summary_json
from playground.engine.generation import GenerationInputError
from playground.feedback import FeedbackReport, votes
from playground.serving.blind import Ballot, blind_order
from playground.serving.services import Services
from playground.serving.settings import ServiceInputError, generation_settings, train_config_from
from playground.training.data import TrainingInputError
from playground.training.jobs import AdapterNameError, QueueFull

API_OWNER = "api"


def _uploaded_path(file: Any) -> Path:
    """The local path of a file the client uploaded; anything else is refused."""
    if not isinstance(file, dict) or not file.get("path"):
        raise gr.Error("Pass the file with gradio_client.handle_file(path).")
    path = Path(str(file["path"])).resolve()
    upload_root = Path(gr_utils.get_upload_folder()).resolve()
    if not gr_utils.is_in_or_equal(path, upload_root) or not path.is_file():
        raise gr.Error("Only files uploaded through the client are accepted (use gradio_client.handle_file).")
    return path


def _report(file: dict | None, csv_text: str, filename: str, intact_rows: bool) -> FeedbackReport:
    if file:
        path = _uploaded_path(file)
        return feedback.read_feedback(path, filename=file.get("orig_name") or path.name, intact_rows=intact_rows)
    if csv_text and csv_text.strip():
        return feedback.read_feedback(csv_text.encode("utf-8"), filename=filename or "upload.csv",
                                      intact_rows=intact_rows)
    raise gr.Error("Pass a file (handle_file) or csv_text.")


def caller(request: gr.Request | None) -> str:
    """The owner name of an API caller's jobs: one per ``gradio_client.Client`` (its session hash), so the limit of
    trainings per visitor holds per client."""
    session = getattr(request, "session_hash", None) if request is not None else None
    return f"{API_OWNER}-{session}" if session else API_OWNER


def report_dict(report: FeedbackReport) -> dict:
    """A validation report as the API returns it (missing cells as null)."""
    preview = report.data.drop(columns=["row"], errors="ignore").head(5)
    return {
        "trainable": bool(report.trainable),
        "verdict": report.verdict(),
        "damaged": report.damaged,
        "intact_rows_available": report.intact_rows_available,
        "dropped_rows": sorted(report.dropped_rows),
        "format": report.format,
        "rows_total": int(report.rows_total),
        "rows_usable": int(report.rows_usable),
        "errors": [str(issue) for issue in report.errors],
        "warnings": [str(issue) for issue in report.warnings],
        "summary": report.summary(),
        "preview": preview.astype(object).where(preview.notna(), None).to_dict("records"),
    }


class Endpoints:
    """The API's endpoints, one method each, over the app's :class:`Services` (see :func:`register`)."""

    def __init__(self, services: Services):
        self.services = services

    def generate(self, prompt: str, variants: list[str] | None = None, settings: dict | None = None,
                 system: str = "", blind: bool = False) -> dict:
        """Generate the variants' answers to one prompt in one batched pass and score them.

        variants: names from /variants (default: base, dpo, kto when attached). settings: any of mode
        ("greedy"|"sampled"), max_new_tokens, temperature, top_p, seed. Returns {"prompt", "settings", "variants":
        {name: {"text", "value", "implied_reward", "mean_logp", "length"}}}. blind=True returns {"prompt",
        "settings", "ballot", "answers": {"Model A": text, ...}} instead, in the order the page shows this prompt,
        with no name or metric: cast the vote with /vote and the ballot, which reveals them.
        """
        services = self.services
        try:
            gen = generation_settings(settings)
            chosen = services.check_variants(variants or services.default_variants())
            result = services.generate_and_score(prompt, chosen, gen, system or None)
        except (ServiceInputError, GenerationInputError, KeyError) as exc:
            raise gr.Error(str(exc).strip("'\"")) from exc
        keep = ("text", "value", "implied_reward", "mean_logp", "length")
        shown = {"do_sample": gen.do_sample, "max_new_tokens": gen.max_new_tokens, "temperature": gen.temperature,
                 "top_p": gen.top_p, "seed": gen.seed}
        rows = {name: {k: row[k] for k in keep} for name, row in result.items()}
        if not blind:
            return {"prompt": prompt, "settings": shown, "variants": rows}
        order = blind_order(services.secret, prompt, list(rows))
        ballot = Ballot(prompt, system or "", order, {name: rows[name]["text"] for name in order},
                        {name: rows[name] for name in order})
        return {"prompt": prompt, "settings": shown, "ballot": services.ballots.open(ballot),
                "answers": {label: rows[name]["text"] for label, name in zip(ballot.labels, order)}}

    def vote(self, ballot: str, kind: str, left: str = "Model A", right: str = "Model B",
             request: gr.Request = None) -> dict:
        """Vote on a blind generation (the ballot from /generate with blind=True). kind: left_better, right_better,
        tie or both_bad on the answers labelled left and right ("Model A", "Model B", ...), or thumbs_up /
        thumbs_down on the answer labelled left. The vote is recorded with the true names, under this client's
        session (its own votes), and the names and metrics are revealed: {"vote", "revealed": {label: name},
        "variants": {name: metrics}}."""
        box = self.services.ballots.get(ballot)
        if box is None:
            raise gr.Error("No open ballot with that id: generate with blind=True first (ballots are kept for the "
                           f"last {self.services.ballots.capacity} blind generations).")
        names = {label: box.name_of(label) for label in (left, right)}
        unknown = [label for label, name in names.items() if name is None]
        if unknown:
            raise gr.Error(f"Unknown label(s) {unknown}; this ballot has {', '.join(box.labels)}.")
        pair = kind not in ("thumbs_up", "thumbs_down")
        row = {"kind": kind, "prompt": box.prompt, "system": box.system, "variant_a": names[left],
               "answer_a": box.answers[names[left]], "blind": True}
        if pair:
            row.update(variant_b=names[right], answer_b=box.answers[names[right]])
        try:
            stored = self.services.votes.add(caller(request), row)
        except votes.VoteError as exc:
            raise gr.Error(str(exc)) from exc
        return {"vote": {k: stored[k] for k in ("id", "kind", "variant_a", "variant_b")},
                "revealed": dict(zip(box.labels, box.variants)), "variants": box.metrics}

    def variants(self) -> list[str]:
        """Every variant that can generate: base, then the attached adapters (shipped and trained)."""
        return self.services.variant_names()

    def validate(self, file: dict | None = None, csv_text: str = "", filename: str = "upload.csv",
                 intact_rows: bool = False) -> dict:
        """Validate a feedback file (handle_file) or CSV text: trainable, verdict, format, usable rows, errors,
        warnings, preview. A file that looks cut off or corrupt is not trainable unless intact_rows=True (its intact
        rows, as the verdict says)."""
        return report_dict(_report(file, csv_text, filename, bool(intact_rows)))

    def train_start(self, file: dict | None = None, method: str = "dpo", name: str = "",
                    hyperparameters: dict | None = None, csv_text: str = "", filename: str = "upload.csv",
                    heldout_share: float | None = None, probe_prompts: list[str] | None = None,
                    intact_rows: bool = False, request: gr.Request = None) -> dict:
        """Queue a DPO or KTO LoRA training on a feedback file; returns {"job_id", "name", "total_steps",
        "position", "notes"}. hyperparameters: beta, learning_rate, steps, epochs, batch_size, max_length,
        desirable_weight, undesirable_weight, lora_r, lora_alpha, lora_dropout, seed, warmup_ratio, sft_weight,
        early_stop, drift_budget (defaults: ``config.TRAIN``, the same as the page's). heldout_share: the share of
        the file's prompts kept out of training and measured on (default ``config.TRAIN.held_out_fraction`` for
        files of at least ``held_out_min_rows`` rows; 0 keeps none). probe_prompts: the prompts the adapter answers
        during the run (default: the held-out rows' first prompts). intact_rows: train on the intact rows of a
        file that looks cut off or corrupt (see /validate's verdict). One training queued or running per API client
        (``config.QUOTAS``)."""
        services = self.services
        report = _report(file, csv_text, filename, bool(intact_rows))
        if not report.trainable:
            raise gr.Error("The file cannot be trained on:\n" + report.summary())
        try:
            train_config = train_config_from({**(hyperparameters or {}), "method": method})
            job, notes = services.start_training(report, train_config, name or services.suggest_adapter_name(
                train_config.method), owner=caller(request),
                heldout_fraction=None if heldout_share is None else float(heldout_share),
                data_label=(file or {}).get("orig_name") or filename, probe_prompts=probe_prompts)
        except (ServiceInputError, AdapterNameError, TrainingInputError, QueueFull, ValueError) as exc:
            raise gr.Error(str(exc)) from exc
        return {"job_id": job.id, "name": job.name, "method": job.method, "total_steps": job.total_steps,
                "position": services.queue.position(job.id), "notes": notes}

    def train_status(self, job_id: str) -> dict:
        """A job's status (queued/running/done/failed/cancelled/interrupted), phase, steps, ETA, queue position,
        history of per-step metrics, and the held-out metrics once done. The job id (128 random bits, returned by
        /train_start to its caller only) is what gives access; a page's jobs are not reachable here."""
        view = self._api_job_view(job_id)
        view.pop("owner", None)
        return view

    def _api_job_view(self, job_id: str) -> dict:
        view = self.services.job_view(str(job_id or ""))
        if view is None or not str(view.get("owner") or "").startswith(API_OWNER):
            raise gr.Error(f"No training job {job_id!r} was started through the API.")
        return view

    def train_cancel(self, job_id: str) -> dict:
        """Cancel a job started through the API (whoever holds its id): at once while queued, before its next step
        while running."""
        self._api_job_view(job_id)
        queue = self.services.queue
        cancelled = queue.cancel(job_id)
        return {"job_id": job_id, "cancelled": bool(cancelled), "status": queue.get(job_id).status}

    def inspect(self, dataset: str = "heldout", adapter: str = "dpo", settings: dict | None = None,
                session_id: str = "") -> dict:
        """Summary numbers of one adapter on a data set ("heldout" or "votes" with session_id) under settings
        (any InspectSettings field; the rest default). Scores once per (adapter, data set), then from the cache."""
        kind = str(dataset).strip().lower()
        if kind not in ("heldout", "votes"):
            raise gr.Error("dataset must be 'heldout' or 'votes'.")
        try:
            frame, _ = self.services.inspect_dataset(kind, session_id)
            parsed = InspectSettings.from_mapping(settings or {})
            scores = self.services.score_dataset(frame, [adapter])
            return summary_json(analyse(scores, adapter, parsed))
        except (ServiceInputError, KeyError, ValueError, TypeError) as exc:
            raise gr.Error(str(exc).strip("'\"")) from exc


def register(services: Services) -> None:
    """Add every endpoint of the headless API to the Blocks being built (call inside ``with gr.Blocks()``)."""
    api = Endpoints(services)
    gr.api(api.generate, api_name="generate", concurrency_id="model",
           concurrency_limit=config.APP.generation_concurrency)
    gr.api(api.variants, api_name="variants", concurrency_limit=None, queue=False)
    gr.api(api.vote, api_name="vote", concurrency_limit=None)
    gr.api(api.validate, api_name="validate", concurrency_limit=None)
    gr.api(api.train_start, api_name="train_start", concurrency_limit=None)
    gr.api(api.train_status, api_name="train_status", concurrency_limit=None, queue=False)
    gr.api(api.train_cancel, api_name="train_cancel", concurrency_limit=None, queue=False)
    gr.api(api.inspect, api_name="inspect", concurrency_limit=1, concurrency_id="inspect-score")
