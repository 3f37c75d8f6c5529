"""A short generate / resume / export cycle on a throwaway PostgreSQL cluster of the test's own.

Needs the Debian `postgresql` package (binaries under /usr/lib/postgresql/*/bin) and psycopg.
A missing server fails the test rather than skipping it: Postgres support must not rot silently.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import tempfile
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from conftest import core_cli, core_free_port


def pg_bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if not found:
        pytest.fail("PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin: apt-get install -y postgresql")
    return Path(found[-1]).parent


@contextmanager
def pg_cluster():
    """A throwaway cluster with an empty `datagen` database: its URL, the cluster stopped and removed after."""
    bindir = pg_bin()
    # initdb refuses root, so as root the cluster belongs to `postgres`, in a directory it can reach
    # (pytest's tmp_path sits under a root-only 0700 directory).
    as_root = os.geteuid() == 0
    base = Path(tempfile.mkdtemp(prefix="datagen-pg-"))
    if as_root:
        shutil.chown(base, "postgres", "postgres")
    prefix = ["runuser", "-u", "postgres", "--"] if as_root else []
    data, port = base / "data", core_free_port()

    def pg(*args: str, timeout: float = 120) -> None:
        proc = subprocess.run([*prefix, *args], capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(args[:2])} failed: {proc.stdout[-1500:]}{proc.stderr[-1500:]}")

    pg(str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync", "--locale=C")
    # A server clock zone other than UTC, as many servers have: stored times must still be UTC.
    opts = f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c timezone=Asia/Shanghai"
    pg(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(base / "log"), "-o", opts, "-w", "-t", "60", "start")
    try:
        pg(str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "datagen")
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/datagen"
    finally:
        subprocess.run([*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"], capture_output=True, timeout=60)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def core_pg_url():
    with pg_cluster() as url:
        yield url


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
