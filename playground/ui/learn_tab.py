"""Learn tab: DPO and KTO for a non-specialist, in a few screens, with the source document's claims shown beside the
corrected ones (docs/DESIGN.md section 4). The value-function figure draws ``prospect.prospect_value`` and
``prospect.source_objective``, the same functions the Inspect tab uses."""

from __future__ import annotations

import html
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import gradio as gr
import plotly.graph_objects as go
import torch

from playground import config, plots
from playground.analysis.claims import SHIPPED_RESULTS, load_results, verdicts
from playground.feedback import votes
from playground.objectives.prospect import prospect_value, source_objective
from playground.plots.claims import FIGURES as CLAIM_FIGURES
from playground.serving.claims import demo_data, sweep_for
from playground.serving.services import Services
from playground.serving.settings import ServiceInputError
from playground.training.experiments import claim_runs
from playground.training.jobs import QueueFull
from playground.ui.finetune_tab import job_status_line, progress_html

LATEX = [{"left": "$$", "right": "$$", "display": True}, {"left": "$", "right": "$", "display": False}]

OBJECTIVES = r"""
### Both start from the same question: how much more likely does the tuned model make an answer?

For a prompt $x$ and an answer $y$, compare the tuned model $\pi_\theta$ (base + adapter) with the **reference**
$\pi_\text{ref}$ (the base with the adapter switched off):

$$r(x,y) = \log \pi_\theta(y\mid x) - \log \pi_\text{ref}(y\mid x)$$

$\beta\, r(x,y)$ is the answer's **implied reward**: positive when tuning made the answer more likely.

#### DPO — Direct Preference Optimization (Rafailov et al., 2023)
Needs **pairs**: a better answer $y_w$ and a worse one $y_l$ to the same prompt. It pushes the better answer's
implied reward above the worse one's (a Bradley–Terry preference model):

$$\mathcal{L}_\text{DPO} = -\log \sigma\big(\beta\,[\,r(x,y_w) - r(x,y_l)\,]\big)$$

At the start ($\pi_\theta = \pi_\text{ref}$) every pair costs $\ln 2$; a pair stops pushing once its margin is large.

#### KTO — Kahneman–Tversky Optimization (Ethayarajh et al., 2024)
Needs only **labelled answers**: 👍 desirable or 👎 undesirable, no pairing. Each answer is judged against a
reference point $z_0$, an estimate of how far the model has drifted from the base overall
($z_0 = \max(0, \widehat{\mathrm{KL}}(\pi_\theta\,\|\,\pi_\text{ref}))$, from mismatched prompt/answer pairs in
the batch):

$$v(x,y) = \begin{cases} \lambda_D\, \sigma\big(\beta\,(r(x,y) - z_0)\big) & y \text{ desirable} \\
\lambda_U\, \sigma\big(\beta\,(z_0 - r(x,y))\big) & y \text{ undesirable} \end{cases}
\qquad \mathcal{L}_\text{KTO} = \mathbb{E}\big[\lambda_y - v(x,y)\big]$$

A desirable answer gains when it rises *above* the reference point, an undesirable one when it falls below it.
The paper recommends weights with $\lambda_D n_D / (\lambda_U n_U) \in [1, 4/3]$; the Fine-tune tab checks this live.
"""

DATA_TEMPLATE = """
### What data each one needs

{data_table}

Both formats use the same column names as TRL's datasets, so files move between this app and TRL. The app converts
when it can: a pair becomes one desirable and one undesirable answer for KTO; a prompt with both 👍 and 👎 answers
becomes pairs for DPO (what cannot be paired is counted and reported).

On the **Compare** tab, *left/right better* votes export as pairs, and as a 👍 winner plus a 👎 loser for KTO;
*both bad* exports as two 👎 answers; *tie* is recorded but never exported as training data (neither method learns
from "equally good").
"""

