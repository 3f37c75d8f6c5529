"""A short generate / resume / export cycle on PostgreSQL: one throwaway cluster per session (conftest.py), a database per test.

Needs the Debian `postgresql` package (binaries under /usr/lib/postgresql/*/bin) and psycopg.
A missing server fails the test rather than skipping it: Postgres support must not rot silently.
"""

from __future__ import annotations

import itertools
import json
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone

import pytest

from conftest import core_cli


_databases = itertools.count(1)


@contextmanager
def pg_cluster():
    """A cluster of its own with an empty `datagen` database (for tests that stop or break the server):
    its URL, the cluster stopped and removed after."""
    import psycopg

    from conftest import pg_cluster as bare_cluster

    with bare_cluster() as base:
        with psycopg.connect(base.replace("postgresql+psycopg", "postgresql") + "/postgres", autocommit=True) as conn:
            conn.execute("CREATE DATABASE datagen")
        yield f"{base}/datagen"


@pytest.fixture
def core_pg_url(core_pg_cluster):
    """A fresh, empty database of the test's own in the session's cluster, dropped afterwards."""
    import psycopg

    name = f"datagen_{next(_databases)}"
    admin = core_pg_cluster.replace("postgresql+psycopg", "postgresql") + "/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    try:
        yield f"{core_pg_cluster}/{name}"
    finally:
        from datagen import storage

        storage.dispose_all()  # this process's pooled connections to it
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def test_generate_resume_export_on_postgres(core_pg_url, stub_server, tmp_path):
    server = stub_server("--latency", "0.02")
    gen = ["generate", "--api", "chat", "--model", "stub", "--base-url", server.base_url, "--db", core_pg_url,
           "--run", "pg", "--no-progress", "--lang", "en"]
    first = core_cli(*gen, "-n", "8")
    assert first.returncode == 0, first.stderr
    assert "accepted=8" in first.stdout
    # Same run, higher target: the resume path (pending, index rebuild, kept-unique index) on Postgres.
    second = core_cli(*gen, "-n", "12")
    assert second.returncode == 0, second.stderr
    assert "accepted=12" in second.stdout

    runs = core_cli("runs", "--db", core_pg_url)
    assert runs.returncode == 0, runs.stderr
    assert "12/12" in runs.stdout and "finished" in runs.stdout

    out = tmp_path / "pg.jsonl"
    exp = core_cli("export", "--db", core_pg_url, "--run", "pg", "--format", "jsonl", "--out", str(out))
    assert exp.returncode == 0, exp.stderr
    rows = [json.loads(line) for line in out.read_text("utf-8").splitlines()]
    assert exp.stdout.strip() == f"wrote {len(rows)} records to {out}"
    assert len({r["instruction"] for r in rows}) == 12
    assert all(set(r) == {"instruction", "input", "output"} and r["output"] for r in rows)

    import psycopg

    with psycopg.connect(core_pg_url.replace("postgresql+psycopg", "postgresql")) as con:
        (pending,) = con.execute("select count(*) from sample where status = 'pending'").fetchone()
        (dupes,) = con.execute(
            "select count(*) from (select instruction_hash from sample where status in ('pending','accepted','approved') "
            "group by run_id, instruction_hash having count(*) > 1) d"
        ).fetchone()
        (n_inst,) = con.execute(
            "select count(*) from instance i join sample s on s.id = i.sample_id where s.status = 'accepted'"
        ).fetchone()
        (partial,) = con.execute("select indexdef from pg_indexes where indexname = 'ux_sample_kept'").fetchone()
    assert pending == 0 and dupes == 0
    assert n_inst == len(rows)
    assert "UNIQUE" in partial and "WHERE" in partial

    from datagen import storage

    run = storage.get_run(storage.connect(core_pg_url), "pg")
    storage.dispose_all()
    created = run.created_at if run.created_at.tzinfo else run.created_at.replace(tzinfo=timezone.utc)
    assert abs(datetime.now(timezone.utc) - created) < timedelta(minutes=10), run.created_at


def test_review_search_covers_instances_on_postgres(core_pg_url):
    """ILIKE over instructions, inputs and outputs; NUL in a filter is refused before Postgres sees it."""
    from fastapi.testclient import TestClient

    from api.config import Settings
    from api.main import create_app
    from conftest import AUTH, TOKEN, build_db
    from datagen import storage

    url = build_db(core_pg_url)
    with TestClient(create_app(Settings(db_url=url, token=TOKEN, allowed_hosts=("testserver",)))) as c:
        assert c.patch("/api/samples/4", headers=AUTH, json={"instances": [{"input": "the quokka", "output": "A Zebra crossing."}]}).status_code == 200
        ids = lambda q: [s["id"] for s in c.get("/api/samples", params={"q": q}).json()["items"]]  # noqa: E731
        assert ids("zebra") == [4] and ids("QUOKKA summarize") == [4] and ids("zz-none") == []
        assert c.get("/api/samples?q=ab%00cd").status_code == 422
        assert c.get("/api/samples/count?run=demo-en").json()["count"] == 12
    storage.dispose_all()


FROZEN = """
import os, signal, sys
from sqlalchemy import text
from datagen import storage
conn = storage.connect(sys.argv[1]).connect()
conn.execute(text("UPDATE run_lease SET heartbeat_at = heartbeat_at WHERE run_name = 'r'"))  # its row lock, not committed
print("locked", flush=True)
os.kill(os.getpid(), signal.SIGSTOP)  # frozen inside the transaction, as a suspended machine would be
"""


def test_a_process_frozen_inside_a_transaction_does_not_block_the_lease_taker(core_pg_url):  # noqa: F811
    """A holder frozen between an UPDATE and its COMMIT keeps the row locked; the server ends its idle
    transaction after IDLE_TX_TIMEOUT (2 x its lease TTL), so whoever takes the lapsed lease over
    proceeds instead of waiting forever (what stalled a worker in test_jobs' frozen-worker test)."""
    import os
    import signal
    import subprocess
    import sys
    import threading
    import time

    from conftest import REPO, core_env, core_wait_for
    from datagen import storage
    from datagen.lease import RunLeaseHolder
    from datagen.storage import leases
    from datagen.storage.models import RunLease, utcnow

    engine = storage.connect(core_pg_url)
    past = utcnow() - timedelta(seconds=5)  # lapsed: free for the taking
    assert leases.insert_lease(engine, RunLease(run_name="r", holder="frozen", host="elsewhere", pid=1, since=past,
                                                heartbeat_at=past, expires_at=past))
    child = subprocess.Popen([sys.executable, "-c", FROZEN, core_pg_url], cwd=REPO, env=core_env(DATAGEN_LEASE_TTL="1"),
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "locked"
        core_wait_for(lambda: open(f"/proc/{child.pid}/stat").read().split(") ")[1][0] == "T", timeout=30)
        taker, done = RunLeaseHolder(engine, "r", ttl=30), []
        t0 = time.monotonic()
        threading.Thread(target=lambda: done.append(taker.acquire(wait=60)), daemon=True).start()
        core_wait_for(lambda: done, timeout=30)
        print(f"\nFIGURE lease taken over past a frozen transaction in {time.monotonic() - t0:.1f} s (its idle limit 2 s)")
        assert leases.get_lease(engine, "r").holder == taker.token
    finally:
        child.kill()
        os.kill(child.pid, signal.SIGCONT) if child.poll() is None else None
        child.wait(timeout=30)
        storage.dispose_all()
