"""The Jobs page in headless Chromium against a real `datagen serve` on a real SQLite file."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import httpx
import pytest

from conftest import ARTIFACTS, ROOT, TOKEN, core_free_port
from test_batches_api import seed_batches
from test_dashboard import browser  # noqa: F401  (fixture; needs Chromium, as the review page's test does)

HOSTILE = "<img src=x onerror=alert(1)>"


@pytest.fixture()
def jobs_server(tmp_path):
    from datagen import storage
    from datagen.jobs import queue, schedules
    from datagen.records import Candidate, Instance, Status

    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    engine = storage.connect(url)
    # A job a worker is running (claimed through the queue's own call), its run 2 of 50 along.
    queue.submit(engine, "generate", ["--api", "chat", "-n", "50", "--run", "live"])
    running, _ = queue.claim(engine, "box-1:4242", ["default"])
    run, _ = storage.open_run(engine, "live", lang="en", api="chat", model="m", target=50, config={})
    for text in ("Name two rivers in Africa.", "Explain tides to a child."):
        storage.add_sample(engine, run.id, Candidate(instruction=text, lang="en", status=Status.accepted, instances=[Instance(output="ok")]))
    schedules.create(engine, "nightly " + HOSTILE, cron="0 2 * * *", tz="Asia/Shanghai",
                     job=["generate", "--api", "chat", "-n", "50", "--run", "nightly"])
    job = schedules.run_now(engine, "nightly " + HOSTILE)
    seed_batches(engine)  # a batch run: one batch ingested, one in flight, one failed with a hostile reason
    storage.dispose_all()
    port = core_free_port()
    env = dict(os.environ, DATAGEN_API_TOKEN=TOKEN, PYTHONPATH=str(ROOT))
    log = open(tmp_path / "serve.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "api.cli", "serve", "--port", str(port), "--db", url],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 30
    while True:
        try:
            if httpx.get(base + "/api/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.time() > deadline or proc.poll() is not None:
            proc.kill()
            pytest.fail("server did not start: " + (tmp_path / "serve.log").read_text())
        time.sleep(0.2)
    yield base, url, job.id, running.id
    proc.terminate()
    proc.wait(10)
    log.close()


def test_jobs_page_shows_schedules_and_jobs_and_runs_now(jobs_server, browser):  # noqa: F811
    base, url, first_job, running_job = jobs_server
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    errors, dialogs = [], []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.goto(base + "/")
    page.click("a[href='/jobs']")
    page.wait_for_selector("#schedules tbody tr[data-schedule]")

    row = page.locator("#schedules tbody tr[data-schedule]")
    cells = row.locator("td").all_text_contents()
    assert cells[0] == "nightly " + HOSTILE  # shown as text, never markup
    assert cells[1:3] == ["0 2 * * *", "Asia/Shanghai"]
    assert cells[3].endswith("02:00 CST")  # next fire on the schedule's own clock
    assert page.locator("#jobs-view img").count() == 0
    page.wait_for_selector(f"#queued tbody tr[data-job='{first_job}']")
    live = page.locator(f"#running tbody tr[data-job='{running_job}'] td").all_text_contents()
    assert live[2:4] == ["live", " 2 / 50"] and live[6] == "box-1:4242"

    # Runs: actual cost next to the batch estimate and its in-flight part; online runs have no estimate.
    batchy = page.locator("#runs tbody tr[data-run='batchy'] td").all_text_contents()
    assert batchy[2:] == ["0 / 20", "6 (1 err)", "0.0066", "0.0526 (0.0100 in flight)"], batchy
    assert page.locator("#runs tbody tr[data-run='live'] td").all_text_contents()[4:] == ["0.0000", ""]
    # Batches: provider status as it is, counts, estimate, actual cost only once ingested.
    rows = [r.locator("td").all_text_contents() for r in page.locator("#batches tbody tr[data-batch]").all()]
    assert [r[:8] for r in rows] == [
        [rows[0][0], "batchy", "bootstrap", "batch_done", "completed", "2 / 0 / 2", "0.0300", "0.0066"],
        [rows[1][0], "batchy", "instances", "batch_flying", "in_progress", "1 / 0 / 3", "0.0100", ""],
        [rows[2][0], "batchy", "classify", "batch_failed", "failedinvalid_request: " + HOSTILE, "0 / 0 / 1", "0.0126", "0.0000"],
    ], rows
    assert all(r[8] for r in rows)  # created

    # run now needs the token: refused without it, a new queued job with it.
    page.click("#schedules button:text('run now')")
    page.wait_for_function("() => document.querySelector('#toast').textContent.includes('401')")
    page.fill("#token", TOKEN)
    page.click("#save-token")
    page.click("#schedules button:text('run now')")
    page.wait_for_function("() => document.querySelector('#toast').textContent.startsWith('queued job')")
    new_id = int(page.text_content("#toast").split()[-1])
    assert new_id != first_job
    page.wait_for_selector(f"#queued tbody tr[data-job='{new_id}']")

    # pause shows in the table; cancel moves a job to the history.
    page.click("#schedules button:text('pause')")
    page.wait_for_function("() => document.querySelector('#schedules tbody td:nth-child(4)').textContent === 'paused'")
    page.click(f"#queued tbody tr[data-job='{first_job}'] button:text('cancel')")
    page.wait_for_selector(f"#history tbody tr[data-job='{first_job}'] .state.cancelled")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "dashboard-jobs.png"), full_page=True)

    from datagen import storage
    from datagen.jobs import queue

    engine = storage.connect(url)
    states = {j.id: j.state for j in queue.list_jobs(engine)}
    storage.dispose_all()
    assert states == {first_job: "cancelled", new_id: "queued", running_job: "running"}
    assert not dialogs
    assert not [e for e in errors if "Content Security Policy" in e or "Uncaught" in e], errors
    page.close()
