"""Schema migrations: a database from the first revision, or from before migrations existed, is
upgraded to head by `datagen db upgrade` with every run, request, sample, instance and audit row
kept, on SQLite files and on a real PostgreSQL; models and migrations never drift apart.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys

from datetime import datetime, timezone

from sqlalchemy import MetaData, create_engine, text
from sqlmodel import SQLModel

from conftest import REPO, core_cli, core_env, core_one_line_error
from test_postgres import core_pg_url  # noqa: F401  (fixture)

from datagen import storage
from datagen.records import Candidate
from datagen.storage import migrate

TODAY = ["run", "request", "sample", "instance", "audit"]  # the tables of the last release before migrations


def _first_revision():
    path = REPO / "datagen/storage/migrations/versions/0001_initial.py"
    spec = importlib.util.spec_from_file_location("rev0001", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def build_pre_alembic(url: str) -> None:
    """That release's schema (revision 0001 is it, statement for statement) without a version table."""
    engine = storage.db.open_engine(url)
    migrate.upgrade(engine, "0001")
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE alembic_version"))
    fill(engine)
    engine.dispose()


def build_first_revision(url: str) -> None:
    engine = storage.db.open_engine(url)
    migrate.upgrade(engine, "0001")
    assert migrate.current(engine) == "0001"
    fill(engine)
    engine.dispose()


def _tables(engine) -> dict:
    md = MetaData()
    md.reflect(engine, only=TODAY)
    return md.tables


def fill(engine) -> None:
    """Rows as the old release wrote them, through the tables the database has (not today's models)."""
    t, now = _tables(engine), datetime.now(timezone.utc)
    with engine.begin() as c:
        run = c.execute(t["run"].insert().values(name="old", lang="en", api="chat", model="m", target=3, config='{"a": 1}',
                                                 state="running", created_at=now, updated_at=now)).inserted_primary_key[0]
        req = c.execute(t["request"].insert().values(
            run_id=run, stage="bootstrap", model="m", prompt_hash="h", prompt="prompt", response="1. Write a poem about rain.",
            tokens_in=10, tokens_out=7, cost=0.001, latency_ms=5, attempt=1, created_at=now)).inserted_primary_key[0]
        for i, (text_, st) in enumerate([("Write a poem about rain.", "accepted"), ("Draw a cat.", "rejected"), ("List three oceans.", "pending")]):
            sid = c.execute(t["sample"].insert().values(
                run_id=run, lang="en", instruction=text_, instruction_hash=f"h{i}", status=st, reason="blacklist" if st == "rejected" else None,
                indexed=st != "rejected", request_id=req, created_at=now, updated_at=now)).inserted_primary_key[0]
            c.execute(t["instance"].insert().values(sample_id=sid, idx=0, input=f"in {i}", output=f"out {i}"))
            c.execute(t["audit"].insert().values(sample_id=sid, action="edit", actor="alice", before="{}", after='{"x": 1}', at=now))


def snapshot(engine) -> dict:
    """Every row of the old tables, by the old columns (later revisions may add columns)."""
    t = _tables(engine)
    with engine.connect() as c:
        return {name: sorted(tuple(sorted(r._mapping.items())) for r in c.execute(t[name].select())) for name in TODAY}


def _old_columns(after: dict, before: dict) -> dict:
    keep = {name: {k for row in rows for k, _ in row} for name, rows in before.items()}
    return {name: sorted(tuple((k, v) for k, v in row if k in keep[name]) for row in rows) for name, rows in after.items()}


