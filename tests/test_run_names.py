"""Which run a command or a schedule's slot means: per-slot run names, a run that has nothing left
to do, and a name that is no run (a typo) when the command reads as a resume."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from conftest import core_cli, core_one_line_error
from test_postgres import core_pg_url  # noqa: F401  (fixture)

from datagen import storage
from datagen.jobs import queue, schedules
from datagen.jobs.scheduler import tick
from datagen.errors import InputError as JobError

UTC = timezone.utc


@pytest.mark.parametrize("db", ["sqlite", "postgres"])
def test_a_nightly_schedule_names_a_new_run_for_every_slot(db, tmp_path, request):
    url = f"sqlite:///{tmp_path / 's.db'}" if db == "sqlite" else request.getfixturevalue("core_pg_url")
    engine = storage.connect(url)
    # The README's nightly example: 02:00 in Shanghai is 18:00 UTC the day before.
    schedules.create(engine, "nightly", cron="0 2 * * *", tz="Asia/Shanghai", now=datetime(2026, 12, 1, 12, tzinfo=UTC),
                     job=["generate", "--api", "chat", "-n", "50", "--run", "nightly-{slot:%Y%m%d}"], overlap="queue")
    for day in (1, 2, 3):
        tick(engine, datetime(2026, 12, day, 18, 0, 5, tzinfo=UTC))
    jobs = sorted(queue.list_jobs(engine), key=lambda j: j.id)
    assert [j.run_name for j in jobs] == ["nightly-20261202", "nightly-20261203", "nightly-20261204"]
    assert all(j.args.count("nightly-2026120") == 1 for j in jobs)
    now = schedules.run_now(engine, "nightly", now=datetime(2026, 12, 4, 1, 30, tzinfo=UTC))  # 09:30 in Shanghai
    assert now.run_name == "nightly-20261204"
    storage.dispose_all()


def test_slot_fields_are_checked_when_the_schedule_is_added(tmp_path):
    engine = storage.connect(f"sqlite:///{tmp_path / 's.db'}")
    sch = schedules.create(engine, "hourly", cron="0 * * * *", tz="UTC", now=datetime(2026, 12, 1, 12, 30, tzinfo=UTC),
                           job=["export", "--out", "/tmp/out-{slot}.json"])
    assert schedules.slot_args(["--out", "/tmp/out-{slot}.json", "{other}"], sch.next_fire_at, "UTC") == \
        ["--out", "/tmp/out-20261201-1300.json", "{other}"]
    with pytest.raises(JobError, match="--num-instructions"):  # the rendered options are checked as the first slot will run them
        schedules.create(engine, "bad", cron="0 * * * *", tz="UTC", job=["generate", "-n", "{slot:%H}x"])
    storage.dispose_all()


def test_nothing_to_do_and_a_typo_are_said_as_such(stub_server, tmp_path):
    server = stub_server("--latency", "0.01")
    db = f"sqlite:///{tmp_path / 'g.db'}"
    base = ["generate", "--api", "chat", "--model", "stub", "--base-url", server.base_url, "--db", db, "--no-progress"]
    first = core_cli(*base, "--run", "grow", "-n", "3")
    assert first.returncode == 0 and first.stdout.splitlines()[0] == "new run 'grow' (no run by that name yet)", first.stdout
    again = core_cli(*base, "--run", "grow", "-n", "3")
    assert again.returncode == 0, again.stderr
    last = again.stdout.strip().splitlines()[-1]  # a job's message is this line
    assert last.startswith("nothing to do: run 'grow' already has 3 accepted of the 3 asked for"), again.stdout
    grown = core_cli(*base, "--run", "grow", "-n", "5")
    assert grown.returncode == 0 and "accepted=5" in grown.stdout and "nothing to do" not in grown.stdout
    # A name and nothing else reads as a resume: a name that is no run is refused, nothing is created.
    line = core_one_line_error(core_cli("generate", "--run", "gorw", "--db", db, "--no-progress"))
    assert line == "error: no run named 'gorw': to start a new run give its options too (e.g. -n 100 --api chat)"
    assert storage.get_run(storage.connect(db), "gorw") is None
    storage.dispose_all()