REFERENCE = r"""
### What the reference model does

The reference $\pi_\text{ref}$ is the model *before* tuning. Both objectives measure an answer by how much
tuning changed its probability, $r(x,y) = \log \pi_\theta(y|x) - \log \pi_\text{ref}(y|x)$, and $\beta$ sets how
strongly the tuned model is held near the reference: a small $\beta$ lets it move further.

* **DPO** uses $\pi_\text{ref}$ in both log-ratios.
* **KTO as published uses one too**: in $r(x,y)$ and in the reference point $z_0$, which needs an extra forward pass
  over mismatched prompt/answer pairs. (Reference-*free* cousins exist, e.g. SimPO and ORPO; they are different
  methods.)
* **With LoRA the reference costs no memory**: it is the same base weights with the adapter switched off. This app
  computes the reference log-probs once, before the first training step, and the Compare tab scores every answer
  under the base in the same pass as under its own adapter.
"""

WHICH = """
### When to prefer which

* **You have pairs** (people compared two answers): **DPO**. It uses the comparison directly and gives fine control
  of style.
* **You have single ratings** (thumbs, accept/reject logs), or far more of one label than the other: **KTO**. It
  needs no pairing and lets you weight desirable and undesirable answers (λ_D, λ_U).
* **Labels are noisy or the domain is risk-sensitive** (an undesirable answer is costly): KTO's saturating value
  and its separate weight on undesirable answers make it the usual first choice.
* **Either way**: keep β moderate (0.1 is the papers' default), watch the held-out preference accuracy on the
  Fine-tune tab, and compare the answers side by side before trusting a number.
"""