def check_upgrade(url: str, build, explicit: bool) -> None:
    """Upgrade with `datagen db upgrade`, or (explicit=False) by just running an everyday command on it."""
    build(url)
    engine = storage.db.open_engine(url)
    before = snapshot(engine)
    assert migrate.current(engine) in (None, "0001")
    up = core_cli("db", "upgrade", "--db", url) if explicit else core_cli("runs", "--db", url)
    assert up.returncode == 0, up.stderr
    assert f"database at {migrate.head()}" in up.stdout if explicit else "old" in up.stdout
    assert migrate.current(engine) == migrate.head()
    after = snapshot(engine)
    assert _old_columns(after, before) == before
    assert {v for row in after["request"] for k, v in row if k == "state"} == {"done"}  # revision 0007's default
    assert sum(len(v) for v in before.values()) == 1 + 1 + 3 + 3 + 3
    cur = core_cli("db", "current", "--db", url)
    assert cur.stdout.strip() == f"current={migrate.head()} head={migrate.head()}", cur.stdout
    # The upgraded database works for the code of today: a resumed run adds to the same tables.
    fill_more = storage.open_run(engine, "new", lang="en", api="chat", model="m", target=1, config={})[0]
    assert storage.add_sample(engine, fill_more.id, Candidate(instruction="Name two rivers.", lang="en")) is not None
    if engine.dialect.name == "sqlite":
        with engine.connect() as conn:
            hits = conn.execute(text("SELECT count(*) FROM sample_fts WHERE sample_fts MATCH '\"rain\"'")).scalar()
        assert hits == 1
    engine.dispose()


def test_sqlite_first_revision_upgrades_keeping_rows(tmp_path):
    check_upgrade(f"sqlite:///{tmp_path / 'rev1.db'}", build_first_revision, explicit=True)


def test_sqlite_pre_alembic_database_is_stamped_not_recreated(tmp_path):
    check_upgrade(f"sqlite:///{tmp_path / 'legacy.db'}", build_pre_alembic, explicit=False)


def test_postgres_upgrades_keeping_rows(core_pg_url):  # noqa: F811
    check_upgrade(core_pg_url, build_first_revision, explicit=True)
    admin = create_engine(core_pg_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text("CREATE DATABASE legacy"))
    admin.dispose()
    check_upgrade(core_pg_url.rsplit("/", 1)[0] + "/legacy", build_pre_alembic, explicit=False)
    assert_models_match_migrations(core_pg_url)  # types too: timestamptz, booleans, text


def assert_models_match_migrations(url: str) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    engine = storage.connect(url)
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"include_object": lambda o, name, *a: not str(name).startswith("sample_fts")})
        assert compare_metadata(ctx, SQLModel.metadata) == []
    storage.dispose_all()


def test_models_and_migrations_agree(tmp_path):
    assert_models_match_migrations(f"sqlite:///{tmp_path / 'fresh.db'}")


def test_concurrent_first_opens_upgrade_once(tmp_path):
    url = f"sqlite:///{tmp_path / 'race.db'}"
    procs = [subprocess.Popen([sys.executable, "-m", "datagen.cli", "db", "upgrade", "--db", url], cwd=REPO, env=core_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(3)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], outs
    assert sum("was empty" in o for o, _ in outs) == 1, outs  # exactly one of them did the work
    engine = storage.db.open_engine(url)
    assert migrate.current(engine) == migrate.head()
    engine.dispose()


def test_database_newer_than_the_code_is_refused_in_one_line(tmp_path):
    url = f"sqlite:///{tmp_path / 'future.db'}"
    storage.connect(url)
    storage.dispose_all()
    engine = storage.db.open_engine(url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = 'ffff9999'"))
    engine.dispose()
    line = core_one_line_error(core_cli("runs", "--db", url))
    assert "ffff9999" in line and "upgrade datagen" in line
    # `db upgrade` (compose's migrate service) printed a 102-line traceback; `db current` said to run it.
    for cmd in (["db", "upgrade"], ["db", "current"]):
        line = core_one_line_error(core_cli(*cmd, "--db", url))
        assert line == f"error: database is at revision ffff9999, newer than this datagen (head {migrate.head()}): upgrade datagen", (cmd, line)


def test_thequick_head_is_alembics_head(tmp_path):
    """A current database is recognised without importing alembic: by the scripts' own revision lines."""
    assert migrate.quick_head() == migrate.head()
    engine = storage.connect(f"sqlite:///{tmp_path / 'q.db'}")
    assert migrate._stored_revision(engine) == migrate.head()
    code = ("import sys; from datagen import storage; storage.connect(sys.argv[1]); print('alembic' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code, f"sqlite:///{tmp_path / 'q.db'}"], cwd=REPO, env=core_env(),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "False", r.stderr
