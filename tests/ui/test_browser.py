"""The page in headless Chromium (Debian's /usr/bin/chromium driven by Playwright), on the tiny engine.

Generates side by side, votes, runs a 2-step fine-tune and watches its curve update, reloads the page (the session
keeps its votes and re-attaches to its job), and saves a 1280x720 screenshot of each tab into test-artifacts/.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from tiny_server import serving

from playground.serving.blind import blind_order
from playground.serving.services import Services
from playground.ui.page import build_app

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--no-first-run"]
VIEWPORT = {"width": 1280, "height": 720}


@pytest.fixture()
def browser():
    if not Path(CHROMIUM).is_file():
        pytest.skip("Chromium is not installed (sudo apt-get install chromium); the browser test needs "
                    "/usr/bin/chromium because Playwright's own browser download is not used here.")
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright Python package is not installed")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture()
def url(tiny_engine, tmp_path):
    services = Services.for_engine(tiny_engine, tmp_path / "data")
    with serving(build_app(services)) as served_url:
        yield served_url


def _shot(page, name: str, full_page: bool = False) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=full_page)


def _tab(page, name: str) -> None:
    page.get_by_role("tab", name=name).click()
    page.wait_for_timeout(600)


def _wait_text(page, selector: str, text: str, timeout: int) -> None:
    page.wait_for_function("([sel, text]) => { const el = document.querySelector(sel); "
                           "return !!el && el.innerText.includes(text); }", arg=[selector, text], timeout=timeout)


def _set_number(page, elem_id: str, value) -> None:
    box = page.locator(f"#{elem_id} input")
    box.fill(str(value))
    box.press("Tab")


def test_compare_vote_finetune_and_reload(browser, url):
    page = browser.new_page(viewport=VIEWPORT)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(url)
    page.wait_for_selector("#pg-generate", timeout=60_000)
    page.wait_for_timeout(1000)  # the session id is created on load

    # Compare: three answers side by side, then coloured tokens, metrics and the chart.
    page.fill("#pg-prompt textarea", "Give me one tip for writing a clear email.")
    page.click("#pg-generate")
    page.wait_for_selector("#pg-answer-2 .pg-answer .tok", state="attached", timeout=60_000)
    page.wait_for_selector("#pg-compare-plot .js-plotly-plot", timeout=30_000)
    assert page.locator(".pg-variant-head").filter(has_text="dpo").count() >= 1
    assert "implied reward" in page.locator(".pg-metrics").first.inner_text()
    # at 1280x720 no subplot title overlaps another, nor a value printed above a bar
    overlaps = page.evaluate("""() => {
        const plot = document.querySelector('#pg-compare-plot');
        const boxes = sel => [...plot.querySelectorAll(sel)].map(e => e.getBoundingClientRect());
        const titles = boxes('g.annotation'), texts = boxes('.bartext');
        const hit = (a, b) => a.left < b.right && b.left < a.right && a.top < b.bottom && b.top < a.bottom;
        let n = 0;
        titles.forEach((t, i) => { titles.slice(i + 1).forEach(u => { n += hit(t, u); });
                                   texts.forEach(b => { n += hit(t, b); }); });
        return [titles.length, texts.length, n];
    }""")
    assert overlaps[0] >= 4 and overlaps[1] >= 9 and overlaps[2] == 0, overlaps
    page.locator("#pg-compare-plot").scroll_into_view_if_needed()
    page.evaluate("window.scrollTo(0, 0)")
    _shot(page, "compare")

    # Votes: left (kto) better than right (dpo), and a thumbs-up on the kto answer. (The tiny random base may
    # answer with blank lines, which the export would rightly drop, so the pair is between the two adapters.)
    page.locator("#pg-left input").click()
    page.get_by_role("option", name="kto", exact=True).click()
    page.click("#pg-vote-left_better")
    _wait_text(page, "#pg-votes", "left better", 20_000)
    page.click("#pg-up-2")
    _wait_text(page, "#pg-votes", "👍", 20_000)
    assert "1 pair" in page.locator("#pg-vote-note").inner_text()
    page.locator("#pg-votes").scroll_into_view_if_needed()
    _shot(page, "compare_votes")
    _shot(page, "compare_full", full_page=True)

    # Send the votes to Fine-tune: the tab opens with them validated.
    page.click("#pg-send")
    _wait_text(page, "#pg-ft-report", "Ready to train", 20_000)
    assert page.get_by_role("tab", name="Fine-tune").get_attribute("aria-selected") == "true"

    # A 2-step DPO run on the shipped example file; the curves fill in as it runs.
    page.get_by_label("Example file").check()
    page.locator("#pg-ft-example input").click()
    page.get_by_role("option", name="paired_example.csv", exact=True).click()
    _wait_text(page, "#pg-ft-report", "20 of 20 data rows usable", 20_000)
    _set_number(page, "pg-ft-steps", 2)
    _set_number(page, "pg-ft-batch", 2)
    _set_number(page, "pg-ft-maxlen", 64)
    page.locator("#pg-ft-name textarea").fill("browser-run")
    assert page.locator("#pg-ft-plan").inner_text().count("2 optimizer steps") == 1
    page.click("#pg-ft-start")
    # the probe timeline fills in while the run goes: the start row first, then one row per probe step
    page.wait_for_selector("#pg-ft-probes-table tbody tr", timeout=240_000)
    _wait_text(page, "#pg-ft-status", "done", 240_000)
    page.wait_for_function("document.querySelectorAll('#pg-ft-probes-table tbody tr').length >= 3", timeout=30_000)
    rows = page.locator("#pg-ft-probes-table tbody tr th").all_inner_texts()
    assert rows[:3] == ["start", "step 1", "step 2"], rows
    assert "fluency" in page.locator("#pg-ft-probes-table").inner_text()
    page.wait_for_function("document.querySelectorAll('#pg-ft-curves path.point').length >= 2", timeout=30_000)
    assert "Step 2 / 2" in page.locator("#pg-ft-progress").inner_text()
    page.wait_for_selector("#pg-ft-zip", state="visible", timeout=20_000)
    assert "tie (0.5)" in page.locator("#pg-ft-result").inner_text()
    page.locator("#pg-ft-curves").scroll_into_view_if_needed()
    _shot(page, "finetune_progress")
    page.evaluate("window.scrollTo(0, 0)")
    _shot(page, "finetune")
    _shot(page, "finetune_full", full_page=True)

    # The new adapter is a variant on Compare.
    _tab(page, "Compare")
    _wait_text(page, "#pg-variants", "browser-run", 20_000)

    _tab(page, "Inspect")
    _shot(page, "inspect")
    _tab(page, "Learn")
    assert page.locator("#pg-learn-objectives .katex").count() > 0  # LaTeX rendered
    _shot(page, "learn")
    page.get_by_role("tab", name="4 · Prospect theory").click()
    page.wait_for_selector("#pg-learn-value .js-plotly-plot", timeout=20_000)
    _shot(page, "learn_prospect")
    page.get_by_role("tab", name="7 · Claims measured").click()
    page.wait_for_selector("#pg-learn-claims .js-plotly-plot", timeout=20_000)
    claims_text = page.locator("#pg-learn-claims").inner_text()
    assert claims_text.count("Reproduce:") == 4 and "not measured" not in claims_text
    _shot(page, "learn_claims", full_page=True)
    page.get_by_role("tab", name="8 · Speed here").click()
    _wait_text(page, "#pg-learn-speed", "browser-run", 20_000)

    # A reload keeps the session: its votes, and the finished job re-attached on Fine-tune.
    page.reload()
    _wait_text(page, "#pg-votes", "left better", 60_000)
    _tab(page, "Fine-tune")
    _wait_text(page, "#pg-ft-status", "browser-run", 30_000)
    assert re.search(r"done", page.locator("#pg-ft-status").inner_text())
    assert not errors, errors


def test_a_blind_room_from_two_browsers(browser, tiny_engine, tmp_path):
    """A presenter opens a room and generates; a second browser joins from the link, sees the answers as Model A,
    B, C with no names, votes, and sees the names revealed; the presenter's room leaderboard counts the vote."""
    services = Services.for_engine(tiny_engine, tmp_path / "data")
    errors: list[str] = []
    with serving(build_app(services)) as url:
        presenter = browser.new_context(viewport=VIEWPORT).new_page()  # own storage: its own session
        member = browser.new_context(viewport=VIEWPORT).new_page()
        for page in (presenter, member):
            page.on("pageerror", lambda exc: errors.append(str(exc)))
        presenter.goto(url)
        presenter.wait_for_selector("#pg-generate", timeout=60_000)
        presenter.wait_for_timeout(1000)
        presenter.click("#pg-room button")  # the accordion
        presenter.click("#pg-room-open")
        _wait_text(presenter, "#pg-room-note", "You present room", 20_000)
        code = presenter.locator("#pg-room-code input").input_value()
        assert re.fullmatch(r"[A-Z2-9]{4}-[A-Z2-9]{4}", code), code
        assert presenter.locator("#pg-blind input").is_checked()  # a room votes blind
        presenter.fill("#pg-prompt textarea", "Give me one tip for writing a clear email.")
        presenter.click("#pg-generate")
        _wait_text(presenter, "#pg-room-note", "1 prompt published", 60_000)

        member.goto(f"{url}?room={code}")
        _wait_text(member, "#pg-room-note", "prompt 1", 60_000)
        _wait_text(member, "#pg-status", "Room prompt 1", 30_000)  # the next poll brings the answers
        assert member.locator("#pg-prompt textarea").input_value() == "Give me one tip for writing a clear email."
        heads = " ".join(member.locator(".pg-variant-head").all_inner_texts())
        assert "Model A" in heads and "Model C" in heads and "hidden until you vote" in heads
        for name in ("dpo", "kto", "base"):
            assert name not in heads
        _shot(member, "room_member_blind")
        member.click("#pg-vote-left_better")
        _wait_text(member, "#pg-status", "Revealed:", 20_000)
        heads = " ".join(member.locator(".pg-variant-head").all_inner_texts())
        assert all(name in heads for name in ("dpo", "kto", "base"))
        _shot(member, "room_member_revealed")

        _wait_text(presenter, "#pg-room-board-note", "From 1 blind pairwise votes cast in room", 30_000)
        presenter.wait_for_selector("#pg-room-board-plot .js-plotly-plot", timeout=20_000)
        presenter.locator("#pg-room-presenter").scroll_into_view_if_needed()
        _shot(presenter, "room_presenter_board")
        vote = services.room_votes(code, services.rooms.get(code).presenter).iloc[0]
        shown_order = blind_order(services.secret, "Give me one tip for writing a clear email.", ["base", "dpo", "kto"])
        assert (vote["variant_a"], vote["variant_b"]) == (shown_order[0], shown_order[1]) and vote["blind"]

        _tab(presenter, "Runs")
        presenter.wait_for_selector("#pg-runs-curves .js-plotly-plot", timeout=30_000)
        _shot(presenter, "runs")
    assert not errors, errors


