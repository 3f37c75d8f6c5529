"""Jobs and workers with real worker processes, signals, SQLite files and PostgreSQL, against the stub.

Figures (jobs/minute for tiny jobs, lease expiry -> re-claim) are printed; run with -s to see them.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import func, select
from sqlmodel import Session

from conftest import REPO, core_cli, core_env, core_one_line_error, core_wait_for
from test_postgres import core_pg_url  # noqa: F401  (fixture)

from datagen import storage
from datagen.jobs import queue
from datagen.storage import leases  # noqa: F401  (storage.leases below)
from datagen.storage.models import Sample


def worker(db: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "datagen.cli", "worker", "--db", db, "--poll", "0.1", *args], cwd=REPO,
                            env=core_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def gen_args(server, n: int, run: str) -> list[str]:
    return ["--api", "chat", "--model", "stub", "--base-url", server.base_url, "-n", str(n), "--run", run, "--concurrency", "4"]


wait_for = core_wait_for


def accepted(engine, run: str) -> tuple[int, int]:
    r = storage.get_run(engine, run)
    if r is None:
        return 0, 0
    with Session(engine) as s:
        q = select(func.count(), func.count(Sample.instruction_hash.distinct())).where(Sample.run_id == r.id, Sample.status == "accepted")
        return tuple(s.execute(q).one())


def states(engine, job_id: int) -> tuple[str, list[str]]:
    job, attempts = queue.get(engine, job_id)
    return job.state, [a.state for a in attempts]


def test_submit_refuses_bad_input_in_one_line(tmp_path):
    db = f"sqlite:///{tmp_path / 'q.db'}"
    for args, want in [
        (["generate", "--", "--bogus"], "No such option"),
        (["generate", "--", "-n", "abc"], "Invalid value for '--num-instructions'"),
        (["generate", "--", "-n", "0"], "--num-instructions 0"),
        (["generate", "--", "--lang", "fr"], "--lang 'fr'"),  # a value generate refuses: refused at submit, not at 2 a.m.
        (["generate", "--", "--db", "other.db"], "--db is not allowed"),
        (["generate", "--", "--mode", "batch", "--api", "local"], "--mode batch sends requests"),  # combinations too
        (["generate", "--", "--ray", "auto", "--api", "chat"], "--ray serves an open model"),
        (["export", "--", "--format", "alpaca"], "Missing option '--out'"),
        (["frobnicate"], "unknown job kind 'frobnicate'"),
    ]:
        line = core_one_line_error(core_cli("jobs", "submit", "--db", db, *args))
        assert want in line, (args, line)
    ok = core_cli("jobs", "submit", "generate", "--db", db, "--", "--api", "chat", "-n", "5")
    assert ok.stdout.strip() == "job 1 queued (generate, run job-1)", ok.stderr
    engine = storage.connect(db)
    assert queue.list_jobs(engine)[0].run_name == "job-1"  # a re-claim resumes this run by name
    assert core_one_line_error(core_cli("jobs", "show", "99", "--db", db)) == "error: no job 99"
    # The scheduler's contract: one job per unique key, skipped slots stored with their reason.
    first = queue.submit(engine, "dedup", ["x.txt"], unique_key="s1@2026-12-02T02:00Z", schedule_id=1)
    assert first is not None and queue.submit(engine, "dedup", ["x.txt"], unique_key="s1@2026-12-02T02:00Z") is None
    skipped = queue.submit(engine, "dedup", ["x.txt"], unique_key="s1@03:00", skip_reason="overlap: previous still running")
    assert skipped.state == "skipped" and queue.list_jobs(engine, state="skipped")[0].exit_message.startswith("overlap")
    # Queues and due times: a job waits in its own queue, and not before its time.
    later = queue.submit(engine, "dedup", ["y.txt"], queue="gpu", scheduled_for=datetime.now(timezone.utc) + timedelta(hours=1))
    assert queue.claim(engine, "w", ["nightly"]) is None
    assert queue.claim(engine, "w", ["gpu"]) is None  # not due yet
    assert queue.get(engine, later.id)[0].state == "queued"
    # Cancelling a queued job is immediate; a finished one cannot be cancelled.
    assert core_cli("jobs", "cancel", str(first.id), "--db", db).stdout.strip() == f"job {first.id} cancelled"
    assert "already cancelled" in core_one_line_error(core_cli("jobs", "cancel", str(first.id), "--db", db))
    storage.dispose_all()


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_concurrent_claims_never_share_a_job(backend, tmp_path, request):
    db = f"sqlite:///{tmp_path / 'claims.db'}" if backend == "sqlite" else request.getfixturevalue("core_pg_url")
    engine = storage.connect(db)
    ids = {queue.submit(engine, "dedup", [f"in{i}.txt"]).id for i in range(30)}
    got: list[int] = []

    def claimer(k: int) -> None:
        while (c := queue.claim(engine, f"test:{k}", ["default"], ttl=60)) is not None:
            got.append(c[0].id)

    threads = [threading.Thread(target=claimer, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(got) == sorted(ids)  # every job claimed, none twice
    assert queue.claim(engine, "late", ["default"]) is None
    storage.dispose_all()


def test_a_job_that_keeps_losing_its_worker_is_failed(tmp_path):
    engine = storage.connect(f"sqlite:///{tmp_path / 'poison.db'}")
    jid = queue.submit(engine, "dedup", ["x.txt"]).id
    for n in range(queue.MAX_ATTEMPTS):
        # Claimable again once the previous worker's lease (0.05 s, never renewed) has run out.
        job, attempt = wait_for(lambda: queue.claim(engine, f"w{n}", ["default"], ttl=0.05), timeout=10, step=0.02)
        assert (job.id, attempt.n) == (jid, n + 1)
    # After the third lease runs out the job is failed, not handed out a fourth time.
    # (claim is what fails lost jobs; a fourth attempt would be a claim that returns the job.)
    wait_for(lambda: queue.claim(engine, "last", ["default"]) is None and queue.get(engine, jid)[0].state == "failed", timeout=10, step=0.02)
    job, attempts = queue.get(engine, jid)
    assert job.state == "failed" and "lost 3 times" in job.exit_message
    assert [a.state for a in attempts] == ["lost"] * 3
    storage.dispose_all()


def test_worker_runs_each_kind_and_records_usage(stub_server, tmp_path):
    server = stub_server("--latency", "0.02")
    db = f"sqlite:///{tmp_path / 'w.db'}"
    src = tmp_path / "c.txt"
    src.write_text("Write a poem about rain.\nWrite a poem about the rain.\nList three oceans.\n", "utf-8")
    engine = storage.connect(db)
    tiny = [queue.submit(engine, "dedup", [str(src), "--out", str(tmp_path / f"k{i}.jsonl")]).id for i in range(6)]
    gen = queue.submit(engine, "generate", gen_args(server, 5, "wk")).id
    exp = queue.submit(engine, "export", ["--out", str(tmp_path / "e.json"), "--run", "wk"]).id
    w = worker(db, "--max-idle", "1.5")
    out, err = w.communicate(timeout=180)
    assert w.returncode == 0, err
    for jid in [*tiny, gen, exp]:
        assert states(engine, jid) == ("succeeded", ["succeeded"]), (jid, err)
    job, (att,) = queue.get(engine, gen)
    prog = queue.progress(engine, job)
    assert (prog["accepted"], prog["target"], prog["state"]) == (5, 5, "finished") and prog["requests"] > 0
    assert queue.progress(engine, queue.get(engine, tiny[0])[0]) is None
    assert job.tokens_in > 0 and job.tokens_out > 0 and att.tokens_in == job.tokens_in
    assert accepted(engine, "wk") == (5, 5)
    assert len(json.loads((tmp_path / "e.json").read_text("utf-8"))) >= 5
    assert queue.get(engine, tiny[0])[0].exit_message.startswith("candidates=3 kept=2 rejected=1 seconds=")
    # Tiny jobs: one worker, one at a time, a child process each.
    times = [queue.get(engine, j)[1][0] for j in tiny]
    span = (times[-1].finished_at - times[0].started_at).total_seconds()
    print(f"\nFIGURE tiny dedup jobs, one worker (concurrency 1): {len(tiny) * 60 / span:.1f} jobs/minute")
    storage.dispose_all()


def test_kill9_worker_job_is_reclaimed_and_resumes_without_duplicates(stub_server, tmp_path):
    server = stub_server("--latency", "0.2")
    db = f"sqlite:///{tmp_path / 'k9.db'}"
    engine = storage.connect(db)
    jid = queue.submit(engine, "generate", gen_args(server, 30, "nightly")).id
    a = worker(db, "--lease-ttl", "60")  # only a dead pid can free it quickly
    wait_for(lambda: accepted(engine, "nightly")[0] >= 3)
    a.kill()
    a.wait()
    t_kill = time.monotonic()
    b = worker(db, "--lease-ttl", "60", "--max-idle", "1")
    wait_for(lambda: len(queue.get(engine, jid)[1]) == 2)
    print(f"\nFIGURE kill -9 -> re-claim on the same host (dead pid): {time.monotonic() - t_kill:.1f} s")
    out, err = b.communicate(timeout=180)
    assert b.returncode == 0, err
    assert states(engine, jid) == ("succeeded", ["lost", "succeeded"])
    assert accepted(engine, "nightly") == (30, 30)
    storage.dispose_all()


def test_frozen_worker_loses_its_job_on_lease_expiry(stub_server, core_pg_url):  # noqa: F811
    """A worker that stops answering (SIGSTOP: a frozen or unreachable machine) loses the job when its
    lease runs out; another worker resumes the run; the frozen one, thawed, stands down. On Postgres,
    the database for several machines: a process frozen inside a SQLite write transaction would
    hold the whole file's lock (see README, SQLite limits)."""
    server = stub_server("--latency", "0.2")
    db = core_pg_url
    engine = storage.connect(db)
    jid = queue.submit(engine, "generate", gen_args(server, 30, "frozen")).id
    a = worker(db, "--lease-ttl", "3")
    wait_for(lambda: accepted(engine, "frozen")[0] >= 3)
    b = worker(db, "--lease-ttl", "3", "--max-idle", "8")  # idle, ready, when A freezes
    wait_for(lambda: "concurrency" in b.stderr.readline())
    line = ""
    while "started, pid" not in line:
        line = a.stderr.readline()
    child = int(re.search(r"pid (\d+)", line).group(1))
    try:
        for pid in (a.pid, child):
            subprocess.run(["kill", "-STOP", str(pid)], check=True)
        expires = queue.get(engine, jid)[0].lease_expires_at
        wait_for(lambda: len(queue.get(engine, jid)[1]) == 2)
        job, attempts = queue.get(engine, jid)
        lag = (attempts[1].started_at - expires).total_seconds()
        print(f"\nFIGURE lease expiry -> re-claim by another worker: {lag:.2f} s (poll 0.1 s)")
        assert 0 <= lag < 5
        out, err = b.communicate(timeout=180)
        assert b.returncode == 0, err
    finally:  # never leave a stopped process behind, whatever failed
        for pid in (child, a.pid):
            subprocess.run(["kill", "-CONT", str(pid)])
        if b.poll() is None:
            b.kill()
    a.send_signal(signal.SIGTERM)
    _, a_err = a.communicate(timeout=60)
    assert a.returncode == 0, a_err
    assert "lease lost to another worker" in a_err
    assert states(engine, jid) == ("succeeded", ["lost", "succeeded"])
    assert accepted(engine, "frozen") == (30, 30)
    storage.dispose_all()


