"""kill -9 in the middle of a run, several times, then resume by name: nothing lost, nothing doubled."""

from __future__ import annotations

import random
import signal
import sqlite3
import subprocess
import sys
import time

from conftest import REPO, core_cli, core_ctrl_c_able, core_env, core_one_line_error, core_wait_for

TARGET = 40


def count(db, where: str) -> int:
    con = sqlite3.connect(db, timeout=5)
    try:
        return con.execute(f"select count(*) from sample where {where}").fetchone()[0]
    finally:
        con.close()


def accepted(db) -> dict[int, str]:
    """id -> instruction of accepted samples, read without creating or locking the file."""
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    except sqlite3.OperationalError:
        return {}
    try:
        return dict(con.execute("select id, instruction from sample where status = 'accepted'"))
    except sqlite3.OperationalError:  # tables not created yet
        return {}
    finally:
        con.close()


def test_kill9_and_resume(stub_server, tmp_path):
    server = stub_server("--latency", "0.15")
    db = tmp_path / "resume.db"
    args = [
        sys.executable, "-m", "datagen.cli", "generate", "--api", "chat", "--model", "stub",
        "--base-url", server.base_url, "-n", str(TARGET), "--db", str(db), "--run", "crashy", "--no-progress",
        # Few requests in flight, so acceptances trickle in and each kill lands well short of the
        # target: with the default 16 a resumed run could pass 24 and reach 40 before the kill.
        "--concurrency", "2",
    ]
    rng = random.Random()
    before: dict[int, str] = {}
    kills = 0
    pending_left = 0
    for threshold in (3, 12, 24):
        proc = subprocess.Popen(args, cwd=REPO, env=core_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 120
        while len(accepted(db)) < threshold and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(rng.uniform(0, 0.3))  # land somewhere between two commits, not right after one
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        out, err = proc.communicate(timeout=30)
        assert proc.returncode in (-signal.SIGKILL, 0), err.decode()
        now = accepted(db)
        assert before.items() <= now.items(), "a sample accepted before a kill is no longer accepted"
        before = now
        pending_left += count(db, "status = 'pending'")
    assert kills >= 2, "the run finished before it could be killed; raise --latency"
    assert len(before) < TARGET
    assert pending_left > 0, "no kill landed while a sample was pending, so resuming pending work went untested"

    final = core_cli(*args[3:], timeout=300)
    assert final.returncode == 0, final.stderr
    assert f"accepted={TARGET}" in final.stdout

    con = sqlite3.connect(db)
    after = dict(con.execute("select id, instruction from sample where status = 'accepted'"))
    assert len(after) == TARGET
    assert before.items() <= after.items(), "samples accepted before the kills were lost"
    dupes = con.execute(
        "select lower(instruction), count(*) from sample where status in ('pending', 'accepted', 'approved') "
        "group by 1 having count(*) > 1"
    ).fetchall()
    assert dupes == []
    assert con.execute("select count(*) from sample where status = 'pending'").fetchone() == (0,)
    assert con.execute("select state, target from run where name = 'crashy'").fetchone() == ("finished", TARGET)
    # finish_sample is atomic: every accepted sample has its instances.
    bare = con.execute(
        "select count(*) from sample s where status = 'accepted' and not exists (select 1 from instance i where i.sample_id = s.id)"
    ).fetchone()
    assert bare == (0,)
    con.close()


# ---------------------------------------------------------------- crash loop, ledger, run state

L = 0.1  # stub latency: every interval below is a number of round trips


def ledger(db) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)


def rows(db, run: str | None = None) -> int:
    try:
        con = ledger(db)
    except sqlite3.OperationalError:
        return 0
    try:
        if run:
            return con.execute("select count(*) from request join run on run.id = run_id where run.name = ?", (run,)).fetchone()[0]
        return con.execute("select count(*) from request").fetchone()[0]
    except sqlite3.OperationalError:
        return 0
    finally:
        con.close()


