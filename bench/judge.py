"""Judge throughput under a rate limit: requests per minute as a share of --rpm (goal >= 95 %).

`datagen score --scorer judge` (the CLI, as a user runs it) scores a run of N kept samples against the
dev stub in its judge mode (a score line per rubric prompt, after --latency seconds). The rate is read
from the ledger's request times over the middle 80 % of requests, so start-up, the limiter's first
second of burst and the last answers' latency are outside it:

    requests/min = (k - j) / (time of request k - time of request j) x 60,  j = n/10, k = 9n/10

and the end-to-end figure (samples scored per minute of the whole command) is printed beside it.

    python bench/judge.py                                   # 600 samples at --rpm 1200, ~40 s
    python bench/judge.py --rpm 3000 --samples 1500 --json bench/results/judge_rpm.json
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.batch import start_stub  # noqa: E402


def make_run(url: str, n: int) -> None:
    from datagen import storage
    from datagen.records import Candidate, Instance, Status

    engine = storage.connect(url)
    run, _ = storage.open_run(engine, "bench", lang="en", api="chat", model="m", target=n, config={})
    for i in range(n):
        storage.add_sample(engine, run.id, Candidate(
            instruction=f"Give three practical tips, number {i}, for keeping a small vegetable garden healthy in summer.",
            lang="en", status=Status.accepted,
            instances=[Instance(output=f"1. Water early in the morning. 2. Mulch the beds. 3. Check leaves for pests ({i}).")]))
    storage.dispose_all()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rpm", type=float, default=1200)
    ap.add_argument("--samples", type=int, default=600)
    ap.add_argument("--latency", type=float, default=0.3, help="the stub's seconds per request")
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    stub, url = start_stub(["--judge-answers", "--latency", str(a.latency)])
    try:
        with tempfile.TemporaryDirectory() as tmp:
            db = Path(tmp) / "judge.db"
            make_run(f"sqlite:///{db}", a.samples)
            cmd = [sys.executable, "-m", "datagen.cli", "score", "--run", "bench", "--scorer", "judge", "--api", "chat",
                   "--model", "stub", "--base-url", url, "--db", str(db), "--rpm", str(a.rpm), "--concurrency", str(a.concurrency)]
            t0 = time.monotonic()
            proc = subprocess.run(cmd, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True)
            wall = time.monotonic() - t0
            if proc.returncode != 0:
                raise SystemExit(f"score failed: {proc.stderr.strip()[-500:]}")
            con = sqlite3.connect(db)
            times = [datetime.fromisoformat(t) for (t,) in con.execute("select created_at from request order by id")]
            scored = con.execute("select count(*) from score where value is not null").fetchone()[0]
            errors = con.execute("select count(*) from request where error is not null").fetchone()[0]
            con.close()
    finally:
        stub.terminate()
    j, k = len(times) // 10, len(times) * 9 // 10
    span = (times[k] - times[j]).total_seconds()
    per_min = (k - j) / span * 60
    share = per_min / a.rpm
    e2e = scored / wall * 60
    print(f"{len(times)} requests ({errors} errors), {scored} samples scored; --rpm {a.rpm:g}, concurrency {a.concurrency}, "
          f"stub latency {a.latency} s")
    print(f"steady rate {per_min:.0f} requests/min = {100 * share:.1f} % of --rpm over {span:.1f} s (requests {j} to {k}); "
          f"end to end {e2e:.0f} samples/min ({wall:.1f} s with start-up)")
    if a.json:
        a.json.write_text(json.dumps(dict(rpm=a.rpm, samples=a.samples, latency=a.latency, concurrency=a.concurrency,
                                          requests=len(times), errors=errors, scored=scored, span_s=round(span, 2),
                                          requests_per_min=round(per_min, 1), share_of_rpm=round(share, 4),
                                          end_to_end_per_min=round(e2e, 1), wall_s=round(wall, 1)), indent=2) + "\n")


if __name__ == "__main__":
    main()
