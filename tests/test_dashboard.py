"""The dashboard in headless Chromium (Debian's package) against a real uvicorn on a real SQLite file."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from sqlmodel import Session

from conftest import ARTIFACTS, ROOT, TOKEN, build_db

CHROMIUM = os.environ.get("DATAGEN_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists() or shutil.which(CHROMIUM) is None, reason=f"no Chromium at {CHROMIUM} (apt-get install chromium)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    path = tmp_path_factory.mktemp("dash") / "review.db"
    url = build_db(path)
    from datagen import storage

    storage.dispose_all()
    port = _free_port()
    env = dict(os.environ, DATAGEN_API_TOKEN=TOKEN, PYTHONPATH=str(ROOT))
    log = open(path.with_suffix(".log"), "w")
    proc = subprocess.Popen([sys.executable, "-m", "api.cli", "serve", "--host", "127.0.0.1", "--port", str(port), "--db", url], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            if httpx.get(base + "/api/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.2)
    else:
        proc.kill()
        pytest.fail("server did not start: " + path.with_suffix(".log").read_text())
    yield base, url
    proc.terminate()
    proc.wait(10)
    log.close()
    assert TOKEN not in path.with_suffix(".log").read_text()  # the token never reaches the log


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield b
        b.close()


def _row(url, sid):
    from datagen import storage

    with Session(storage.connect(url)) as s:
        row = s.get(storage.Sample, sid)
        s.expunge(row)
        return row


def test_review_in_the_browser(server, browser):
    base, url = server
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page = browser.new_page(viewport={"width": 1400, "height": 900}, accept_downloads=True)
    errors, dialogs = [], []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.goto(base + "/")
    page.wait_for_selector("#list li")

    # Token once, kept in sessionStorage; a reviewer name for the audit log.
    page.fill("#token", TOKEN)
    page.click("#save-token")
    assert page.evaluate("sessionStorage.getItem('datagen.token')") == TOKEN
    page.fill("#reviewer", "bob")
    page.press("#reviewer", "Enter")  # saves the name and hands the keyboard back to the queue

    # Filter: the English run's accepted samples.
    page.select_option("#filters [name=run]", "demo-en")
    page.select_option("#filters [name=status]", "accepted")
    page.wait_for_function("() => document.querySelector('#count').textContent.startsWith('7 ')")
    badges = page.locator("#list li .badge").all_text_contents()
    assert badges == ["accepted"] * 7

    # Keyboard review: j moves to the second sample, a approves it and moves on.
    page.wait_for_selector("#list li.current")
    page.keyboard.press("j")
    page.wait_for_selector('#list li.current[data-i="1"]')
    second = int(page.get_attribute('#list li[data-i="1"]', "data-id"))
    page.wait_for_function(f"() => document.querySelector('#instruction') && document.querySelector('#list li.current').dataset.id == '{second}'")
    page.keyboard.press("a")
    page.wait_for_selector('#list li[data-i="1"] .badge.approved')
    row = _row(url, second)
    assert (row.status, row.reviewed_by) == ("approved", "bob")
    page.wait_for_selector('#list li.current[data-i="2"]')
    page.keyboard.press("k")
    page.wait_for_selector('#list li.current[data-i="1"]')

    # Untrusted text stays text: search for the sample carrying a <script> and an onerror.
    page.fill("#search", "script")
    page.press("#search", "Enter")
    page.wait_for_function("() => document.querySelector('#instruction')?.textContent.includes('<script>')")
    assert page.locator("#detail script, #detail img").count() == 0
    page.wait_for_timeout(300)
    assert not dialogs

    # Edit with the keyboard: e, change the text, Ctrl+Enter; the filters report back.
    xss_id = int(page.get_attribute("#list li.current", "data-id"))
    page.keyboard.press("e")
    page.wait_for_selector("#edit-instruction")
    page.fill("#edit-instruction", "Explain why the sky looks blue during the day.")
    page.keyboard.press("Control+Enter")
    page.wait_for_selector("#findings")
    assert "Explain why the sky looks blue" in page.text_content("#instruction")
    row = _row(url, xss_id)
    assert row.instruction == "Explain why the sky looks blue during the day." and row.reviewed_by == "bob"

    # A near duplicate beside its nearest neighbour, shared words marked.
    page.fill("#search", "")
    page.select_option("#filters [name=status]", "rejected")
    page.select_option("#filters [name=reason]", "similar")
    page.wait_for_selector(".compare mark")
    marked = page.locator(".compare .side").first.locator("mark").all_text_contents()
    assert "poem" in " ".join(marked).lower() or "tips" in " ".join(marked).lower()
    page.screenshot(path=str(ARTIFACTS / "dashboard-queue.png"))

    # Export of the filtered set.
    with page.expect_download() as dl:
        page.click("#export")
    data = json.loads(Path(dl.value.path()).read_text())
    assert data and all(d["instruction"] for d in data)

    # Charts.
    page.select_option("#filters [name=status]", "")
    page.select_option("#filters [name=reason]", "")
    page.click("#tab-stats")
    page.wait_for_selector("#charts svg rect")
    assert page.locator("#charts figure").count() == 5
    page.screenshot(path=str(ARTIFACTS / "dashboard-stats.png"), full_page=True)

    assert not [e for e in errors if "Content Security Policy" in e or "Uncaught" in e], errors
    page.close()


def test_a_wrong_token_is_refused_in_the_page(server, browser):
    base, url = server
    page = browser.new_page()
    page.goto(base + "/")
    page.wait_for_selector("#list li.current")
    sid = int(page.get_attribute("#list li.current", "data-id"))
    before = _row(url, sid).status
    page.fill("#token", "not-the-token-at-all")
    page.click("#save-token")
    page.keyboard.press("a")
    page.wait_for_function("() => document.querySelector('#toast').textContent.includes('403')")
    assert _row(url, sid).status == before
    page.close()
