"""kill -9 in the middle of a run, several times, then resume by name: nothing lost, nothing doubled."""

from __future__ import annotations

import random
import signal
import sqlite3
import subprocess
import sys
import time

from conftest import REPO, core_cli, core_env

TARGET = 40


def count(db, where: str) -> int:
    con = sqlite3.connect(db, timeout=5)
    try:
        return con.execute(f"select count(*) from sample where {where}").fetchone()[0]
    finally:
        con.close()


def accepted(db) -> dict[int, str]:
    """id -> instruction of accepted samples, read without creating or locking the file."""
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    except sqlite3.OperationalError:
        return {}
    try:
        return dict(con.execute("select id, instruction from sample where status = 'accepted'"))
    except sqlite3.OperationalError:  # tables not created yet
        return {}
    finally:
        con.close()


def test_kill9_and_resume(stub_server, tmp_path):
    server = stub_server("--latency", "0.15")
    db = tmp_path / "resume.db"
    args = [
        sys.executable, "-m", "datagen.cli", "generate", "--api", "chat", "--model", "stub",
        "--base-url", server.base_url, "-n", str(TARGET), "--db", str(db), "--run", "crashy", "--no-progress",
        # Few requests in flight, so acceptances trickle in and each kill lands well short of the
        # target: with the default 16 a resumed run could pass 24 and reach 40 before the kill.
        "--concurrency", "2",
    ]
    rng = random.Random()
    before: dict[int, str] = {}
    kills = 0
    pending_left = 0
    for threshold in (3, 12, 24):
        proc = subprocess.Popen(args, cwd=REPO, env=core_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 120
        while len(accepted(db)) < threshold and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(rng.uniform(0, 0.3))  # land somewhere between two commits, not right after one
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        out, err = proc.communicate(timeout=30)
        assert proc.returncode in (-signal.SIGKILL, 0), err.decode()
        now = accepted(db)
        assert before.items() <= now.items(), "a sample accepted before a kill is no longer accepted"
        before = now
        pending_left += count(db, "status = 'pending'")
    assert kills >= 2, "the run finished before it could be killed; raise --latency"
    assert len(before) < TARGET
    assert pending_left > 0, "no kill landed while a sample was pending, so resuming pending work went untested"

    final = core_cli(*args[3:], timeout=300)
    assert final.returncode == 0, final.stderr
    assert f"accepted={TARGET}" in final.stdout

    con = sqlite3.connect(db)
    after = dict(con.execute("select id, instruction from sample where status = 'accepted'"))
    assert len(after) == TARGET
    assert before.items() <= after.items(), "samples accepted before the kills were lost"
    dupes = con.execute(
        "select lower(instruction), count(*) from sample where status in ('pending', 'accepted', 'approved') "
        "group by 1 having count(*) > 1"
    ).fetchall()
    assert dupes == []
    assert con.execute("select count(*) from sample where status = 'pending'").fetchone() == (0,)
    assert con.execute("select state, target from run where name = 'crashy'").fetchone() == ("finished", TARGET)
    # finish_sample is atomic: every accepted sample has its instances.
    bare = con.execute(
        "select count(*) from sample s where status = 'accepted' and not exists (select 1 from instance i where i.sample_id = s.id)"
    ).fetchone()
    assert bare == (0,)
    con.close()