def test_cancel_stops_a_running_job_within_seconds(stub_server, tmp_path):
    server = stub_server("--latency", "0.2")
    db = f"sqlite:///{tmp_path / 'cancel.db'}"
    engine = storage.connect(db)
    jid = queue.submit(engine, "generate", gen_args(server, 500, "long")).id
    w = worker(db)
    wait_for(lambda: accepted(engine, "long")[0] >= 1)
    t0 = time.monotonic()
    res = core_cli("jobs", "cancel", str(jid), "--db", db)
    assert "cancel requested" in res.stdout, res.stderr
    wait_for(lambda: queue.get(engine, jid)[0].state == "cancelled", timeout=20)
    assert time.monotonic() - t0 < 10
    assert states(engine, jid) == ("cancelled", ["cancelled"])
    wait_for(lambda: storage.leases.get_lease(engine, "long") is None, timeout=10)  # the stopped child let the run go
    w.send_signal(signal.SIGTERM)
    assert w.wait(30) == 0
    storage.dispose_all()


def test_sigterm_drains_releases_the_job_and_exits_0(stub_server, tmp_path):
    server = stub_server("--latency", "0.3")
    db = f"sqlite:///{tmp_path / 'drain.db'}"
    engine = storage.connect(db)
    jid = queue.submit(engine, "generate", gen_args(server, 40, "drain")).id
    w = worker(db)
    wait_for(lambda: accepted(engine, "drain")[0] >= 2)
    w.send_signal(signal.SIGTERM)
    out, err = w.communicate(timeout=60)
    assert w.returncode == 0, err
    job, attempts = queue.get(engine, jid)
    assert job.state == "queued" and [a.state for a in attempts] == ["released"], (err, attempts)
    assert accepted(engine, "drain")[0] < 40
    b = worker(db, "--max-idle", "1")
    assert b.wait(180) == 0
    assert states(engine, jid) == ("succeeded", ["released", "succeeded"])
    assert accepted(engine, "drain") == (40, 40)
    storage.dispose_all()


