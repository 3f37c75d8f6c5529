"""Batch mode against the stub's Files and Batch API, over real HTTP with the official openai client.

The stub answers batch lines as its synchronous routes would and counts, per custom_id, the
created batches that carried it: a request paid twice would show as 2.
"""

from __future__ import annotations

import json
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import openai
import pytest

from conftest import REPO, core_cli, core_env, core_one_line_error
from test_postgres import core_pg_url  # noqa: F401  (fixture)

PRICE_IN, PRICE_OUT = 3.0, 7.0  # USD per 1M tokens, list price; batch lines cost half


def gen_args(server, db, run, *extra: str) -> list[str]:
    return ["generate", "--mode", "batch", "--model", "stub", "--base-url", server.base_url, "--db", str(db), "--run", run,
            "--poll-interval", "0.1", "--price-in", str(PRICE_IN), "--price-out", str(PRICE_OUT), "--no-progress", *extra]


def q(db, sql: str, *args):
    con = sqlite3.connect(db, timeout=10)
    try:
        return con.execute(sql, args).fetchall()
    finally:
        con.close()


def check_run(db, server, target: int) -> dict:
    """What every finished batch run must satisfy; returns the stub's stats."""
    stats = server.stats()
    assert stats["custom_ids"] and max(stats["custom_ids"].values()) == 1, "a request went out in two created batches"
    for (run_id,) in q(db, "select id from run"):
        kept = q(db, "select instruction from sample where status in ('accepted','approved') and run_id = ?", run_id)
        assert len(kept) == target
        assert len({k[0].strip().lower() for k in kept}) == target, "a kept instruction is stored twice"
    # Every line the stub created is a ledger row of ours, and every ledger row went out in a batch.
    rows = dict(q(db, "select id, state from request"))
    assert set(map(int, stats["custom_ids"])) == set(rows), "ledger rows and created batch lines differ"
    assert set(rows.values()) == {"done"}
    # Every accepted sample's requests (bootstrap, classify, instances) are in the ledger.
    for sid, rid in q(db, "select id, request_id from sample where status = 'accepted'"):
        assert rid in rows
        stages = {s for (s,) in q(db, "select stage from request where sample_id = ? and error is null", sid)}
        assert stages == {"classify", "instances"}, (sid, stages)
        assert q(db, "select count(*) from instance where sample_id = ?", sid)[0][0] >= 1
    # Cost: the stub's usage at half the list price, and the ledger's tokens are the stub's.
    usage = stats["batch_usage"]
    tin, tout, cost = q(db, "select sum(tokens_in), sum(tokens_out), sum(cost) from request")[0]
    assert (tin, tout) == (usage["prompt_tokens"], usage["completion_tokens"])
    assert cost == pytest.approx((usage["prompt_tokens"] * PRICE_IN + usage["completion_tokens"] * PRICE_OUT) / 1e6 * 0.5, rel=1e-9)
    batch_cost = q(db, "select sum(cost) from batch")[0][0]
    assert batch_cost == pytest.approx(cost, rel=1e-9)
    return stats


@pytest.mark.parametrize("api", ["chat", "completion"])
def test_batch_run_reaches_its_target_through_the_same_filters(stub_server, tmp_path, api):
    server = stub_server("--batch-delay", "0.3")
    db = tmp_path / "b.db"
    done = core_cli(*gen_args(server, db, "nightly", "--api", api, "-n", "15", "--keep-files"))  # files read below
    assert done.returncode == 0, done.stderr
    assert "accepted=15" in done.stdout
    check_run(db, server, 15)
    # The uploaded lines are the ledger's bodies under their row ids, for the endpoint of the API.
    client = openai.OpenAI(base_url=server.base_url, api_key="x")
    endpoint = "/v1/chat/completions" if api == "chat" else "/v1/completions"
    bodies = dict(q(db, "select id, body from request"))
    seen = 0
    for (file_id,) in q(db, "select input_file_id from batch"):
        for raw in client.files.content(file_id).text.splitlines():
            line = json.loads(raw)
            assert line["url"] == endpoint and line["method"] == "POST"
            assert line["body"] == json.loads(bodies[int(line["custom_id"])])
            seen += 1
    assert seen == len(bodies)
    # The same filters as online mode judged the candidates: rejected ones carry their reasons.
    reasons = {r for (r,) in q(db, "select reason from sample where status = 'rejected'")}
    assert reasons <= {"similar", "blacklist", "duplicate", "too_short", "too_long", "no_valid_instances", "prompt_echo"}, reasons
    listing = core_cli("batches", "--db", str(db), "--run", "nightly")
    assert listing.returncode == 0 and "completed" in listing.stdout and endpoint in listing.stdout
    runs = core_cli("runs", "--db", str(db))
    assert "batch est $" in runs.stdout and "nightly" in runs.stdout