def test_a_claim_measured_again_from_the_claims_view(browser, tiny_engine, tmp_path):
    from playground import config

    services = Services.for_engine(tiny_engine, tmp_path / "data")
    services.claims_sweep = config.ClaimSweep(steps=1, pairs=8, heldout=4, rates=(0.0, 0.5), seeds=(0,))
    with serving(build_app(services)) as served_url:
        page = browser.new_page(viewport=VIEWPORT)
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(served_url)
        _tab(page, "Learn")
        page.get_by_role("tab", name="7 · Claims measured").click()
        page.wait_for_selector("#pg-learn-claims .js-plotly-plot", timeout=20_000)
        page.wait_for_timeout(1000)  # the session id is created on load
        _wait_text(page, "#pg-claims-estimate", "3 runs of 1 step on", 10_000)
        page.locator("#pg-claims-start").click()
        _wait_text(page, "#pg-claims-status", "done", 120_000)
        _wait_text(page, "#pg-learn-claims", "Re-run here (custom version, 3 runs", 20_000)
        claims_text = page.locator("#pg-learn-claims").inner_text()
        assert claims_text.count("not re-run on this server yet") == 3
        assert page.locator("#pg-claims-source input[value='Re-run on this server']").is_checked()
        page.wait_for_selector("#pg-claims-download", state="visible", timeout=10_000)
        _shot(page, "learn_claims_rerun")
        page.locator("#pg-claims-source label", has_text="Shipped results").click()
        page.wait_for_function("() => !document.querySelector('#pg-learn-claims').innerText.includes("
                               "'not re-run on this server yet')", timeout=20_000)
        _wait_text(page, "#pg-learn-claims", "Reproduce: python -m playground.experiments unpaired", 20_000)
        assert not errors, errors