def round_trip(db, after: int) -> float:
    """Median latency (s) of the answered requests after row `after`; L until 8 have returned."""
    con = ledger(db)
    try:
        lat = sorted(ms for (ms,) in con.execute("select latency_ms from request where id > ? and state = 'done'", (after,)))
    finally:
        con.close()
    return lat[len(lat) // 2] / 1000 if len(lat) >= 8 else 10 * L


def gen_args(server, db, run, *extra):
    return [sys.executable, "-m", "datagen.cli", "generate", "--api", "chat", "--model", "stub", "--base-url", server.base_url,
            "--db", str(db), "--run", run, "--no-progress", *extra]


def test_crash_loop_progresses_on_every_restart_and_ledger_loses_nothing(stub_server, tmp_path):
    """kill -9 every few round trips: each restart accepts more, classify is rarely paid twice, every request is in the ledger.

    Before: a resume re-classified every pending candidate before any instances call (5 kills, 0
    accepted, 59-68 % of classify calls wasted), and in-flight attempts were missing from the ledger.
    """
    server = stub_server("--latency", str(L))
    db = tmp_path / "loop.db"
    args = gen_args(server, db, "loop", "-n", "200", "--concurrency", "8")
    progress = []
    for _ in range(5):
        start_rows = rows(db)
        before = len(accepted(db))
        proc = subprocess.Popen(args, cwd=REPO, env=core_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        while rows(db) == start_rows and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)  # the interval counts from this process's first request, not its imports
        t0 = time.monotonic()
        # Five round trips as measured (a loaded machine doubles the stub's latency): enough to finish
        # started candidates, far too few to re-classify the ~60 pending ones before any instances call.
        while time.monotonic() - t0 < 5 * round_trip(db, start_rows) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        progress.append(len(accepted(db)) - before)

        def seen():  # (requests the stub received, ledger rows, rows still marked sent or lost)
            con = ledger(db)
            # rows cut off by an earlier kill are marked `lost` when the next run resumes
            n, sent = con.execute("select count(*), sum(state in ('sent', 'lost')) from request").fetchone()
            con.close()
            return server.stats()["received"], n, sent or 0

        # Every request the server saw has its row (written before sending); extra rows are ones killed
        # before or while sending. Requests still on their way only raise `received` towards n, so
        # this is polled (with a deadline) rather than checked after a guessed pause.
        core_wait_for(lambda: (lambda r, n, s: r <= n <= r + s)(*seen()), timeout=30, step=0.05)
        received, n, sent = seen()
        assert received <= n <= received + sent, (received, n, sent)
    assert all(k > 0 for k in progress), f"a restart accepted nothing: {progress}"

    con = ledger(db)
    prompts = [p for (p,) in con.execute("select prompt from request where stage = 'classify' and state = 'done' and error is null")]
    con.close()
    asked = [p.rsplit("Task: ", 1)[1] for p in prompts]
    repeated = len(asked) - len(set(asked))
    print(f"crash loop: accepted per restart {progress}, classify answered {len(asked)}, repeated {repeated}")
    assert len(asked) > 30 and repeated / len(asked) < 0.05, (repeated, len(asked))


def test_first_instances_call_within_a_few_round_trips(stub_server, tmp_path):
    """With concurrency 8 a run used to send 8 bootstrap and 56 classify calls before its first instances call."""
    server = stub_server("--latency", "0.2")
    db = tmp_path / "order.db"
    proc = core_cli(*gen_args(server, db, "order", "-n", "30", "--concurrency", "8")[3:], timeout=120)
    assert proc.returncode == 0, proc.stderr
    con = sqlite3.connect(db)
    stages = [s for (s,) in con.execute("select stage from request order by id")]
    con.close()
    first = stages.index("instances")
    # Round trip 1: bootstraps; 2: classify; 3: the first instances calls. Three rounds of 8.
    assert first <= 3 * 8, stages[: first + 1]


def test_ctrl_c_and_sigterm_leave_the_run_interrupted_without_phantom_errors(stub_server, tmp_path):
    server = stub_server("--latency", "0.3")
    db = tmp_path / "stop.db"
    for sig, run in ((signal.SIGINT, "ctrl-c"), (signal.SIGTERM, "term")):
        proc = subprocess.Popen(gen_args(server, db, run, "-n", "500", "--concurrency", "8"), cwd=REPO, env=core_env(),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=core_ctrl_c_able)
        deadline = time.monotonic() + 60
        while rows(db, run) < 12 and time.monotonic() < deadline:
            time.sleep(0.02)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
        last = err.strip().splitlines()[-1]
        if sig == signal.SIGINT:  # Ctrl-C stops at once: requests in flight are cut and marked so
            assert proc.returncode == 130 and last.startswith("error: interrupted"), err
        else:  # SIGTERM drains: no new request, those in flight are answered and stored
            assert proc.returncode == 75 and f"resume with --run {run}" in last, err
        con = sqlite3.connect(db)
        state = con.execute("select state from run where name = ?", (run,)).fetchone()[0]
        errors = con.execute("select error from request where error is not null and state = 'done'").fetchall()
        by_state = dict(con.execute("select request.state, count(*) from request join run on run.id = request.run_id where run.name = ? group by request.state", (run,)).fetchall())
        con.close()
        assert state == "interrupted"
        assert errors == [], errors  # before: "client has been closed" rows, one per request in flight
        assert "sent" not in by_state, by_state  # no row left without its outcome
        if sig == signal.SIGINT:
            assert by_state.get("cancelled", 0) > 0, by_state  # the requests in flight are in the ledger, marked as stopped
        else:
            assert by_state.get("cancelled", 0) == 0 and by_state["done"] >= 12, by_state
    listing = core_cli("runs", "--db", str(db))
    assert listing.returncode == 0 and listing.stdout.count("interrupted") == 2, listing.stdout


def test_a_running_run_is_shown_running_only_while_its_lease_is_held(tmp_path):
    """By the run lease, not by the heartbeat's age: a live holder is running however long since its
    last write; a run whose holder is gone (kill -9, no lease row) is interrupted at once."""
    from datetime import datetime, timedelta, timezone

    from datagen import storage
    from datagen.lease import RunLeaseHolder
    from datagen.storage.leases import get_lease

    engine = storage.connect(str(tmp_path / "s.db"))
    storage.open_run(engine, "r", lang="en", api="chat", model="m", target=1, config={})
    assert [r.state for r, _ in storage.list_runs(engine)] == ["interrupted"]  # `running`, but nobody holds it
    holder = RunLeaseHolder(engine, "r")
    holder.acquire()
    run = storage.get_run(engine, "r")
    lease = get_lease(engine, "r")
    assert storage.shown_state(run, lease) == "running"
    later = datetime.now(timezone.utc) + timedelta(hours=1)
    assert storage.shown_state(run, lease, now=later) == "interrupted"  # its lease ran out: the holder is gone
    assert [r.state for r, _ in storage.list_runs(engine)] == ["running"]
    holder.release()
    assert [r.state for r, _ in storage.list_runs(engine)] == ["interrupted"]
    storage.dispose_all()


def test_a_run_resumed_by_name_alone_keeps_its_api_model_server_and_target(stub_server, tmp_path):
    """`generate --run NAME` (what a schedule or a tired user types) goes on as the run was started:
    not on the default local model, and not at the default target."""
    server = stub_server()
    db = tmp_path / "by-name.db"
    first = core_cli(*gen_args(server, db, "named", "-n", "3")[3:])
    assert first.returncode == 0, first.stderr
    served = server.stats()["served"]

    # A server in the environment is for new runs; this run keeps the one it was started on.
    elsewhere = core_env(OPENAI_BASE_URL="http://127.0.0.1:9/v1", OPENAI_API_KEY="sk-test")
    again = core_cli("generate", "--run", "named", "--db", str(db), "--no-progress", env=elsewhere)
    assert again.returncode == 0, again.stderr
    assert "already has 3 accepted of the 3 asked for" in again.stdout  # the run's target, not the default 100

    grown = core_cli("generate", "--run", "named", "--db", str(db), "-n", "5", "--no-progress", env=elsewhere)
    assert grown.returncode == 0, grown.stderr
    assert "accepted=5 " in grown.stdout and server.stats()["served"] > served  # the run's own server answered
    con = sqlite3.connect(db)
    assert con.execute("select api, model, target from run").fetchall() == [("chat", "stub", 5)]
    assert con.execute("select distinct model from request").fetchall() == [("stub",)]
    assert count(db, "status = 'accepted'") == 5
    # A run is one language: asking for another is one line, and nothing is generated.
    other = core_cli("generate", "--run", "named", "--db", str(db), "--lang", "zh", "-n", "6", "--no-progress", env=elsewhere)
    assert core_one_line_error(other) == "error: run 'named' is in en: leave out --lang to resume it"
    assert count(db, "status = 'accepted'") == 5
