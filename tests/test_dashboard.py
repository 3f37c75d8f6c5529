"""The dashboard in headless Chromium (Debian's package) against a real uvicorn on a real SQLite file."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from sqlmodel import Session

from conftest import ARTIFACTS, ROOT, TOKEN, build_db, core_free_port

CHROMIUM = os.environ.get("DATAGEN_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
        # Two names that resolve to this machine, as a rebinding attacker's would: one configured, one not.
        "--host-resolver-rules=MAP review.example 127.0.0.1, MAP attacker.example 127.0.0.1"]
BULK_RUN, BULK_ROWS = "bulk-en", 130  # more than one page (100 rows) of the dashboard
BIDI = "Explain what the file name invoice\u202efdp.exe really is.\u200b"

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists() or shutil.which(CHROMIUM) is None, reason=f"no Chromium at {CHROMIUM} (apt-get install chromium)")



@pytest.fixture(scope="module")
def server(tmp_path_factory):
    path = tmp_path_factory.mktemp("dash") / "review.db"
    url = build_db(path)
    from datagen import storage
    from datagen.records import Candidate, Instance, Status

    engine = storage.connect(url)
    # Its templated instructions are near-duplicates of each other: a run made with threshold 1.0
    # keeps them, and review judges by the run's own stored rule, so they can be approved.
    run, _ = storage.open_run(engine, BULK_RUN, lang="en", api="openai", model="m", target=BULK_ROWS, config={"pipeline": {"threshold": 1.0}})
    for i in range(BULK_ROWS):
        text = BIDI if i == BULK_ROWS - 1 else f"Describe item number {i} of the bulk run in one sentence."
        storage.add_sample(engine, run.id, Candidate(instruction=text, lang="en", status=Status.accepted, instances=[Instance(input="", output=f"Item {i}.")]))

    storage.dispose_all()
    port = core_free_port()
    env = dict(os.environ, DATAGEN_API_TOKEN=TOKEN, PYTHONPATH=str(ROOT))
    log = open(path.with_suffix(".log"), "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "api.cli", "serve", "--host", "127.0.0.1", "--port", str(port), "--db", url, "--allowed-host", "review.example"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
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
    page.wait_for_function("() => document.querySelector('#count').textContent.startsWith('0 of 7 reviewed')")
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
    # The history shows the edit's before and after, as text.
    page.wait_for_selector(".audit table.diff td.before")
    assert "<script>alert('xss')</script>" in page.text_content(".audit table.diff td.before")
    assert page.text_content(".audit table.diff td.after") == "Explain why the sky looks blue during the day."
    page.locator(".audit").scroll_into_view_if_needed()
    page.screenshot(path=str(ARTIFACTS / "dashboard-history.png"))
    assert page.locator("#detail script, #detail img").count() == 0

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


def _open(browser, base, path="/", width=1400, height=900, reviewer="rapid"):
    page = browser.new_page(viewport={"width": width, "height": height})
    errors, dialogs = [], []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto(base + path)
    page.wait_for_selector("#list li.current")
    page.fill("#token", TOKEN)
    page.click("#save-token")
    page.fill("#reviewer", reviewer)
    page.press("#reviewer", "Enter")
    return page, errors, dialogs


def _audit(url, actor):
    from sqlalchemy import select

    from datagen import storage

    with Session(storage.connect(url)) as s:
        return [(a.sample_id, a.action) for a in s.execute(select(storage.Audit).where(storage.Audit.actor == actor).order_by(storage.Audit.id)).scalars()]


def _wait(predicate, timeout=20.0):
    deadline = time.time() + timeout
    while not predicate():
        assert time.time() < deadline, "timed out"
        time.sleep(0.1)


def test_ten_fast_presses_review_ten_samples_and_u_undoes(server, browser):
    base, url = server
    page, errors, _ = _open(browser, base, f"/?run={BULK_RUN}&status=accepted", reviewer="rapid")
    first_ids = [int(x) for x in page.eval_on_selector_all("#list li", "els => els.slice(0, 11).map(e => e.dataset.id)")]
    page.wait_for_function("() => /0 of 130 reviewed/.test(document.querySelector('#count').textContent)")
    for _ in range(10):  # no waiting between presses: each one is queued behind the previous review
        page.keyboard.press("a")
    _wait(lambda: len(_audit(url, "rapid")) >= 10)
    page.wait_for_selector('#list li.current[data-i="10"]')
    rows = _audit(url, "rapid")
    assert [a for _, a in rows] == ["approve"] * 10 and [sid for sid, _ in rows] == first_ids[:10]  # ten distinct, in order
    assert all(_row(url, sid).status == "approved" for sid in first_ids[:10]) and _row(url, first_ids[10]).status == "accepted"
    page.wait_for_function("() => document.querySelector('#count').textContent.startsWith('10 of 130 reviewed')")
    page.keyboard.press("u")  # undo the last review: back to that sample, status restored from the audit log
    page.wait_for_selector(f'#list li.current[data-id="{first_ids[9]}"] .badge.accepted')
    assert _row(url, first_ids[9]).status == "accepted" and _audit(url, "rapid")[-1] == (first_ids[9], "undo")
    page.wait_for_function("() => document.querySelector('#count').textContent.startsWith('9 of 130 reviewed')")
    assert not errors, errors
    page.close()


def test_j_loads_more_the_url_keeps_the_place_and_keys_are_listed(server, browser):
    base, _ = server
    page, errors, _ = _open(browser, base, f"/?run={BULK_RUN}", reviewer="walker")
    assert page.locator("#list li").count() == 100
    page.click('#list li[data-i="99"]')
    page.wait_for_selector('#list li.current[data-i="99"]')
    page.keyboard.press("j")  # past the last loaded row: the next page comes in
    page.wait_for_selector('#list li.current[data-i="100"]')
    assert page.locator("#list li").count() == BULK_ROWS
    sid = page.get_attribute("#list li.current", "data-id")
    assert f"sample={sid}" in page.url and f"run={BULK_RUN}" in page.url
    page.reload()  # a reload (or the link, in another tab) shows the same filter and sample
    page.wait_for_selector(f'#list li.current[data-id="{sid}"]')
    assert page.input_value("#filters [name=run]") == BULK_RUN
    page.wait_for_function(f"() => document.querySelector('#instruction')?.textContent.includes('number 100 ')")
    page.keyboard.press("?")
    assert page.is_visible("#help") and "undo" in page.text_content("#help")
    page.keyboard.press("Escape")
    assert not page.is_visible("#help")
    assert not errors, errors
    page.close()


def test_hidden_characters_show_as_markers(server, browser):
    base, _ = server
    page, errors, _ = _open(browser, base, f"/?run={BULK_RUN}&q=invoice", reviewer="bidi")
    page.wait_for_function("() => document.querySelector('#instruction')?.textContent.includes('fdp.exe')")
    shown = page.text_content("#instruction")
    assert "\u202e" not in shown and "\u200b" not in shown  # nothing left to reorder or hide the text
    assert shown == "Explain what the file name invoiceU+202Efdp.exe really is.U+200B"
    assert page.locator("#instruction .invis").count() == 2
    assert page.text_content("#hidden-chars") == "U+202E U+200B"
    assert "\u202e" not in page.text_content("#list li.current .text")
    page.screenshot(path=str(ARTIFACTS / "dashboard-bidi.png"))
    assert not errors, errors
    page.close()


def test_picked_rows_bulk_and_approving_a_rejected_sample_asks(server, browser):
    base, url = server
    page, errors, dialogs = _open(browser, base, f"/?run={BULK_RUN}&status=accepted&sort=-id", reviewer="picker")
    ids = [int(x) for x in page.eval_on_selector_all("#list li", "els => els.slice(0, 3).map(e => e.dataset.id)")]
    page.click(f'#list li[data-id="{ids[0]}"] .pick')
    page.click(f'#list li[data-id="{ids[2]}"] .pick')
    page.wait_for_selector('#list li.current[data-i="0"]')
    page.keyboard.press("j")
    page.wait_for_selector('#list li.current[data-i="1"]')
    page.keyboard.press("x")  # the current row, by key
    assert page.text_content("#bulk-reject") == "Reject selected (3)"
    page.once("dialog", lambda d: (dialogs.append(d.message), d.accept()))
    page.click("#bulk-reject")
    _wait(lambda: len(_audit(url, "picker")) == 3)
    assert sorted(sid for sid, _ in _audit(url, "picker")) == sorted(ids) and "3 selected" in dialogs[-1]
    page.wait_for_selector("#bulk-reject:text('Reject all')")

    # A sample the filters rejected: `a` asks first; no means nothing happens, yes approves it.
    page.goto(base + "/?run=demo-en&status=rejected&reason=blacklist")
    page.wait_for_selector("#list li.current .badge.rejected")
    sid = int(page.get_attribute("#list li.current", "data-id"))
    page.once("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.keyboard.press("a")
    page.wait_for_timeout(300)
    assert "rejected" in dialogs[-1] and _row(url, sid).status == "rejected"
    page.once("dialog", lambda d: (dialogs.append(d.message), d.accept()))
    page.keyboard.press("a")
    _wait(lambda: _row(url, sid).status == "approved")
    assert not errors, errors
    page.close()


def test_a_rebinding_name_is_refused_and_a_configured_one_works(server, browser):
    base, _ = server
    port = base.rsplit(":", 1)[1]
    page = browser.new_page()
    r = page.goto(f"http://attacker.example:{port}/api/samples")
    assert r.status == 421 and "items" not in page.content()
    r = page.goto(f"http://review.example:{port}/")
    assert r.status == 200
    page.wait_for_selector("#list li.current")
    page.close()


@pytest.mark.parametrize("width", [1024, 1400])
def test_the_header_stays_on_screen(server, browser, width):
    base, _ = server
    page, errors, _ = _open(browser, base, f"/?run={BULK_RUN}", width=width, height=768, reviewer="layout")
    for _ in range(40):
        page.keyboard.press("j")
    page.wait_for_selector('#list li.current[data-i="40"]')
    page.wait_for_function("() => document.querySelector('#instruction')")
    for sel in ("header", "#filters", "#count"):
        box = page.locator(sel).bounding_box()
        assert box and box["y"] >= 0 and box["y"] + box["height"] <= 768, (sel, box)
    assert page.evaluate("document.scrollingElement.scrollTop") == 0
    assert page.evaluate("document.documentElement.scrollWidth") <= width  # nothing sticks out sideways
    page.wait_for_selector(".compare mark")
    assert "[object" not in page.text_content("#detail")  # highlighted pieces render as text
    page.screenshot(path=str(ARTIFACTS / f"dashboard-{width}.png"))
    assert not errors, errors
    page.close()
