"""The job stack under faults: racing claimers, a database restart under a running job, a child
killed on its own, requests cut off by kill -9. Real worker processes, real SQLite files and a
real PostgreSQL cluster (stopped and started again with pg_ctl), against the stub server.
"""

from __future__ import annotations

import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import REPO, core_ctrl_c_able, core_env
from conftest import core_wait_for as wait_for
from test_postgres import core_pg_url  # noqa: F401  (fixture)

from datagen import storage
from datagen.jobs import queue


def worker(db: str, *args: str, **env: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "datagen.cli", "worker", "--db", db, "--poll", "0.1", *args], cwd=REPO,
                            env=core_env(**env), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def gen_args(server, n: int, run: str) -> list[str]:
    return ["--api", "chat", "--model", "stub", "--base-url", server.base_url, "-n", str(n), "--run", run, "--concurrency", "4"]


def kept(engine, run: str) -> int:
    r = storage.get_run(engine, run)
    return storage.run_stats(engine, r.id).kept if r else 0


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_racing_claimers_never_run_two_jobs_of_one_schedule(backend, tmp_path, request):
    """Four claimers claim at the same instant, round after round: at most one of them may hold a
    job of the schedule, however the claims interleave (on Postgres they skip each other's rows)."""
    db = f"sqlite:///{tmp_path / 'race.db'}" if backend == "sqlite" else request.getfixturevalue("core_pg_url")
    engine = storage.connect(db)
    sched = [queue.submit(engine, "dedup", [f"s{i}.txt"], schedule_id=7).id for i in range(10)]
    for i in range(6):
        queue.submit(engine, "dedup", [f"o{i}.txt"])
    rounds, barrier, lock = 14, threading.Barrier(4), threading.Lock()
    held: list[list[int]] = [[] for _ in range(rounds)]
    errors: list[BaseException] = []

    def claimer(k: int) -> None:
        try:
            for r in range(rounds):
                barrier.wait(timeout=60)
                got = queue.claim(engine, f"t:{k}", ["default"], ttl=60)
                if got and got[0].schedule_id == 7:
                    with lock:
                        held[r].append(got[0].id)
                barrier.wait(timeout=60)  # everyone has claimed (and holds) before anyone finishes
                if got:
                    queue.finish(engine, *got, attempt_state="succeeded", job_state="succeeded")
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=claimer, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert max(len(h) for h in held) == 1, held  # never two of the schedule's jobs at once
    assert sorted(j for h in held for j in h) == sched  # and every one of them ran
    storage.dispose_all()


class PgCtl:
    """Stop and start the test's Postgres cluster (found from its URL), as a restart or failover would."""

    def __init__(self, url: str):
        import psycopg

        with psycopg.connect(url.replace("postgresql+psycopg", "postgresql")) as con:
            self.data = Path(con.execute("show data_directory").fetchone()[0])
        argv = shlex.split((self.data / "postmaster.opts").read_text().strip())
        self.bindir = Path(argv[0]).parent
        opts = [a for i, a in enumerate(argv[1:], 1) if a != "-D" and argv[i - 1] != "-D"]
        self.opts = shlex.join(opts)

    def pg_ctl(self, *args: str) -> None:
        subprocess.run(["runuser", "-u", "postgres", "--", str(self.bindir / "pg_ctl"), "-D", str(self.data), *args],
                       check=True, capture_output=True, timeout=60)

    def stop(self) -> None:
        self.pg_ctl("-m", "fast", "-w", "stop")

    def start(self) -> None:
        self.pg_ctl("-l", str(self.data.parent / "log"), "-o", self.opts, "-w", "start")


