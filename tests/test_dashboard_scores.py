"""Scores in the dashboard, in headless Chromium against a real uvicorn on a real SQLite file: the score
columns, the score filter and sort, the judge's suggestion as text beside the buttons, the per-key
histogram and the reviewers' agreement with the judge."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import httpx
import pytest

from conftest import ARTIFACTS, ROOT, TOKEN, build_db, core_free_port
from test_dashboard import ARGS, CHROMIUM, pytestmark  # noqa: F401  (skip without Chromium)

KEY = "judge:accuracy@gpt-4o-mini"


@pytest.fixture(scope="module")
def scored_server(tmp_path_factory):
    path = tmp_path_factory.mktemp("dash-scores") / "review.db"
    url = build_db(path)
    from datagen import storage
    from datagen.storage import scores as S

    engine = storage.connect(url)
    run = storage.get_run(engine, "demo-en")
    with engine.connect() as conn:
        ids = [r[0] for r in conn.exec_driver_sql(f"select id from sample where run_id = {run.id} and status = 'accepted' order by id")]
    values = dict(zip(ids, [5.0, 4.5, 2.0, 3.5, 4.0, 1.0, 5.0]))
    S.store_scores(engine, [S.ScoreIn(sid, "judge", "gpt-4o-mini", v, rubric="accuracy",
                                      reason=f"<img src=x onerror=alert(1)> verdict {v}") for sid, v in values.items()])
    S.store_scores(engine, [S.ScoreIn(ids[0], "ifd", "smollm2", 0.8123)])
    storage.dispose_all()
    port = core_free_port()
    env = dict(os.environ, DATAGEN_API_TOKEN=TOKEN, PYTHONPATH=str(ROOT))
    log = open(path.with_suffix(".log"), "w")
    proc = subprocess.Popen([sys.executable, "-m", "api.cli", "serve", "--host", "127.0.0.1", "--port", str(port), "--db", url],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            if httpx.get(base + "/api/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.2)
    else:
        proc.kill()
        pytest.fail("server did not start: " + path.with_suffix(".log").read_text())
    yield base, values
    proc.terminate()
    proc.wait(10)
    log.close()


def test_score_filter_sort_and_the_judges_suggestion_in_the_browser(scored_server):
    from playwright.sync_api import sync_playwright

    base, values = scored_server
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        errors, dialogs = [], []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        page.goto(base + "/?run=demo-en")
        page.wait_for_selector("#list li .qscore")
        page.fill("#token", TOKEN)
        page.click("#save-token")

        # Filter by the judge's score: at least 4, sorted best first.
        page.select_option("#filters [name=by]", KEY)
        page.fill("#filters [name=by_min]", "4")
        page.select_option("#filters [name=sort]", "-scored")
        want = sorted(((v, s) for s, v in values.items() if v >= 4), key=lambda t: (-t[0], -t[1]))
        page.wait_for_function(f"() => document.querySelectorAll('#list li').length === {len(want)} "
                               f"&& document.querySelector('#count').textContent.includes('of {len(want)}')")
        shown = [int(x) for x in page.locator("#list li").evaluate_all("els => els.map(e => e.dataset.id)")]
        assert shown == [s for _, s in want]
        chips = page.locator("#list li .qscore.by").all_text_contents()
        assert chips == [f"judge:accuracy {v:g}" for v, _ in want]
        assert "by=judge%3Aaccuracy%40gpt-4o-mini" in page.url and "by_min=4" in page.url and "sort=-scored" in page.url
        # Ascending, and a range that keeps the middle only.
        page.select_option("#filters [name=sort]", "scored")
        page.wait_for_function("() => document.querySelector('#list li .qscore.by')?.textContent === 'judge:accuracy 4'")
        page.fill("#filters [name=by_max]", "4.5")
        page.press("#filters [name=by_max]", "Enter")
        page.wait_for_function("() => document.querySelectorAll('#list li').length === 2")

        # The detail: the judge's verdict beside the buttons, its reason as text (the <img> never becomes one).
        # Waited for, not read at once: the pane may still show the sample selected before the filter.
        page.wait_for_function("() => document.querySelector('#judge-suggest .verdict') && "
                               "document.querySelector('#judge-suggest').textContent.startsWith('judge accuracy 4 → reject')")
        page.keyboard.press("j")
        page.wait_for_function("() => document.querySelector('#judge-suggest')?.textContent.startsWith('judge accuracy 4.5 → approve')")
        assert "<img src=x onerror=alert(1)> verdict 4.5" in page.text_content("#judge-suggest")
        assert page.locator("#detail img, #detail script").count() == 0
        assert "verdict 4.5" in page.text_content("#detail .meta")

        # Approve the 4.5 (agrees with the judge); the Stats tab shows the histogram and the agreement.
        page.keyboard.press("a")
        page.wait_for_selector('#list li[data-i="1"] .badge.approved')
        page.click("#tab-stats")
        page.wait_for_selector("#agreement table tr td")
        captions = page.locator("#charts figcaption").all_text_contents()
        assert any(c.startswith(f"Score {KEY}") for c in captions)
        row = page.locator("#agreement tr").nth(1).locator("td").all_text_contents()
        assert row[:5] == ["demo-en", KEY, "4.5", "1", "1 (100 %)"]
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "dashboard-scores.png"), full_page=True)
        assert not dialogs
        assert not [e for e in errors if "Content Security Policy" in e or "Uncaught" in e], errors
        browser.close()
