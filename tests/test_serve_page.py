"""The gateway's chat page in a real browser (Debian's Chromium, driven by Playwright): a benign message
streams its answer; a provocative one shows the rollback as a marker, and the flagged word never appears.

The upstream is the scripted OpenAI-compatible server, so that the provocative answer (and its retry) is
known; the page, the gateway, the SSE stream and the browser are real. Skipped where Chromium or Playwright
is missing, unless SUPERVISOR_REQUIRE_BROWSER=1 (set by .ci/run, which installs both).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from supervisor.integrations.serve import GatewayConfig
from tests.openai_servers import Reply, ScriptedOpenAIServer
from tests.test_serve import RunningGateway

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
REQUIRED = os.environ.get("SUPERVISOR_REQUIRE_BROWSER") == "1"


@pytest.fixture(scope="module")
def browser() -> Any:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        if REQUIRED:
            raise
        pytest.skip("playwright is not installed")
    if CHROMIUM is None:
        if REQUIRED:
            pytest.fail("SUPERVISOR_REQUIRE_BROWSER=1 but no chromium on PATH")
        pytest.skip("chromium is not installed")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--no-first-run", "--disable-sync"])
        yield launched
        launched.close()


def words(text: str) -> list[str]:
    return [" " + w if i else w for i, w in enumerate(text.split(" "))]


def test_the_page_streams_answers_and_shows_interventions(browser: Any, tmp_path: Path) -> None:
    insult = Reply(pieces=words("Honestly you are a stupid idiot and everyone knows it, so stop asking."))
    retry = Reply(pieces=words(" are asking a fair question, and I am glad to help you with it."))
    replies = [Reply(pieces=words("Hello! The weather is lovely today, a good day for a walk in the park.")),
               insult, retry, insult, retry]
    policy = {"checkpoint_every": 4, "window_tokens": 8, "upstream_backoff_s": 0.0}
    tenants = [{"api_key": "page-user-key", "name": "users"},
               {"api_key": "page-demo-key", "name": "demo", "reveal_removed_text": True}]
    with ScriptedOpenAIServer(replies) as upstream, RunningGateway(GatewayConfig(
            upstream=upstream.url, scorer="lexical", continuation="prefill", policy=policy,
            tenants=tenants)) as gateway:
        page = browser.new_page()
        page.goto(f"http://127.0.0.1:{gateway.port}/")
        page.fill("#key", "page-user-key")
        page.fill("#input", "How is the weather?")
        page.click("#send")
        page.wait_for_selector(".supervised[data-done='true']", timeout=30_000)
        first = page.inner_text(".turn:nth-of-type(2) .supervised")
        assert "lovely today" in first and page.locator(".marker").count() == 0

        page.fill("#input", "Insult me as hard as you can.")
        page.click("#send")
        page.wait_for_selector(".turn:last-child .supervised[data-done='true']", timeout=30_000)
        answer = page.locator(".turn:last-child .supervised")
        marker = answer.locator(".marker[data-kind='rollback']")
        assert marker.count() >= 1 and "characters removed" in marker.first.inner_text()
        assert "glad to help" in answer.inner_text()
        html = page.content()  # a user's page holds nothing of what was removed, not even hidden
        assert "idiot" not in html and "stupid" not in html and not page.is_visible("#reveal")

        page.fill("#key", "page-demo-key")  # a demo key: the page may show what was rolled back, and says so
        page.fill("#input", "Insult me again.")
        page.click("#send")
        page.wait_for_selector(".turn:last-child .supervised[data-done='true']", timeout=30_000)
        answer = page.locator(".turn:last-child .supervised")
        marker = answer.locator(".marker[data-kind='rollback']")
        shown = answer.evaluate(  # the answer's own text, without what the markers hold
            "node => Array.from(node.childNodes).filter(n => n.nodeType === 3).map(n => n.textContent).join('')")
        assert "idiot" not in shown and "stupid" not in shown
        marker.first.locator("summary").click()  # the demo user can open what was rolled back
        assert "idiot" in marker.first.inner_text() and page.is_visible("#reveal")
        page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
        if os.environ.get("SUPERVISOR_SCREENSHOT"):
            shutil.copy(tmp_path / "page.png", os.environ["SUPERVISOR_SCREENSHOT"])
        page.close()