FAMILY = r"""
### Five more methods of the same family

Each one trains on the Fine-tune tab (and through the CLI and the API), and Inspect's **Method family** tab computes
all of them from the same cached log-probs. $\ell(y) = \log \pi_\theta(y\mid x)$ summed over the answer's
$|y|$ tokens, $r(y) = \ell(y) - \log \pi_{\text{ref}}(y\mid x)$.

- **SimPO** (Meng et al. 2024): no reference model. The reward is the *average* token log-prob, and the loss asks
  for a margin $\gamma$: $-\log \sigma\big(\tfrac{\beta}{|y_w|}\ell(y_w) - \tfrac{\beta}{|y_l|}\ell(y_l) -
  \gamma\big)$ ($\beta = 2$, $\gamma = 1$ by default). Cheaper steps: no reference pass.
- **ORPO** (Hong et al. 2024): no reference model either. Supervised NLL on the chosen answer plus $\beta$ times an
  odds-ratio term, $-\log \sigma\big(\log\tfrac{P_w}{1-P_w} - \log\tfrac{P_l}{1-P_l}\big)$ with $P$ the average
  token likelihood. Its NLL is built in, so the SFT weight is not added.
- **APO-zero / APO-down** (D'Oosterlinck et al. 2024): anchored to the reference. APO-zero pushes the chosen answer
  up and the rejected one down, each on its own: $(1-\sigma(\beta r_w)) + \sigma(\beta r_l)$; APO-down, for data
  whose chosen answers are worse than the model's own, lets both go down while keeping them apart.
- **BCO** (Jung et al. 2024): single labelled answers, like KTO. Each is classified as good or bad against a running
  baseline $\delta$ of the rewards: $-\log\sigma(\beta r - \delta)$ if good, $-\log\sigma(-(\beta r - \delta))$ if
  bad (the paper's distribution-matching weights are not built here).

"No reference model" is exactly what the source material claims for KTO; it is true of SimPO and ORPO, not of KTO as
published (tab 3). The equations, the TRL counterparts and where TRL differs from the papers are in
`docs/OBJECTIVES.md`.
"""


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    """A Markdown table from cells (so the source lines stay short)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


DATA = DATA_TEMPLATE.replace("{data_table}", _table(("", "DPO", "KTO"), [
    ("One row is", "a prompt with a **chosen** and a **rejected** answer",
     "a prompt with **one** answer and a 👍/👎 label"),
    ("File columns", "`prompt, chosen, rejected`", "`prompt, completion, label`"),
    ("Where it comes from", "'left is better than right' votes, A/B tests, rankings",
     "thumbs up/down, support tickets, any single rating"),
    ("Cost of collecting", "both answers to the same prompt must be judged together",
     "each answer judged on its own: cheaper, more plentiful"),
]))


def _measured(verdicts: dict[str, str], claim: str) -> str:
    verdict = verdicts.get(claim)
    return f" · **measured here: {verdict}** (tab 7)" if verdict and verdict != "not measured" else ""


def comparison_table(measured: dict[str, str] | None = None) -> str:
    """The source document's comparison (docs/DESIGN.md section 4), its wrong claims shown beside the corrections,
    and, from ``measured`` (claim -> verdict of ``analysis.claims``), what the shipped experiments found."""
    measured = measured or {}
    glance = _table(("", "DPO", "KTO"), [
        ("Model of human judgement", "Bradley–Terry preferences between two answers",
         "Prospect theory: gains and losses against a reference point"),
        ("Data", "pairs required (chosen, rejected)", "unpaired 👍/👎 labels work" + _measured(measured, "unpaired")),
        ("Sensitivity", "sensitive to the reference model",
         "more robust to noisy labels" + _measured(measured, "noise")),
        ("Few desirable examples", "n/a (every pair has one of each)",
         "tolerates up to 90% fewer (KTO paper)" + _measured(measured, "imbalance")),
        ("Typical use", "fine style control", "risk-sensitive domains"),
        ("Reference model", r"yes: $\pi_\text{ref}$ in both log-ratios",
         r"**source said:** none needed, lighter · **correct:** as published it uses $\pi_\text{ref}$ (in $r$ and "
         r"in $z_0$) plus an extra pass for mismatched pairs; with LoRA the reference is the base with the adapter "
         "off, so no extra memory" + _measured(measured, "compute")),
    ])
    objective = _table(("", "formula", "what it does"), [
        ("**Source document (as written, wrong)**", r"$\mathbb{E}\big[\lambda\,\mathrm{ReLU}(V-\tau) - "
         r"\mathrm{ReLU}(\tau - V)\big]$",
         "puts λ on the **gain** side and uses **no labels**: minimised, it pushes every V down, good and bad "
         "answers alike"),
        ("**Prospect theory (corrected)**",
         r"$v(V) = \mathrm{ReLU}(V-\tau) - \lambda\,\mathrm{ReLU}(\tau - V)$, $\lambda > 1$",
         "**losses loom larger**: below the reference point τ the slope is λ"),
        ("**KTO paper (trainable form)**", r"$\lambda_y - v(x,y)$ with $v$ as on the first screen",
         r"the same idea, saturated by a sigmoid, with τ played by $z_0$ and V by $r(x,y)$, and the label "
         "deciding the side"),
    ])
    return ("### DPO vs KTO at a glance (the source document's table, corrected where it was wrong)\n\n"
            f"{glance}\n\n### The objective, side by side\n\n{objective}\n")


def value_function_figure(loss_aversion: float = config.VALUES.loss_aversion, tau: float = 0.0) -> go.Figure:
    """Prospect theory's value (λ on losses) vs the source document's formula (λ on gains), around tau."""
    grid = torch.linspace(tau - 3.0, tau + 3.0, 121)
    correct = prospect_value(grid, tau, loss_aversion)
    source = source_objective(grid, tau, loss_aversion)
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=grid.tolist(), y=correct.tolist(), name="prospect theory (corrected): losses × λ",
                             line=dict(color=plots.CORRECT_COLOR, width=3),
                             hovertemplate="V=%{x:.2f}<br>value %{y:.2f}<extra></extra>"))
    fig.add_trace(go.Scatter(x=grid.tolist(), y=source.tolist(), name="source document (as written): gains × λ",
                             line=dict(color=plots.SOURCE_COLOR, width=3, dash="dash"),
                             hovertemplate="V=%{x:.2f}<br>source objective %{y:.2f}<extra></extra>"))
    fig.add_vline(x=tau, line=dict(color=plots.GUIDE_COLOR, dash="dot"), annotation_text="reference point τ",
                  annotation_position="top left")
    fig.add_annotation(x=tau + 2.0, y=2.0 - 1.0, text="gains: slope 1", showarrow=False, yanchor="top",
                       font=dict(color=plots.GOOD_COLOR, size=16))
    fig.add_annotation(x=tau - 2.0, y=-2.0 * loss_aversion - 0.6, text=f"losses: slope λ = {loss_aversion:g}",
                       showarrow=False, yanchor="top", font=dict(color=plots.BAD_COLOR, size=16))
    fig.update_layout(template=plots.TEMPLATE, title=dict(text="Value of an outcome V around the reference point"),
                      height=380, xaxis_title="V (outcome, e.g. the implied reward)", yaxis_title="felt value",
                      legend=dict(orientation="h", y=-0.25, x=0.5, xanchor="center"),
                      margin=dict(l=70, r=30, t=60, b=110))
    return fig


PROSPECT = r"""
### Prospect theory in one picture