def test_job_and_hand_started_generate_never_both_run(stub_server, tmp_path):
    server = stub_server("--latency", "0.3")
    db = f"sqlite:///{tmp_path / 'both.db'}"
    engine = storage.connect(db)
    hand = subprocess.Popen([sys.executable, "-m", "datagen.cli", "generate", *gen_args(server, 60, "nightly"), "--db", db,
                             "--no-progress"], cwd=REPO, env=core_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: storage.leases.get_lease(engine, "nightly"))
    jid = queue.submit(engine, "generate", gen_args(server, 60, "nightly")).id
    w = worker(db, "--lease-ttl", "1", "--max-idle", "1")  # waits 2 x TTL for the holder, then gives up
    assert w.wait(120) == 0
    job, attempts = queue.get(engine, jid)
    assert job.state == "failed" and re.search(r"run 'nightly' is being generated by host \S+ pid %d since" % hand.pid, job.exit_message)
    hand.communicate(timeout=180)
    assert hand.returncode == 0
    assert accepted(engine, "nightly") == (60, 60)
    storage.dispose_all()


def test_two_workers_on_postgres_run_each_job_once(stub_server, core_pg_url, tmp_path):  # noqa: F811
    server = stub_server("--latency", "0.05")
    engine = storage.connect(core_pg_url)
    src = tmp_path / "c.txt"
    src.write_text("Write a poem.\nList three oceans.\n", "utf-8")
    ids = [queue.submit(engine, "dedup", [str(src), "--out", str(tmp_path / f"k{i}.jsonl")]).id for i in range(6)]
    ids.append(queue.submit(engine, "generate", gen_args(server, 10, "pg-job")).id)
    ws = [worker(core_pg_url, "--max-idle", "2") for _ in range(2)]
    for w in ws:
        assert w.wait(180) == 0, w.stderr.read()
    for jid in ids:
        assert states(engine, jid) == ("succeeded", ["succeeded"])
    assert len({queue.get(engine, j)[1][0].worker for j in ids}) == 2  # both took work
    assert accepted(engine, "pg-job") == (10, 10)
    storage.dispose_all()


