"""Batch mode against online mode: the same target, the same stub, the same list prices.

Both runs go through `datagen generate` (the CLI, as a user runs it) against one dev stub process
that answers the synchronous routes and the Batch API with the same text generator. Figures come
from each run's ledger: requests, tokens, cost, cost per accepted instruction. Batch lines are
priced at config.BATCH_DISCOUNT of the list price, so the expected cost ratio is about 0.5x; the
wall time of batch mode is rounds x the stub's --batch-delay (OpenAI's is minutes to 24 hours).

    python bench/batch.py                          # target 1000, batch delay 5 s, ~3 minutes on 2 cores
    python bench/batch.py -n 200 --batch-delay 2 --json bench/results/batch_small.json
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
import urllib.request
from pathlib import Path
from common import free_port  # bench/common.py (the scripts run from bench/)

ROOT = Path(__file__).resolve().parents[1]
PRICE_IN, PRICE_OUT = 0.15, 0.60  # gpt-4o-mini's list price per 1M tokens, for both runs



def start_stub(args: list[str]) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(ROOT / "scripts" / "devserver.py"), "--port", str(port), *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(300):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=1)
            return proc, f"http://127.0.0.1:{port}/v1"
        except OSError:
            time.sleep(0.1)
    raise SystemExit("the stub did not start")


def run(mode: str, base_url: str, db: Path, n: int, extra: list[str]) -> dict:
    cmd = [sys.executable, "-m", "datagen.cli", "generate", "--api", "chat", "--model", "stub", "--base-url", base_url,
           "--db", str(db), "--run", mode, "-n", str(n), "--seed", "1", "--price-in", str(PRICE_IN),
           "--price-out", str(PRICE_OUT), "--no-progress", *extra]
    t0 = time.monotonic()
    proc = subprocess.run(cmd, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True)
    wall = time.monotonic() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{mode} run failed: {proc.stderr.strip().splitlines()[-1:]}")
    con = sqlite3.connect(db)
    reqs, tin, tout, cost = con.execute("select count(*), sum(tokens_in), sum(tokens_out), sum(cost) from request").fetchone()
    kept = con.execute("select count(*) from sample where status = 'accepted'").fetchone()[0]
    batches = con.execute("select count(*) from batch").fetchone()[0]
    con.close()
    return dict(mode=mode, accepted=kept, requests=reqs, tokens_in=tin, tokens_out=tout, cost=cost,
                cost_per_accepted=cost / kept, wall_s=round(wall, 1), batches=batches)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=1000, help="accepted instructions to reach")
    ap.add_argument("--batch-delay", type=float, default=5.0, help="the stub's seconds from create to completed")
    ap.add_argument("--latency", type=float, default=0.2, help="the stub's seconds per synchronous request")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    stub, url = start_stub(["--latency", str(a.latency), "--batch-delay", str(a.batch_delay)])
    try:
        with tempfile.TemporaryDirectory() as tmp:
            online = run("online", url, Path(tmp) / "online.db", a.n, ["--concurrency", "32"])
            batch = run("batch", url, Path(tmp) / "batch.db", a.n, ["--mode", "batch", "--poll-interval", "0.5"])
    finally:
        stub.terminate()
    print(f"target {a.n}, stub latency {a.latency} s per request, batch delay {a.batch_delay} s, "
          f"list price ${PRICE_IN}/{PRICE_OUT} per 1M tokens in/out")
    print(f"{'':8} {'accepted':>8} {'requests':>8} {'tokens in':>10} {'tokens out':>10} {'cost $':>9} {'$/accepted':>11} {'wall s':>7} {'batches':>7}")
    for r in (online, batch):
        print(f"{r['mode']:8} {r['accepted']:>8} {r['requests']:>8} {r['tokens_in']:>10,} {r['tokens_out']:>10,} "
              f"{r['cost']:>9.4f} {r['cost_per_accepted']:>11.6f} {r['wall_s']:>7} {r['batches']:>7}")
    ratio = batch["cost_per_accepted"] / online["cost_per_accepted"]
    print(f"batch / online: cost per accepted {ratio:.2f}x, requests {batch['requests'] / online['requests']:.2f}x, "
          f"wall {batch['wall_s'] / online['wall_s']:.2f}x")
    if a.json:
        a.json.write_text(json.dumps(dict(target=a.n, batch_delay=a.batch_delay, latency=a.latency, online=online, batch=batch,
                                          cost_per_accepted_ratio=round(ratio, 3)), indent=2) + "\n")


if __name__ == "__main__":
    main()
