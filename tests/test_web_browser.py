"""End to end in a real browser: the real server process, Debian's Chromium, Playwright.

Starts `python -m bytechat.serve.web.cli --ckpt <tiny random model>` on a free loopback port,
then types into the page like a person: a streamed reply appears, a long reply is
stopped, a server error is shown. Screenshots (desktop and phone) go to the test's tmp
folder, or to $BYTECHAT_SCREENSHOTS when set.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import httpx
import pytest

from tools.local_server import running_server, save_tiny_model

CHROMIUM = Path("/usr/bin/chromium")
# Headless, no sandbox (tests may run as root), and nothing that phones home: without the
# background-networking flags Chromium keeps trying (refused) connections to Google.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
LONG_REPLY = 20000  # bytes: several seconds of generation, so there is time to press Stop

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    # In CI (.ci/run installs chromium) a missing browser is a failure, not a silent skip.
    pytest.mark.skipif(
        not CHROMIUM.exists() and not os.environ.get("CI"), reason=f"{CHROMIUM} is absent (apt-get install chromium)"
    ),
]
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (python package) is not installed")


@pytest.fixture(scope="module")
def server_url(tmp_path_factory):
    ckpt = save_tiny_model(tmp_path_factory.mktemp("model"))
    # --no-faithful: the random model's reply to "Tell me everything." runs on to be stopped
    # (faithful, with no notes shown, it would be one short sentence of the bot's own).
    with running_server(ckpt, "--max-new-tokens", str(LONG_REPLY), "--timeout-s", "30", "--no-faithful") as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    # launch() gives every run a fresh temporary profile (user-data-dir) of its own.
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def screenshots(tmp_path) -> Path:
    folder = Path(os.environ.get("BYTECHAT_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def open_chat(browser, url: str, **context_options):
    context = browser.new_context(**context_options)
    page = context.new_page()
    problems: list[str] = []  # script errors and CSP violations would show up here
    page.on("pageerror", lambda exc: problems.append(str(exc)))
    page.on("console", lambda msg: problems.append(msg.text) if msg.type == "error" else None)
    page.goto(url)
    sync_api.expect(page.locator("#model-info")).to_contain_text("context 64 bytes")
    return context, page, problems


def send(page, text: str) -> None:
    page.locator("#input").fill(text)
    page.locator("#input").press("Enter")


def assistant_text(page, index: int) -> str:
    return page.locator(".message.assistant .text").nth(index).inner_text()


def record_reply_growth(page) -> None:
    """Note the reply's length at every DOM change, to see it arrive in pieces."""
    page.evaluate(
        """() => {
            window.replyLengths = [];
            new MutationObserver(() => {
                const texts = document.querySelectorAll('.message.assistant .text');
                if (texts.length) window.replyLengths.push(texts[texts.length - 1].textContent.length);
            }).observe(document.getElementById('log'), {childList: true, subtree: true, characterData: true});
        }"""
    )