def test_worker_survives_its_database_connections_being_cut(core_pg_url, tmp_path):  # noqa: F811
    """A database restart or failover drops every connection: the worker carries on with fresh ones
    instead of dying (the pool's pre-ping replaces a dropped connection before it is used, so there
    may be nothing to say)."""
    from sqlalchemy import create_engine, text

    w = worker(core_pg_url)
    wait_for(lambda: "concurrency" in w.stderr.readline())
    admin = create_engine(core_pg_url, isolation_level="AUTOCOMMIT")

    def cut_all() -> int:
        with admin.connect() as conn:
            return conn.execute(text("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                                     "WHERE datname = current_database() AND pid <> pg_backend_pid()")).scalar()

    assert wait_for(cut_all, timeout=30) >= 1  # as soon as the worker holds a connection
    admin.dispose()
    src = tmp_path / "c.txt"
    src.write_text("Write a poem.\n", "utf-8")
    engine = storage.connect(core_pg_url)
    jid = queue.submit(engine, "dedup", [str(src), "--out", str(tmp_path / "k.jsonl")]).id
    wait_for(lambda: queue.get(engine, jid)[0].state == "succeeded", timeout=60)
    assert w.poll() is None  # the same worker ran it
    w.send_signal(signal.SIGTERM)
    assert w.wait(30) == 0
    storage.dispose_all()
