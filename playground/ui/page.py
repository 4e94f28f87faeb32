"""The page: header, five tabs (Compare with its shared room, Inspect, Fine-tune, Runs, Learn), the session identity and
the headless API.

No module-level mutable state: everything per user lives in the browser (``gr.BrowserState``: the session id and the
running job's id, encrypted with a per-server secret kept in the data dir, so a refresh or a restart keeps them) or
in per-session ``gr.State``; everything per server lives in :class:`playground.serving.services.Services`.
"""

from __future__ import annotations

import html
import logging
import os
import secrets
from functools import partial

import gradio as gr

from playground import config
from playground.engine import threads
from playground.feedback import votes
from playground.serving.services import Services
from playground.ui import api, theme
from playground.ui.compare_tab import build_compare_tab, leaderboard_view, refresh_variants, votes_view
from playground.ui.finetune_tab import as_outputs, build_finetune_tab, reattach, send_votes
from playground.ui.inspect_tab import build_inspect_tab
from playground.ui.learn_tab import build_learn_tab
from playground.ui.room_panel import build_room_panel, wire_join_link, wire_room_panel
from playground.ui.runs_tab import build_runs_tab

log = logging.getLogger(__name__)

TITLE = "DPO vs KTO alignment playground"


def header_markdown(services: Services) -> str:
    info = services.describe()
    adapters = ", ".join(f"**{html.escape(a['name'])}** ({a['method'].upper()}, {a['source']})"
                         for a in info["adapters"]) or "none attached (only the base can generate)"
    notice = f"  \n⚠ {html.escape(info['base_weights_notice'])}" if info["base_weights_notice"] else ""
    return (f"# {TITLE}\n"
            "Compare → vote → fine-tune on your votes → compare again.  \n"
            f"Base model **{html.escape(info['base_model'])}** · device **{html.escape(info['device'])}** · "
            f"adapters: {adapters}{notice}")


def init_session(session_id):
    """The browser's session id: the stored one when valid, else a new random one (stored by the browser)."""
    return session_id if votes.valid_session_id(session_id) else secrets.token_hex(16)


def build_app(services: Services) -> gr.Blocks:
    # Gradio keeps a copy of every upload; copies older than the quota's age are deleted, checked as often
    cache_age = config.QUOTAS.upload_cache_seconds
    with gr.Blocks(title=TITLE, delete_cache=(cache_age, cache_age)) as demo:
        session = gr.BrowserState(None, storage_key=config.APP.session_storage_key, secret=services.secret)
        job_state = gr.BrowserState(None, storage_key=config.APP.session_storage_key + "-job",
                                    secret=services.secret)
        header = gr.Markdown(header_markdown(services), elem_id="pg-header")
        if services.messages:
            with gr.Accordion(f"Start-up notes ({len(services.messages)})", open=False):
                gr.Markdown("\n".join(f"- {html.escape(m)}" for m in services.messages))
        with gr.Tabs(selected="compare") as tabs:
            with gr.Tab("Compare", id="compare") as compare_tab_item:
                room = build_room_panel()
                compare = build_compare_tab(services, session)
                wire_room_panel(services, session, room, compare)
            with gr.Tab("Inspect", id="inspect"):
                inspect = build_inspect_tab(services, session)
            with gr.Tab("Fine-tune", id="finetune"):
                finetune = build_finetune_tab(services, session, job_state)
            with gr.Tab("Runs", id="runs") as runs_tab_item:
                runs_picker, (refresh_runs, show_runs, runs_inputs, runs_outputs) = build_runs_tab(services)
            with gr.Tab("Learn", id="learn") as learn_tab_item:
                learn = build_learn_tab(services, session)
                speed, refresh_speed = learn.speed, learn.refresh_speed
        api.register(services)

        # On load: restore or create the session id; show the session's votes, the current adapters (the page was
        # built once, adapters may have been trained since), a free adapter name; re-attach to the session's job.
        def page_state(selected):
            return (header_markdown(services), refresh_variants(services, selected),
                    services.suggest_adapter_name(config.TRAIN.method), refresh_speed())

        loaded = demo.load(init_session, [session], [session], api_name=False, queue=False)
        wire_join_link(services, session, room, compare, loaded)
        (loaded
         .then(partial(votes_view, services), [session], compare.votes_outputs, api_name=False, queue=False)
         .then(partial(leaderboard_view, services), compare.extra["board_inputs"], compare.extra["board_outputs"],
               api_name=False)
         .then(page_state, [compare.variants], [header, compare.variants, finetune.name, speed], api_name=False,
               queue=False)
         .then(lambda sid, job: as_outputs(reattach(services, sid, job)), [session, job_state],
               finetune.reattach_outputs, api_name=False)
         .then(learn.reattach, [session], learn.reattach_outputs, api_name=False))

        compare.send_button.click(partial(send_votes, services), [session, finetune.method],
                                  [finetune.source, *finetune.data_outputs, tabs], api_name=False)

        # A training finished: refresh the variant lists (ticking the new adapter, ready to compare again), the
        # header and the speed table. Switching to Compare refreshes too (another browser may have trained one).
        def adapters_changed(event, selected):
            name, _, status = (event or "").rpartition(":")
            selected = list(selected or [])
            if status == "done" and name and name not in selected and len(selected) < config.APP.compare_slots:
                selected.append(name)
            return refresh_variants(services, selected), header_markdown(services), refresh_speed()

        finetune.adapters_changed.change(adapters_changed, [finetune.adapters_changed, compare.variants],
                                         [compare.variants, header, speed], api_name=False, queue=False)
        compare_tab_item.select(partial(refresh_variants, services), [compare.variants], [compare.variants],
                                api_name=False, queue=False)
        learn_tab_item.select(refresh_speed, None, [speed], api_name=False, queue=False)
        runs_tab_item.select(refresh_runs, [runs_picker], [runs_picker], api_name=False, queue=False).then(
            show_runs, runs_inputs, runs_outputs, api_name=False)
        finetune.adapters_changed.change(inspect.refresh, None, [inspect.variants], api_name=False, queue=False)
        demo.load(inspect.refresh, None, [inspect.variants], api_name=False, queue=False)
    demo.queue(default_concurrency_limit=config.APP.concurrency_limit, max_size=config.APP.max_queue)
    return demo


def launch_options() -> dict:
    """Keyword arguments every launch of the page uses (look, upload size cap)."""
    return {**theme.launch_options(), "max_file_size": config.FEEDBACK.max_bytes}


def launch(base_model: str | None = None, host: str | None = None, port: int | None = None, **kwargs):
    """Load the model, build the page and serve it (loopback by default)."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    log.info(threads.describe())
    services = Services.create(base_model)
    for message in services.messages:
        log.warning(message)
    demo = build_app(services)
    # GRADIO_SERVER_NAME / GRADIO_SERVER_PORT (set on Hugging Face Spaces) win over the loopback defaults; an
    # explicit --host / --port other than the default wins over them.
    if host in (None, config.APP.host) and os.environ.get("GRADIO_SERVER_NAME"):
        host = os.environ["GRADIO_SERVER_NAME"]
    if port in (None, config.APP.port) and os.environ.get("GRADIO_SERVER_PORT", "").isdigit():
        port = int(os.environ["GRADIO_SERVER_PORT"])
    options = {**launch_options(), "server_name": host or config.APP.host, "server_port": port or config.APP.port,
               **kwargs}
    demo.launch(**options)
    return demo