class _Capture(BaseHTTPRequestHandler):
    """Records the body of each POST and answers like a Chat or Completion API would."""

    bodies: list[dict] = []

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        _Capture.bodies.append(body)
        if "messages" in body:
            out = {"id": "c", "object": "chat.completion", "created": 0, "model": "m",
                   "choices": [{"index": 0, "message": {"role": "assistant", "content": "No"}, "finish_reason": "stop"}]}
        else:
            out = {"id": "c", "object": "text_completion", "created": 0, "model": "m",
                   "choices": [{"index": 0, "text": "No", "finish_reason": "stop", "logprobs": None}]}
        data = json.dumps(out).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *a):
        pass


@pytest.mark.parametrize("mode", ["chat", "completion"])
def test_batch_line_body_is_what_online_mode_sends(mode):
    import asyncio

    from datagen.backends.openai_compat import OpenAIBackend
    from datagen.records import Prompt, Stage

    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Capture)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        backend = OpenAIBackend(mode, "m", base_url=f"http://127.0.0.1:{srv.server_address[1]}/v1")
        prompt = Prompt(stage=Stage.classify, text="Task: Is it a fruit? \u202e\nIs it classification?", max_tokens=3, temperature=0.0, top_p=1.0)
        _Capture.bodies.clear()
        gens = asyncio.run(backend.complete([prompt]))
        assert gens[0].text == "No"
        assert _Capture.bodies == [backend.body([prompt])]
    finally:
        srv.shutdown()


# Moments to kill in, as the database shows them: a batch row written (before or during its upload and
# create), a provider id stored (waiting on the batch), an ingest stored (taking its answers, planning).
MOMENTS = {
    "batch written": "select count(*) from batch b join run r on r.id = b.run_id where r.name = ?",
    "batch created": "select count(*) from batch b join run r on r.id = b.run_id where r.name = ? and b.provider_id is not null",
    "batch ingested": "select count(*) from batch b join run r on r.id = b.run_id where r.name = ? and b.ingested",
}


def count(db, sql: str, name: str) -> int:
    # Never connect before the file exists: sqlite3 would create an empty one under the starting process.
    try:
        return q(db, sql, name)[0][0] if db.exists() else 0
    except sqlite3.OperationalError:  # no tables yet
        return 0