def test_chat_streams_stops_and_reports_errors(browser, server_url, screenshots):
    context, page, problems = open_chat(browser, server_url, viewport={"width": 1200, "height": 800})
    expect = sync_api.expect

    # A reply streams in, piece by piece, and ends with its figures.
    record_reply_growth(page)
    send(page, "Hello! What did I write about gardening?")
    expect(page.locator(".message.user .text").first).to_have_text("Hello! What did I write about gardening?")
    expect(page.locator(".message.assistant .meta").first).to_contain_text("bytes", timeout=15000)
    lengths = page.evaluate("window.replyLengths")
    assert len(set(lengths)) > 1 and lengths == sorted(lengths), "the reply was drawn as it arrived"
    assert assistant_text(page, 0).strip(), "the reply is not empty"
    expect(page.locator("#input")).to_have_value("")

    # A long reply, stopped mid-way: it stops growing, the page says so, the server idles.
    page.locator("#settings-toggle").click()
    page.locator("#max-new-tokens").fill(str(LONG_REPLY))
    send(page, "Tell me everything.")
    expect(page.locator("#stop")).to_be_visible()
    longer_than = "n => { const t = document.querySelectorAll('.message.assistant .text'); return t.length === 2 && t[1].textContent.length > n; }"
    page.wait_for_function(longer_than, arg=50)
    page.wait_for_function(longer_than, arg=len(assistant_text(page, 1)))  # it keeps growing
    page.locator("#stop").click()
    expect(page.locator(".message.assistant .meta").nth(1)).to_have_text("stopped")
    expect(page.locator("#send")).to_be_visible()
    stopped_at = len(assistant_text(page, 1))
    time.sleep(0.5)
    assert len(assistant_text(page, 1)) == stopped_at < LONG_REPLY
    assert wait_for_idle(server_url), "the server went on generating after Stop"
    page.screenshot(path=str(screenshots / "chat-desktop.png"))

    assert problems == [], problems

    # A request the server refuses: its message is shown, and the text is kept for a retry.
    page.locator("#top-k").fill("999")
    send(page, "Are you there?")
    expect(page.locator(".message.error")).to_contain_text("top_k")
    expect(page.locator("#input")).to_have_value("Are you there?")
    page.screenshot(path=str(screenshots / "chat-error.png"))

    # Reset clears the conversation.
    page.locator("#reset").click()
    expect(page.locator(".message")).to_have_count(0)
    expect(page.locator("#empty")).to_be_visible()
    assert all("status of 422" in problem for problem in problems), problems  # the refused request only
    context.close()


def test_page_fits_a_phone(browser, server_url, screenshots):
    context, page, problems = open_chat(
        browser,
        server_url,
        viewport={"width": 390, "height": 844},
        device_scale_factor=2,
        is_mobile=True,
        has_touch=True,
    )
    send(page, "A question typed on a phone, long enough to wrap over a few lines of the narrow screen.")
    sync_api.expect(page.locator(".message.assistant .meta").first).to_contain_text("bytes", timeout=15000)
    widths = page.evaluate("() => [document.documentElement.scrollWidth, window.innerWidth]")
    assert widths[0] <= widths[1], f"the page scrolls sideways on a phone: {widths}"
    assert page.locator("#send").is_visible() and page.locator("#input").is_visible()
    page.screenshot(path=str(screenshots / "chat-phone.png"))
    assert problems == [], problems
    context.close()


def busy_once_then(route_calls: list[float], times: int):
    """A Playwright route handler: the first `times` POSTs to /chat/stream get the server's
    503 (Retry-After: 1, a one-line JSON detail), later ones go through to the server."""

    def handle(route):
        route_calls.append(time.monotonic())
        if len(route_calls) > times:
            route.continue_()
            return
        detail = '{"detail": "server busy: 8 replies in progress or waiting; try again in 1 s"}'
        route.fulfill(status=503, headers={"Retry-After": "1", "Content-Type": "application/json"}, body=detail)

    return handle


def test_a_busy_server_is_retried_once_after_retry_after(browser, server_url, screenshots):
    expect = sync_api.expect
    context, page, problems = open_chat(browser, server_url, viewport={"width": 1200, "height": 800})

    # One 503: the reply says the server is busy, counts down, and the retry is answered.
    calls: list[float] = []
    page.route("**/chat/stream", busy_once_then(calls, times=1))
    send(page, "Anyone there?")
    expect(page.locator(".message.assistant .meta.busy")).to_have_text("busy, retrying in 1 s")
    page.screenshot(path=str(screenshots / "chat-busy.png"))
    expect(page.locator(".message.assistant .meta").first).to_contain_text("bytes", timeout=15000)
    expect(page.locator(".meta.busy")).to_have_count(0)
    assert len(calls) == 2 and calls[1] - calls[0] >= 1.0, calls
    assert page.locator(".message.error").count() == 0

    # Busy twice: one retry only, then the refusal is shown and the text kept to resend.
    page.unroute("**/chat/stream")
    calls.clear()
    page.route("**/chat/stream", busy_once_then(calls, times=2))
    send(page, "Still there?")
    expect(page.locator(".message.error")).to_contain_text("503: server busy", timeout=15000)
    expect(page.locator("#input")).to_have_value("Still there?")
    assert len(calls) == 2, calls
    assert all("status of 503" in problem for problem in problems), problems  # the refused requests only
    context.close()


