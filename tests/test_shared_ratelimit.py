"""One --rpm limit per API key and base URL, shared through the database: two workers running a job
each against one stub must together stay at the limit, not twice it (the stub counts what it serves)."""

from __future__ import annotations

import signal
import threading
import time

import pytest
from test_jobs import gen_args, wait_for, worker
from test_postgres import core_pg_url  # noqa: F401  (fixture)

from datagen import storage
from datagen.jobs import queue
from datagen.ratelimit import limit_key
from datagen.storage import ratelimits
from datagen.storage.models import Request
from sqlalchemy import func, select
from sqlmodel import Session

RPM = 300
WINDOW = 12.0  # 60 requests expected, as many as 120 rpm over 30 s gave


def requests_of(engine, run: str) -> int:
    r = storage.get_run(engine, run)
    if r is None:
        return 0
    with Session(engine) as s:
        return s.execute(select(func.count()).where(Request.run_id == r.id)).scalar_one()


def test_two_workers_share_one_rpm_limit(stub_server, tmp_path):
    server = stub_server("--latency", "0.05")
    db = f"sqlite:///{tmp_path / 'rl.db'}"
    engine = storage.connect(db)
    jobs = [queue.submit(engine, "generate", [*gen_args(server, 5000, f"r{i}"), "--rpm", str(RPM)]).id for i in range(2)]
    ws = [worker(db) for _ in range(2)]
    wait_for(lambda: all(requests_of(engine, f"r{i}") > 0 for i in range(2)), timeout=120)
    time.sleep(2)  # past the first burst
    s0, t0 = server.stats()["served"], time.monotonic()
    time.sleep(WINDOW)
    s1, t1 = server.stats()["served"], time.monotonic()
    per_minute = (s1 - s0) * 60 / (t1 - t0)
    both = [requests_of(engine, f"r{i}") for i in range(2)]
    print(f"\nFIGURE two workers sharing --rpm {RPM}: stub saw {per_minute:.1f} requests/min ({100 * per_minute / RPM:.0f} % of the limit); per run {both}")
    for jid in jobs:
        queue.cancel(engine, jid)
    for w in ws:
        w.send_signal(signal.SIGTERM)
        assert w.wait(60) == 0
    assert per_minute <= RPM * 1.05, per_minute  # one limit, not one per worker
    assert per_minute >= RPM * 0.8, per_minute  # and the two together still use it
    assert min(both) > 0.25 * sum(both)  # shared, not taken by one of them
    storage.dispose_all()


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_bookings_from_many_callers_never_share_a_slot(backend, tmp_path, request):
    """The booking statement itself, on both databases, with the clock held still: 4 threads x 10
    bookings of 0.1 s on an idle key get 40 distinct slots, the first 10 at once (the burst), and
    nobody books past the horizon."""
    db = f"sqlite:///{tmp_path / 'slots.db'}" if backend == "sqlite" else request.getfixturevalue("core_pg_url")
    engine = storage.connect(db)
    key = limit_key("rpm", "http://127.0.0.1:1/v1", "sk-test")
    assert "sk-test" not in key
    now, starts = 1_000_000.0, []

    def caller() -> None:
        for _ in range(10):
            booked, at = ratelimits.reserve(engine, key, 0.1, 0.9, now, 100.0)
            assert booked
            starts.append(at)

    threads = [threading.Thread(target=caller) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(starts) == pytest.approx([now - 0.9 + 0.1 * k for k in range(40)])
    assert sum(at <= now for at in starts) == 10
    # The line now ends 3.1 s ahead: with a 1 s horizon nobody books; come back when it is 1 s ahead.
    assert ratelimits.reserve(engine, key, 0.1, 0.9, now, 1.0) == (False, pytest.approx(now + 2.1))
    storage.dispose_all()
