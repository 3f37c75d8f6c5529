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

from conftest import REPO, core_env
from test_postgres import core_pg_url  # noqa: F401  (fixture)

from datagen import storage
from datagen.jobs import queue


def wait_for(cond, timeout: float = 90, step: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = cond()
        if got:
            return got
        time.sleep(step)
    raise AssertionError("condition not met in time")


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