Kahneman and Tversky found that people judge outcomes as **gains or losses against a reference point** (not by
absolute level), and that **losses weigh more than equal gains** (*loss aversion*, λ ≈ 2.25 in their data).
KTO borrows both ideas: the reference point is $z_0$ (how far the model has drifted overall), and an answer's
outcome is its implied reward. Move λ to see the kink; the dashed curve is the source document's formula, which
puts λ on the wrong side.
"""


def speed_markdown(records: list[dict], device: str) -> str:
    """Measured seconds per step of DPO and KTO on this device, from finished or running trainings."""
    here = [r for r in records if r["this_device"]]
    lines = [f"### Measured step time on this device\nDevice: **{html.escape(device)}**\n"]
    if not here:
        lines.append("No training has run on this device yet: start one on the **Fine-tune** tab and its measured "
                     "time per optimizer step appears here. (KTO does one extra no-gradient forward pass per step "
                     "for the mismatched pairs behind $z_0$; DPO does two sequences per pair.)")
    else:
        by_method: dict[str, list[float]] = {}
        for record in here:
            by_method.setdefault(record["method"], []).append(record["seconds_per_step"])
        lines.append("| method | mean seconds / step | trainings |\n|---|---|---|")
        for method, times in sorted(by_method.items()):
            lines.append(f"| {method.upper()} | {sum(times) / len(times):.2f} | {len(times)} |")
        if "dpo" in by_method and "kto" in by_method:
            ratio = (sum(by_method["kto"]) / len(by_method["kto"])) / (sum(by_method["dpo"]) / len(by_method["dpo"]))
            lines.append(f"\nKTO takes **{ratio:.2f}×** the time of DPO per step here (batch sizes and lengths "
                         "may differ between runs).")
        lines.append("\n| adapter | method | steps | s / step |\n|---|---|---|---|")
        for record in here:
            lines.append(f"| {html.escape(record['name'])} | {record['method'].upper()} | {record['steps']} | "
                         f"{record['seconds_per_step']:.2f} |")
    others = [r for r in records if not r["this_device"]]
    if others:
        lines.append("\nMeasured elsewhere (shipped adapters, other devices): " + "; ".join(
            f"{html.escape(r['name'])} {r['method'].upper()} {r['seconds_per_step']:.2f} s/step on "
            f"{html.escape(r['device'])}" for r in others))
    return "\n".join(lines)


def refresh_speed(services: Services) -> str:
    return speed_markdown(services.step_times(), services.engine.device.describe())


VERDICT_MARKS = {"holds": "✅", "does not hold": "❌", "holds only partly": "◐", "no measurable difference": "≈",
                 "not measured": "…"}
CLAIMS_INTRO = ("Each claim of the source material, the experiment that tests it on this base model, the measured "
                "result and a verdict decided by the numbers (a difference in held-out accuracy under "
                f"{config.CLAIMS.accuracy_tolerance:.2f} counts as none). Every run trains a fresh LoRA adapter "
                "through the same loop as the Fine-tune tab and is measured on clean held-out pairs; the numbers "
                "are precomputed on a CPU (small: a quick version, not the papers' scale) and the command under "
                "each reproduces them. Re-run measures one claim again on this server (a quick version on a CPU, "
                "the full sweep on a GPU) and shows its numbers beside what the shipped ones said.")


def claim_markdown(verdict, note: str = "") -> str:
    """One claim: the claim, its verdict with a mark, the numbers that decided it, the command that measured it, and
    ``note`` (where a re-run's numbers came from) under the claim."""
    mark = VERDICT_MARKS.get(verdict.verdict, "")
    command = f"\n\nReproduce: `{verdict.command}`" if verdict.command else ""
    note = f"\n\n{note}" if note else ""
    return (f"#### {verdict.text}{note}\n\n{mark} **{verdict.verdict}**: {html.escape(verdict.because)}{command}")


def claims_view(path=SHIPPED_RESULTS) -> list:
    """(markdown, figure) per claim of ``analysis.claims.CLAIM_ORDER``, from the shipped results."""
    out = []
    for verdict in verdicts(load_results(path)):
        out += [claim_markdown(verdict), CLAIM_FIGURES[verdict.claim](verdict.table)]
    return out


# --------------------------------------------------------------------------------------------------------------------
# Claims measured again on this server (serving.claims), through the training queue

SHIPPED, RERUN = "Shipped results", "Re-run on this server"
CLAIM_CHOICES = [("Unpaired thumbs", "unpaired"), ("Label noise", "noise"), ("Few desirable", "imbalance"),
                 ("Reference and compute", "compute")]
RERUN_OUTPUTS = ("job", "timer", "start", "cancel", "progress", "status", "source", "download", "claims")


def rerun_claims_view(services: Services) -> list:
    """(markdown, figure) per claim from this server's re-runs, each saying how it was run and what the shipped
    results said; claims not re-run here say how to re-run them."""
    shipped = {v.claim: v.verdict for v in verdicts(load_results())}
    claims = load_results(services.claims_rerun_file)
    out = []
    for verdict in verdicts(claims, missing="not re-run on this server yet: choose it above and press Re-run."):
        payload = claims.get(verdict.claim) or {}
        rerun = payload.get("rerun") or {}
        note = (f"*Re-run here ({rerun.get('size', '?')} version, {len(payload.get('runs', []))} runs in "
                f"{rerun.get('seconds', 0):.0f} s on {html.escape(str(payload.get('device', '?')))}, "
                f"{html.escape(str(payload.get('created', '')))}); the shipped results say "
                f"**{shipped.get(verdict.claim, 'not measured')}**.*" if payload else "")
        out += [claim_markdown(verdict, note), CLAIM_FIGURES[verdict.claim](verdict.table)]
    return out


def rerun_estimate(services: Services, claim: str) -> str:
    """What pressing Re-run for ``claim`` will train, and how long its shipped runs took on the machine that made
    them."""
    sweep = services.claims_sweep or sweep_for(services.engine.device)[1]
    runs = len(claim_runs(claim, demo_data(sweep)[0], sweep.steps, sweep.seeds, sweep.rates))
    shipped = load_results().get(claim) or {}
    same_size = [r.get("total_seconds") or 0 for r in shipped.get("runs", [])
                 if (r.get("settings") or {}).get("steps") == sweep.steps
                 and str((shipped.get("data") or {}).get("train_rows")) == str(sweep.pairs)]
    per_run = sum(same_size) / len(same_size) if same_size else None
    took = (f"; a shipped run of this size took {per_run / 60:.1f} min on "
            f"{html.escape(str(shipped.get('device', '?')))}, so about {runs * per_run / 60:.0f} min in all there"
            if per_run else "")
    steps = f"{sweep.steps} step{'s' if sweep.steps != 1 else ''}"
    return (f"Re-run trains **{runs} runs** of {steps} on {sweep.pairs or 'all'} demo pairs, measured on "
            f"{sweep.heldout} held-out pairs{took}. It waits its turn in the training queue (one job at a time, "
            "shared with the Fine-tune tab) and can be cancelled.")


def rerun_status(view: dict | None) -> str:
    """One line on a re-run job: which claim, its state, its current run and step, or its error."""
    if not view:
        return ""
    claim = dict((key, label) for label, key in CLAIM_CHOICES).get(view.get("claim") or "", view["name"])
    return job_status_line(view, f"**{html.escape(claim)}** re-run")


def start_rerun(services: Services, session_id, claim) -> dict:
    if not votes.valid_session_id(session_id):
        raise gr.Error("The page has no session yet: wait a second after loading, or reload the page.")
    try:
        job = services.start_claim_rerun(str(claim or ""), session_id)
    except (ServiceInputError, QueueFull) as exc:
        raise gr.Error(str(exc)) from None
    view = services.claim_rerun_view(job.id, session_id)
    return {"job": job.id, "timer": gr.Timer(active=True), "start": gr.update(interactive=False),
            "cancel": gr.update(interactive=True), "progress": progress_html(view), "status": rerun_status(view)}


def poll_rerun(services: Services, session_id, job_id) -> dict:
    """One timer tick: progress while the re-run waits or trains; at its end the buttons are reset and, when it is
    done, the view switches to this server's re-runs with the new claim drawn and its JSON offered."""
    view = services.claim_rerun_view(job_id, session_id)
    if view is None:
        return {"timer": gr.Timer(active=False), "start": gr.update(interactive=True),
                "cancel": gr.update(interactive=False)}
    out = {"progress": progress_html(view), "status": rerun_status(view)}
    if view["status"] in ("queued", "running"):
        return {**out, "timer": gr.Timer(active=True), "start": gr.update(interactive=False),
                "cancel": gr.update(interactive=True)}
    out.update(timer=gr.Timer(active=False), start=gr.update(interactive=True), cancel=gr.update(interactive=False))
    if view["status"] == "done":
        out.update(source=RERUN, claims=rerun_claims_view(services), download=_download(services))
    return out


def cancel_rerun(services: Services, session_id, job_id) -> str:
    job = services.queue.get(job_id) if job_id else None
    if job is None or job.finished or job.owner != session_id or job.kind != "experiment":
        raise gr.Error("No re-run of yours to cancel.")
    services.queue.cancel(job_id)
    gr.Info("Cancelling: the re-run stops at its next step and keeps nothing.", duration=4)
    return rerun_status(services.claim_rerun_view(job_id, session_id))


def reattach_rerun(services: Services, session_id) -> dict:
    """On page load: watch this browser's newest re-run again when it is still queued or running."""
    job = services.latest_job_for(session_id, kind="experiment") if votes.valid_session_id(session_id) else None
    if job is None or job.finished:
        return {"job": job.id if job else None, "download": _download(services)}
    return {"job": job.id, **poll_rerun(services, session_id, job.id)}


def show_results(services: Services, source) -> list:
    return rerun_claims_view(services) if source == RERUN else claims_view()


def _download(services: Services):
    path = services.claims_rerun_file
    return gr.update(value=str(path), visible=True) if path.is_file() else gr.update(value=None, visible=False)


def rerun_outputs(values: dict, components: dict) -> list:
    """A re-run handler's values by name, as Gradio's outputs (``gr.skip()`` where it leaves one alone); "claims"
    fills every claim's markdown and figure."""
    out = []
    for name in RERUN_OUTPUTS:
        if name == "claims":
            out += values.get("claims") or [gr.skip()] * len(components["claims"])
        else:
            out.append(values[name] if name in values else gr.skip())
    return out


@dataclass
class LearnTab:
    speed: gr.Markdown
    refresh_speed: Callable[[], str]
    reattach: Callable[[str | None], list]  # the page calls it on load with the session id
    reattach_outputs: list


def build_claims_view(services: Services, session) -> tuple[Callable[[str | None], list], list]:
    """Tab 7: the rerun controls and one (markdown, figure) per claim; returns the page-load re-attach and its
    outputs."""
    gr.Markdown(CLAIMS_INTRO, elem_classes=["pg-note"])
    size = "custom" if services.claims_sweep else sweep_for(services.engine.device)[0]
    source = gr.Radio([SHIPPED, RERUN], value=SHIPPED, label="Results shown", elem_id="pg-claims-source")
    with gr.Row(elem_id="pg-claims-rerun"):
        claim = gr.Dropdown(CLAIM_CHOICES, value=CLAIM_CHOICES[0][1], label="Claim to measure again", scale=3,
                            elem_id="pg-claims-claim")
        with gr.Column(scale=2, min_width=200):
            start = gr.Button(f"Re-run ({size} version)", variant="primary", elem_id="pg-claims-start")
            cancel = gr.Button("Cancel", interactive=False, size="sm", elem_id="pg-claims-cancel")
    estimate = gr.Markdown(rerun_estimate(services, CLAIM_CHOICES[0][1]), elem_id="pg-claims-estimate")
    status = gr.Markdown("", elem_id="pg-claims-status")
    progress = gr.HTML(progress_html(None), elem_id="pg-claims-progress")
    download = gr.File(label="This server's re-run results (JSON)", visible=False, elem_id="pg-claims-download")
    timer = gr.Timer(config.APP.poll_seconds, active=False)
    job = gr.State(None)
    view = claims_view()
    parts = []
    with gr.Column(elem_id="pg-learn-claims"):
        for index in range(0, len(view), 2):
            parts.append(gr.Markdown(view[index], elem_classes=["pg-claim"]))
            parts.append(gr.Plot(view[index + 1], show_label=False))
    components = {"job": job, "timer": timer, "start": start, "cancel": cancel, "progress": progress,
                  "status": status, "source": source, "download": download, "claims": parts}
    outputs = [c for name in RERUN_OUTPUTS for c in (components[name] if name == "claims" else [components[name]])]

    def wired(handler):
        return lambda *args: rerun_outputs(handler(services, *args), components)

    claim.change(partial(rerun_estimate, services), [claim], [estimate], api_name=False, queue=False)
    start.click(wired(start_rerun), [session, claim], outputs, api_name=False)
    timer.tick(wired(poll_rerun), [session, job], outputs, api_name=False, show_progress="hidden")
    cancel.click(partial(cancel_rerun, services), [session, job], [status], api_name=False)
    source.input(partial(show_results, services), [source], parts, api_name=False)
    return wired(reattach_rerun), outputs


def build_learn_tab(services: Services, session) -> LearnTab:
    """The speed Markdown and its refresh (the page refreshes it when a run ends), and the claims re-run's
    re-attach on page load."""
    with gr.Tabs():
        with gr.Tab("1 · Objectives"):
            gr.Markdown(OBJECTIVES, latex_delimiters=LATEX, elem_id="pg-learn-objectives")
        with gr.Tab("2 · Data"):
            gr.Markdown(DATA, latex_delimiters=LATEX)
        with gr.Tab("3 · Reference"):
            gr.Markdown(REFERENCE, latex_delimiters=LATEX)
        with gr.Tab("4 · Prospect theory"):
            gr.Markdown(PROSPECT, latex_delimiters=LATEX)
            with gr.Row():
                lam = gr.Slider(1.0, 4.0, value=config.VALUES.loss_aversion, step=0.05, label="loss aversion λ")
            figure = gr.Plot(value_function_figure(), label="Value function", elem_id="pg-learn-value")
            lam.change(value_function_figure, [lam], [figure], api_name=False, queue=False, show_progress="hidden")
        with gr.Tab("5 · Source corrected"):
            gr.Markdown(WHICH, latex_delimiters=LATEX)
            measured = {v.claim: v.verdict for v in verdicts(load_results())}
            gr.Markdown(comparison_table(measured), latex_delimiters=LATEX, elem_id="pg-learn-table")
        with gr.Tab("6 · More methods"):
            gr.Markdown(FAMILY, latex_delimiters=LATEX, elem_id="pg-learn-family")
        with gr.Tab("7 · Claims measured"):
            reattach, reattach_outputs = build_claims_view(services, session)
        with gr.Tab("8 · Speed here"):
            speed = gr.Markdown(refresh_speed(services), latex_delimiters=LATEX, elem_id="pg-learn-speed")
            refresh = gr.Button("Refresh measurements", size="sm")
            refresh.click(partial(refresh_speed, services), None, [speed], api_name=False, queue=False)
    return LearnTab(speed, partial(refresh_speed, services), reattach, reattach_outputs)
