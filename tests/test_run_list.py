"""The run list (`datagen runs`, GET /api/runs): one SQL for what a run counts, read through sqlite3
alone on a current SQLite file (a fast start) and through the engine everywhere else."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from sqlmodel import Session

from conftest import EN, REPO, ZH, build_db, core_cli, core_env
from datagen import storage
from datagen.liveness import HOST
from datagen.storage import overview
from datagen.storage.models import Batch, Request, RunLease, utcnow
from test_postgres import core_pg_url  # noqa: F401


def _populate(url: str) -> None:
    """build_db's two runs, plus a ledger with an error, a cancellation and a lost request, two batches
    (one ingested), a third run held by this live process and a fourth whose holder is dead."""
    build_db(url)
    engine = storage.connect(url)
    en = storage.get_run(engine, "demo-en").id
    live, _ = storage.open_run(engine, "live", lang="en", api="chat", model="m", target=5, config={})
    dead, _ = storage.open_run(engine, "dead", lang="en", api="chat", model="m", target=5, config={})
    later = utcnow() + timedelta(minutes=5)
    with Session(engine) as s:
        for state, error, tin, tout, cost in (("done", "boom", 3, 0, 0.0), ("cancelled", "stopped", 1, 0, 0.0),
                                                ("lost", None, 0, 0, 0.0), ("done", None, 10, 20, 0.5)):
            s.add(Request(run_id=en, stage="instances", model="m", prompt_hash="h", prompt="p", state=state,
                          error=error, tokens_in=tin, tokens_out=tout, cost=cost))
        s.add(Batch(run_id=en, key="k1", endpoint="/v1/chat/completions", model="m", stage="instances", cost_est=0.25, ingested=True))
        s.add(Batch(run_id=en, key="k2", endpoint="/v1/chat/completions", model="m", stage="instances", cost_est=0.75))
        s.add(RunLease(run_name="live", holder="t1", host=HOST, pid=os.getpid(), since=utcnow(), heartbeat_at=utcnow(), expires_at=later))
        s.add(RunLease(run_name="dead", holder="t2", host=HOST, pid=2**22 + 7, since=utcnow(), heartbeat_at=utcnow(), expires_at=later))
        s.commit()
    assert {live.id, dead.id}


def _check(lines: list[overview.RunLine]) -> None:
    by = {line.name: line for line in lines}
    assert [line.name for line in lines] == ["demo-en", "demo-zh", "live", "dead"]
    en, zh = by["demo-en"].stats, by["demo-zh"].stats
    assert dict(en.by_status) == {st: sum(1 for r in EN if r[1] == st) for st in {r[1] for r in EN}}
    assert dict(zh.by_reason) == {"similar": 1}
    assert en.kept == sum(1 for r in EN if r[1] in ("accepted", "approved"))
    # build_db's one request, then ours: the error counts, the run's own cancellation does not
    assert (en.requests, en.errors, en.lost) == (5, 1, 1)
    assert (en.tokens_in, en.tokens_out, en.cost) == (14, 20, pytest.approx(0.5))
    assert by["demo-en"].batch_est == pytest.approx((1.0, 0.75))
    assert by["demo-zh"].batch_est is None and zh.requests == 0
    assert (by["live"].state, by["dead"].state) == ("running", "interrupted")
    assert by["demo-en"].state == "interrupted"  # `running` in the table, and nobody holds it


def _engine_lines(url: str) -> list[overview.RunLine]:
    with storage.connect(url).connect() as conn:
        return overview.run_lines(overview.via(conn))


def test_sqlite_through_sqlite3_alone_matches_the_engine(tmp_path):
    db = tmp_path / "odd #?% name.db"  # the read-only URI escapes what a file name may hold
    _populate(f"sqlite:///{db}")
    fast = overview.list_run_lines(str(db))
    assert fast == _engine_lines(f"sqlite:///{db}")
    _check(fast)
    # the API's list agrees with the CLI's
    listed = {run.name: (run.state, st) for run, st in storage.list_runs(storage.connect(f"sqlite:///{db}"))}
    assert listed == {line.name: (line.state, line.stats) for line in fast}


def test_postgres_lists_the_same(core_pg_url):  # noqa: F811
    _populate(core_pg_url)
    lines = overview.list_run_lines(core_pg_url)
    _check(lines)
    assert storage.run_stats(storage.connect(core_pg_url), lines[0].id) == lines[0].stats
    assert storage.batch_costs(storage.connect(core_pg_url), [lines[0].id, lines[1].id]) == {lines[0].id: pytest.approx((1.0, 0.75))}


def test_datagen_runs_reads_a_current_sqlite_file_without_sqlalchemy(tmp_path):
    db = tmp_path / "d.db"
    _populate(f"sqlite:///{db}")
    code = ("import sys; from api.cli import main\nsys.argv[1:] = ['runs', '--db', sys.argv[1]]\n"
            "try:\n    main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
            "print('LOADED', [m for m in ('sqlalchemy', 'sqlmodel', 'alembic') if m in sys.modules])")
    r = subprocess.run([sys.executable, "-c", code, str(db)], cwd=REPO, env=core_env(), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "LOADED []" in r.stdout
    assert "demo-en" in r.stdout and "interrupted" in r.stdout and "1.0000 (0.7500 open)" in r.stdout


def test_a_missing_or_foreign_file_is_the_engine_paths_one_line_error(tmp_path):
    missing = core_cli("runs", "--db", str(tmp_path / "nope.db"))
    assert missing.returncode == 1 and "no database at" in missing.stderr
    assert not (tmp_path / "nope.db").exists()
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not a database at all" * 100)
    bad = core_cli("runs", "--db", str(junk))
    assert bad.returncode == 1 and len(bad.stderr.strip().splitlines()) == 1
    assert Path(junk).read_bytes() == b"not a database at all" * 100
