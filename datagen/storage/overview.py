"""The run list: each run's counts, tokens, cost and shown state, in plain SQL.

The SQL here runs on any DB-API connection. `datagen runs`, a command typed all day, reads a
current SQLite file through the standard library's sqlite3 and never loads SQLAlchemy (about
0.5 s of its start-up on a 2-core machine); every other caller (the API, a run's budget check)
runs the same SQL through its engine, so there is one rule for what a run counts.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Callable, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from datagen.records import KEPT, Status

Rows = Callable[[str], Sequence[Sequence]]  # SQL in, rows out: a connection's execute-and-fetch

_SAMPLES = "SELECT run_id, status, reason, COUNT(*) FROM sample {where} GROUP BY run_id, status, reason"
_REQUESTS = (
    "SELECT run_id, COUNT(*),"
    # an error counts unless the run cancelled the request itself or a killed process lost it
    " COUNT(CASE WHEN state NOT IN ('cancelled', 'lost') AND error IS NOT NULL THEN 1 END),"
    " COUNT(CASE WHEN state = 'lost' THEN 1 END),"
    " COALESCE(SUM(tokens_in), 0), COALESCE(SUM(tokens_out), 0), COALESCE(SUM(cost), 0.0)"
    " FROM request {where} GROUP BY run_id"
)
# a batch's cost estimate, and the part of it still in flight (results not yet in the ledger)
_BATCHES = (
    "SELECT run_id, COALESCE(SUM(cost_est), 0.0), COALESCE(SUM(CASE WHEN ingested THEN 0.0 ELSE cost_est END), 0.0)"
    " FROM batch {where} GROUP BY run_id"
)
_RUNS = "SELECT id, name, lang, api, model, target, state FROM run ORDER BY id"
_LEASES = "SELECT run_name, host, pid, expires_at FROM run_lease"


@dataclass
class RunStats:
    by_status: Counter = field(default_factory=Counter)
    by_reason: Counter = field(default_factory=Counter)
    requests: int = 0
    errors: int = 0  # answered with an error or given up (a run's own cancellations are not errors)
    lost: int = 0  # cut off by a killed process: no answer, cost unknown
    tokens_in: int = 0
    tokens_out: int = 0
    cost: float = 0.0

    @property
    def kept(self) -> int:
        return sum(self.by_status[st] for st in KEPT)

    @property
    def judged(self) -> int:
        return sum(n for st, n in self.by_status.items() if st != Status.pending.value)

    @property
    def acceptance(self) -> float:
        return self.kept / self.judged if self.judged else 0.0


@dataclass
class RunLine:
    """One row of `datagen runs`."""

    id: int
    name: str
    lang: str
    api: str
    model: str
    target: int
    state: str  # as shown (shown_state)
    stats: RunStats
    # batch mode: (estimated cost of its batches at submit, the part not yet ingested); None online
    batch_est: tuple[float, float] | None = None


def via(conn) -> Rows:
    """Rows through a SQLAlchemy connection, whose error handling (one-line errors, waiting out a
    database restart) then applies."""
    return lambda sql: conn.exec_driver_sql(sql).all()


def _where(run_ids: Sequence[int] | None) -> str:
    # ids are formatted, not bound: the same text then runs under sqlite3's and psycopg's paramstyles
    return "" if run_ids is None else f"WHERE run_id IN ({', '.join(str(int(i)) for i in run_ids) or 'NULL'})"


def stats_by_run(rows: Rows, run_ids: Sequence[int] | None = None) -> dict[int, RunStats]:
    """RunStats for the given runs (all when None); a run with nothing stored yet has empty stats."""
    out: dict[int, RunStats] = {i: RunStats() for i in run_ids or ()}
    where = _where(run_ids)
    for run_id, status, reason, n in rows(_SAMPLES.format(where=where)):
        st = out.setdefault(run_id, RunStats())
        st.by_status[status] += n
        if status == Status.rejected.value:
            st.by_reason[reason or "unknown"] += n
    for run_id, *figures in rows(_REQUESTS.format(where=where)):
        st = out.setdefault(run_id, RunStats())
        st.requests, st.errors, st.lost, st.tokens_in, st.tokens_out, st.cost = figures
    return out


def batch_estimates(rows: Rows, run_ids: Sequence[int] | None = None) -> dict[int, tuple[float, float]]:
    """run id -> (estimated cost of all its batches, estimated cost of those not yet ingested)."""
    return {run_id: (float(total), float(open_)) for run_id, total, open_ in rows(_BATCHES.format(where=_where(run_ids)))}


def shown_state(run, lease, now: datetime | None = None) -> str:
    """The state to show: a `running` run is running while a live process holds its run lease
    (datagen.lease); without one (kill -9, machine gone, a database restart) it is `interrupted`."""
    if run.state != "running":
        return run.state
    if lease is None:
        return "interrupted"
    from datagen.liveness import holder_dead

    expires = lease.expires_at
    if isinstance(expires, str):  # sqlite3 without SQLAlchemy hands back the stored text
        expires = datetime.fromisoformat(expires)
    return "interrupted" if holder_dead(lease.host, lease.pid, expires, now or datetime.now(timezone.utc)) else "running"


@dataclass
class _Lease:
    run_name: str
    host: str
    pid: int
    expires_at: datetime | str


def run_lines(rows: Rows) -> list[RunLine]:
    """Every run, oldest first, with its stats, batch estimates and shown state."""
    leases = {r[0]: _Lease(*r) for r in rows(_LEASES)}
    stats = stats_by_run(rows)
    est = batch_estimates(rows)
    lines = []
    for id_, name, lang, api, model, target, state in rows(_RUNS):
        line = RunLine(id_, name, lang, api, model, target, state, stats.get(id_, RunStats()), est.get(id_))
        line.state = shown_state(line, leases.get(name))
        lines.append(line)
    return lines


def list_run_lines(url: str | None = None) -> list[RunLine]:
    """`datagen runs`: a SQLite file already at the newest schema is read with sqlite3 alone; any
    other database (or a SQLite file that needs migrating, or cannot be read so) goes through the
    engine, which migrates and turns failures into one-line errors."""
    from datagen.storage.migrate import quick_head
    from datagen.storage.url import resolve_url, sqlite_file

    path = sqlite_file(resolve_url(url))
    head = quick_head()
    if path is not None and head is not None:
        try:
            # mode=ro: never create a file for a mistyped --db, never write to one
            with closing(sqlite3.connect(f"{Path(path).resolve().as_uri()}?mode=ro", uri=True, timeout=10)) as conn:
                def rows(sql: str) -> list:
                    return conn.execute(sql).fetchall()

                if rows("SELECT version_num FROM alembic_version") == [(head,)]:
                    return run_lines(rows)
        except sqlite3.Error:
            pass  # missing, locked, old, not a database: the engine's path says what is wrong
    from datagen.storage.db import connect

    engine = connect(url, create=False)
    with engine.connect() as conn:
        return run_lines(via(conn))