def reach(db, name: str, moment: str, before: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    """Wait until `proc` has done one more of `moment` for the run than `before` (or has exited), however
    long its start takes on a busy machine: the kill lands in the state it means to, never on a timer."""
    deadline = time.monotonic() + timeout
    while proc.poll() is None and count(db, MOMENTS[moment], name) <= before:
        assert time.monotonic() < deadline, f"generate did not reach '{moment}' in {timeout} s"
        time.sleep(0.01)


def test_kill9_at_random_moments_pays_each_request_once(stub_server, tmp_path):
    """Five kill -9s wherever they land (upload, create, waiting, ingest), each followed by a resume by
    name alone. The stub's batches keep running while we are dead, so a run may finish between kills:
    the next kills go to a new run in the same database, and every run is checked."""
    server = stub_server("--batch-delay", "2")
    db = tmp_path / "k.db"
    rng = random.Random()
    states, runs, killed, fresh = [], 0, 0, True
    while killed < 5:
        name = f"crashy{runs}"
        cmd = (gen_args(server, db, name, "--api", "chat", "-n", "40", "--batch-max-lines", "9") if fresh else
               ["generate", "--run", name, "--db", str(db), "--poll-interval", "0.1", "--no-progress"])
        moment = rng.choice(list(MOMENTS))
        before = count(db, MOMENTS[moment], name)
        proc = subprocess.Popen([sys.executable, "-m", "datagen.cli", *cmd], cwd=REPO, env=core_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        reach(db, name, moment, before, proc)
        time.sleep(rng.uniform(0.0, 0.3))  # and a little after: within the step that follows
        live = proc.poll() is None
        if live:
            proc.send_signal(signal.SIGKILL)
            killed += 1
        out, err = proc.communicate()
        assert proc.returncode in (0, -9), err.decode()
        fresh = not live  # finished before the kill: the next kill goes to a new run
        runs += fresh
        states.append((moment, q(db, "select status, ingested, provider_id is null from batch where run_id = (select max(id) from run)")))
    # Online mode would pay again for the lines of a batch the provider has. (A batch it never saw is
    # dropped and the run goes online: test_batch_stops.py's never_saw test.)
    if q(db, "select count(*) from batch b join run r on r.id = b.run_id where r.name = ? and not b.ingested "
             "and b.provider_id is not null", f"crashy{runs}")[0][0]:
        online = core_cli("generate", "--run", f"crashy{runs}", "--mode", "online", "--db", str(db), "--no-progress")
        assert "has batches in flight" in core_one_line_error(online)
    if not fresh:
        done = core_cli("generate", "--run", f"crashy{runs}", "--db", str(db), "--poll-interval", "0.1", "--no-progress")
        assert done.returncode == 0, done.stderr
    stats = check_run(db, server, 40)
    assert stats["batches_created"] == q(db, "select count(*) from batch")[0][0]  # no orphan batch at the provider
    assert q(db, "select max(c) from (select count(*) c from batch group by key)")[0][0] == 1
    print(f"\nFIGURE batch kills: {killed} kills over {runs + (not fresh)} runs; batch states after each: {states}")


def test_a_lost_create_answer_is_adopted_not_created_again(stub_server, tmp_path):
    """Batch routes that hang after doing their work (a create whose answer never arrives)."""
    server = stub_server("--batch-delay", "0.3", "--route-faults", "--faults", "timeout", "--fault-rate", "0.3", "--hang", "3", "--seed", "3")
    db = tmp_path / "lost.db"
    done = core_cli(*gen_args(server, db, "lossy", "--api", "chat", "-n", "10", "--timeout", "1", "--max-tries", "8"), timeout=300)
    assert done.returncode == 0, done.stderr
    stats = check_run(db, server, 10)
    assert stats["injected"].get("timeout", 0) > 0
    assert stats["batches_created"] == q(db, "select count(*) from batch")[0][0]


def test_expired_batch_keeps_finished_lines_and_retries_the_rest(stub_server, tmp_path):
    server = stub_server("--batch-delay", "0.3", "--expire-batches", "1", "--expire-after", "1")
    db = tmp_path / "e.db"
    done = core_cli(*gen_args(server, db, "exp", "--api", "chat", "-n", "10"))
    assert done.returncode == 0, done.stderr
    check_run(db, server, 10)
    (first, status), *_ = q(db, "select id, status from batch order by id")
    assert status == "expired"
    lines = q(db, "select id, error, body from request where batch_id = ? order by id", first)
    ok = [r for r in lines if r[1] is None]
    lost = [r for r in lines if r[1] is not None]
    assert len(ok) == 1 and lost
    assert all(e.startswith("batch_expired") for _, e, _ in lost)
    for rid, _, body in lost:  # each retried once, with the same body, in a later batch
        again = q(db, "select batch_id, attempt from request where body = ? and id != ?", body, rid)
        assert len(again) == 1 and again[0][0] > first and again[0][1] == 2


def test_failed_lines_and_a_failed_batch_are_retried_with_their_errors_stored(stub_server, tmp_path):
    server = stub_server("--batch-delay", "0.3", "--fail-batches", "1", "--line-error-every", "5")
    db = tmp_path / "f.db"
    done = core_cli(*gen_args(server, db, "flaky", "--api", "completion", "-n", "12"))
    assert done.returncode == 0, done.stderr
    check_run(db, server, 12)
    (first, status, errors), *_ = q(db, "select id, status, errors from batch order by id")
    assert status == "failed" and errors and json.loads(errors)[0]["message"]
    assert {e for (e,) in q(db, "select error from request where batch_id = ?", first)} == {q(db, "select error from request where batch_id = ?", first)[0][0]}
    assert q(db, "select error from request where batch_id = ?", first)[0][0].startswith("no result: batch failed")
    line_errors = q(db, "select id, attempt, body from request where error like 'HTTP 400: stub: injected line error%'")
    assert line_errors
    for rid, attempt, body in line_errors:
        assert q(db, "select count(*) from request where body = ? and attempt = ?", body, attempt + 1)[0][0] == 1


def test_budget_and_limits_bound_what_is_submitted(stub_server, tmp_path):
    server = stub_server("--batch-delay", "0.3")
    db = tmp_path / "budget.db"
    # Limits: lines per file and input tokens enqueued for the model.
    done = core_cli(*gen_args(server, db, "split", "--api", "chat", "-n", "20", "--batch-max-lines", "6", "--max-enqueued-tokens", "20000"))
    assert done.returncode == 0, done.stderr
    assert max(n for (n,) in q(db, "select requests from batch")) <= 6
    assert max(t for (t,) in q(db, "select tokens_est from batch")) <= 20000
    # A budget smaller than the run needs: it stops before spending past it, in one line, resumable.
    stopped = core_cli(*gen_args(server, db, "cheap", "--api", "chat", "-n", "200", "--budget", "0.02"))
    assert stopped.returncode == 1 and "Traceback" not in stopped.stderr, stopped.stderr
    line = stopped.stderr.strip().splitlines()[-1]  # after the batch log lines
    assert line.startswith("error: budget $0.0200") and "raise --budget" in line, stopped.stderr
    run_id = q(db, "select id from run where name = 'cheap'")[0][0]
    spent = q(db, "select coalesce(sum(cost), 0) from request where run_id = ?", run_id)[0][0]
    # Ended batches count at their actual cost, open ones at their estimate (an upper bound).
    assert 0 < spent <= 0.02
    assert q(db, "select count(*) from batch where run_id = ? and not ingested", run_id)[0][0] == 0
    assert q(db, "select state from run where name = 'cheap'")[0][0] == "interrupted"


def test_batch_mode_refuses_what_cannot_work(tmp_path):
    local = core_cli("generate", "--mode", "batch", "--api", "local", "--db", str(tmp_path / "x.db"))
    assert "--mode batch" in core_one_line_error(local)
    assert not (tmp_path / "x.db").exists()
    # A server without /v1/batches (llama.cpp, vLLM, Ollama): one line naming the missing API.
    class Quiet(BaseHTTPRequestHandler):  # answers every request with 501, logging nothing to the CLI's stderr
        def log_message(self, *args):
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{srv.server_address[1]}/v1"
        proc = core_cli("generate", "--mode", "batch", "--api", "chat", "--base-url", url, "--db", str(tmp_path / "y.db"), "--max-tries", "1", "--no-progress")
        assert "Batch API" in core_one_line_error(proc) or "files.create" in proc.stderr, proc.stderr
    finally:
        srv.shutdown()


def test_online_budget_stops_before_spending_past_it(stub_server, tmp_path):
    server = stub_server("--latency", "0.05")
    db = tmp_path / "online.db"
    args = ["generate", "--api", "chat", "--model", "stub", "--base-url", server.base_url, "--db", str(db), "--run", "capped",
            "--price-in", str(PRICE_IN), "--price-out", str(PRICE_OUT), "--no-progress", "-n", "200"]
    stopped = core_cli(*args, "--budget", "0.01")
    assert "raise --budget" in core_one_line_error(stopped)
    spent = q(db, "select sum(cost) from request")[0][0]
    assert 0 < spent <= 0.01
    assert q(db, "select state from run")[0][0] == "interrupted"
    # A larger budget resumes the run where it stopped, counting what was already spent.
    more = core_cli(*args, "--budget", "0.02")
    assert more.returncode == 1 and "budget $0.0200" in more.stderr
    assert 0.01 < q(db, "select sum(cost) from request")[0][0] <= 0.02


def test_a_no_wait_batch_job_is_run_again_until_its_run_is_finished(stub_server, tmp_path):
    """A scheduled-style job: each attempt is one round (exit 75 while unfinished), queued again after --again-after."""
    from datagen import storage
    from datagen.jobs import queue

    server = stub_server("--batch-delay", "0.3")
    db = tmp_path / "jobs.db"
    engine = storage.connect(f"sqlite:///{db}")
    job = queue.submit(engine, "generate", ["--mode", "batch", "--api", "chat", "--model", "stub", "--base-url", server.base_url,
                                            "-n", "6", "--run", "nightly", "--no-wait"])
    w = subprocess.Popen([sys.executable, "-m", "datagen.cli", "worker", "--db", str(db), "--poll", "0.1", "--again-after", "0.5",
                          "--max-idle", "3"], cwd=REPO, env=core_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = w.communicate(timeout=240)
    assert w.returncode == 0, err
    job, attempts = queue.get(engine, job.id)
    assert job.state == "succeeded", (job.state, job.exit_message, err)
    assert len(attempts) >= 3 and [a.state for a in attempts[:-1]] == ["released"] * (len(attempts) - 1)
    assert all(a.exit_code == 75 and a.exit_message.startswith("unfinished, again in 0.5 s") for a in attempts[:-1])
    gaps = [(b.started_at - a.finished_at).total_seconds() for a, b in zip(attempts, attempts[1:])]
    assert min(gaps) >= 0.45
    assert q(db, "select count(*) from sample where status = 'accepted'")[0][0] == 6
    storage.dispose_all()


def test_batch_run_on_postgres(stub_server, core_pg_url):  # noqa: F811
    from sqlalchemy import text

    from datagen import storage

    server = stub_server("--batch-delay", "0.3")
    done = core_cli(*gen_args(server, core_pg_url, "pg", "--api", "chat", "-n", "8"))
    assert done.returncode == 0, done.stderr
    engine = storage.connect(core_pg_url, create=False)
    with engine.connect() as conn:
        kept = conn.execute(text("select count(*) from sample where status = 'accepted'")).scalar_one()
        states = set(conn.execute(text("select distinct state from request")).scalars())
        ingested = conn.execute(text("select bool_and(ingested) from batch")).scalar_one()
    assert (kept, states, ingested) == (8, {"done"}, True)
    assert max(server.stats()["custom_ids"].values()) == 1
    storage.dispose_all()