def test_a_postgres_restart_under_a_running_job_is_waited_out_or_retried(stub_server, core_pg_url):  # noqa: F811
    """Postgres stopped for a few seconds under a running generate job: the job waits and carries on
    (one attempt). Stopped for longer than the job waits (DATAGEN_DB_WAIT): the child gives up with
    one line, the worker hands the job back as it would for a dead worker, and the next attempt
    finishes the run. Neither ends `failed`."""
    server = stub_server("--latency", "0.2")
    engine = storage.connect(core_pg_url)
    pg = PgCtl(core_pg_url)

    def outage(seconds_down: float, w: subprocess.Popen) -> None:
        pg.stop()
        t0 = time.monotonic()
        while time.monotonic() - t0 < seconds_down:  # keep it down; the worker must stay alive throughout
            assert w.poll() is None, w.stderr.read()
            time.sleep(0.2)
        pg.start()

    for run, wait, want in (("restart-short", "60", ["succeeded"]), ("restart-long", "1", ["lost", "succeeded"])):
        jid = queue.submit(engine, "generate", gen_args(server, 40, run)).id
        w = worker(core_pg_url, "--max-idle", "3", DATAGEN_DB_WAIT=wait)
        wait_for(lambda: kept(engine, run) >= 3, timeout=120)
        outage(6, w)
        out, err = w.communicate(timeout=240)
        assert w.returncode == 0, err
        job, attempts = queue.get(engine, jid)
        assert (job.state, [a.state for a in attempts]) == ("succeeded", want), (job.exit_message, [a.exit_message for a in attempts], err)
        assert kept(engine, run) == 40 and storage.get_run(engine, run).state == "finished"
        assert "database unavailable" in err  # the worker said so, and carried on
        from sqlmodel import Session, select

        from datagen.storage.models import Request

        with Session(engine) as s:  # requests the outage cut off were marked on resume, none left `sent`
            assert s.execute(select(Request.id).where(Request.state == "sent")).first() is None
        if len(attempts) == 2:
            assert "waited" in attempts[0].exit_message and "again in" in attempts[0].exit_message, attempts[0].exit_message
    storage.dispose_all()


def test_a_child_killed_alone_is_retried_and_its_cut_off_requests_are_counted(stub_server, tmp_path):
    """The OOM killer's way: only the job's child gets SIGKILL. The job is handed back like a lost
    worker's (not failed), the run resumes, the requests the kill cut off are marked `lost` on
    resume, and the job's usage counts them at an estimate instead of leaving them out."""
    from sqlmodel import Session, select

    from datagen.storage.models import Request

    server = stub_server("--latency", "0.5")
    db = f"sqlite:///{tmp_path / 'oom.db'}"
    engine = storage.connect(db)
    jid = queue.submit(engine, "generate", gen_args(server, 30, "oom")).id
    w = worker(db, "--max-idle", "2")
    line = ""
    while "started, pid" not in line:
        line = w.stderr.readline()
    child = int(line.rsplit("pid ", 1)[1])
    wait_for(lambda: kept(engine, "oom") >= 2)
    with Session(engine) as s:  # wait until requests are in flight, then cut them off
        wait_for(lambda: s.execute(select(Request.id).where(Request.state == "sent")).first(), timeout=30, step=0.02)
    subprocess.run(["kill", "-KILL", str(child)], check=True)
    out, err = w.communicate(timeout=240)
    assert w.returncode == 0, err
    job, attempts = queue.get(engine, jid)
    assert (job.state, [a.state for a in attempts]) == ("succeeded", ["lost", "succeeded"]), err
    first = attempts[0]
    assert first.exit_code == -9 and first.exit_message.startswith("killed by SIGKILL (out of memory?); again in"), first.exit_message
    assert "estimate for" in first.exit_message and first.tokens_in > 0
    assert job.tokens_in == sum(a.tokens_in for a in attempts) and kept(engine, "oom") == 30
    with Session(engine) as s:
        states = [r.state for r in s.execute(select(Request)).scalars()]
    assert "sent" not in states and states.count("lost") >= 1  # marked on resume, never left `sent`
    runs = subprocess.run([sys.executable, "-m", "datagen.cli", "runs", "--db", db], cwd=REPO, env=core_env(),
                          capture_output=True, text=True, timeout=60)
    n_lost = states.count("lost")
    assert f"{n_lost} lost)" in runs.stdout and f"unknown ({n_lost} lost)" in runs.stdout, runs.stdout
    storage.dispose_all()


def test_ctrl_c_cancellations_are_not_errors(stub_server, tmp_path):
    server = stub_server("--latency", "0.5")
    db = f"sqlite:///{tmp_path / 'int.db'}"
    proc = subprocess.Popen([sys.executable, "-m", "datagen.cli", "generate", *gen_args(server, 200, "ctrlc"), "--db", db,
                             "--no-progress"], cwd=REPO, env=core_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=core_ctrl_c_able)
    engine = storage.connect(db)
    wait_for(lambda: kept(engine, "ctrlc") >= 1, timeout=120)
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=60)
    assert proc.returncode == 130
    st = storage.run_stats(engine, storage.get_run(engine, "ctrlc").id)
    from sqlmodel import Session, func, select

    from datagen.storage.models import Request

    with Session(engine) as s:
        cancelled = s.execute(select(func.count()).where(Request.state == "cancelled")).scalar()
    assert cancelled >= 1 and st.errors == 0, (cancelled, st)
    runs = subprocess.run([sys.executable, "-m", "datagen.cli", "runs", "--db", db], cwd=REPO, env=core_env(),
                          capture_output=True, text=True, timeout=60)
    assert "(0 err)" in runs.stdout, runs.stdout
    storage.dispose_all()