def wait_for_idle(url: str, timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if httpx.get(f"{url}/health").json()["load"] == {"running": 0, "waiting": 0}:
            return True
        time.sleep(0.05)
    return False


# ---------------------------------------------------------------- notes


BEES_UID = "6571c3a2-8f4e-4b1a-9c2d-3e5f7a9b1c0d"


@pytest.fixture(scope="module")
def notes_server_url(tmp_path_factory):
    """A random model with a 512-byte context (room for notes) and a small Logseq graph
    (so sources carry links to their block), indexed as the pipeline does."""
    from bytechat.notes.index import index_folder

    folder = tmp_path_factory.mktemp("notes-model")
    export = save_tiny_model(folder, block_size=512)
    graph = folder / "graph"
    (graph / "logseq").mkdir(parents=True)
    (graph / "logseq" / "config.edn").write_text("{}\n")
    (graph / "pages").mkdir()
    (graph / "pages" / "Bees.md").write_text(
        f"- hives:: 3\n  id:: {BEES_UID}\n\t- two swarmed in May\n- varroa check\n"
    )
    (graph / "pages" / "Marta.md").write_text("- birthday:: 12 March\n")
    index_folder(graph, folder / "index.sqlite", progress=False).close()
    with running_server(export, "--notes", str(folder / "index.sqlite"), "--max-new-tokens", "16") as url:
        yield url


def test_sources_show_as_chips_that_open_and_notes_can_be_turned_off(browser, notes_server_url, screenshots):
    expect = sync_api.expect
    context = browser.new_context(viewport={"width": 1200, "height": 800})
    page = context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(str(exc)))
    page.on("console", lambda msg: problems.append(msg.text) if msg.type == "error" else None)
    page.goto(notes_server_url)
    expect(page.locator("#model-info")).to_contain_text("context 512 bytes")
    page.locator("#settings-toggle").click()
    expect(page.locator("#notes-status")).to_have_text("(3 note blocks)")
    expect(page.locator("#use-notes")).to_be_checked()

    send(page, "how many hives do I have?")
    first = page.locator(".message.assistant").first
    expect(first.locator(".meta")).to_contain_text("bytes", timeout=15000)
    chips = first.locator(".sources .source summary")
    expect(chips).to_have_count(1)
    expect(chips.first).to_have_text("Bees")
    text = first.locator(".source-text")
    expect(text).to_be_hidden()
    chips.first.click()
    expect(text).to_be_visible()
    expect(text).to_have_text("hives: 3\n  two swarmed in May")
    link = first.locator(".source-link")
    expect(link).to_have_attribute("href", f"logseq://graph/graph?block-id={BEES_UID}")
    assert "hives: 3" not in assistant_text(page, 0), "the reply is the model's, not the note pasted in"
    page.screenshot(path=str(screenshots / "chat-sources.png"))

    send(page, "tell me about the bees")
    whole = page.locator(".message.assistant").nth(1)
    expect(whole.locator(".meta")).to_contain_text("bytes", timeout=15000)
    expect(whole.locator(".sources .source summary")).to_have_count(1)  # one chip per page
    expect(whole.locator(".source-text")).to_have_count(2)

    page.locator("#use-notes").uncheck()
    send(page, "how many hives do I have?")
    second = page.locator(".message.assistant").nth(2)
    expect(second.locator(".meta")).to_contain_text("bytes", timeout=15000)
    expect(second.locator(".sources")).to_have_count(0)
    assert problems == [], problems
    context.close()


def test_the_toggle_is_off_when_the_server_has_no_notes(browser, tmp_path):
    with running_server(save_tiny_model(tmp_path), "--no-notes") as url:
        assert httpx.get(f"{url}/health").json()["notes"] == {"loaded": False, "blocks": 0}
        context = browser.new_context()
        page = context.new_page()
        page.goto(url)
        page.locator("#settings-toggle").click()
        sync_api.expect(page.locator("#notes-status")).to_have_text("(no notes index on the server)")
        sync_api.expect(page.locator("#use-notes")).to_be_disabled()
        sync_api.expect(page.locator("#use-notes")).not_to_be_checked()
        context.close()
