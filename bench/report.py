"""Benchmark `datagen report` on large synthetic runs: the time to compute the figures and write
the HTML and the JSON, by phase.

    python bench/report.py                          # 10,000 and 100,000 kept samples
    python bench/report.py --sizes 10000 --embed-dim 384

Each run is built once under /tmp (datagen-report-bench-N.db, reused when present): instructions are
two halves of two lines of the machine-written corpus in ../shared/corpus, perturbed, and kept only
when the generation filter would keep them (exact ROUGE-L <= 0.7 against every instruction kept
before, the similarity index), so the kept set looks like a real run's: no pair above 0.7, many
between 0.5 and 0.7. Outputs are three corpus lines; 40 % of the samples have an input. Rows are
written with direct executemany inserts (as bench/api.py does), outside the timed part.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _bench_api():
    spec = importlib.util.spec_from_file_location("bench_api", ROOT / "bench" / "api.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def build(db: Path, n: int, embed_dim: int, seed: int = 7) -> None:
    from datagen import storage
    from datagen.similarity import SimilarityIndex
    from datagen.storage.runs import instruction_hash

    b = _bench_api()
    for suffix in ("", "-wal", "-shm"):
        Path(str(db) + suffix).unlink(missing_ok=True)
    engine = storage.connect(f"sqlite:///{db}")
    run, _ = storage.open_run(engine, "bench", lang="en", api="chat", model="bench", target=n, config={})
    storage.dispose_all()
    rng = random.Random(seed)
    pool = b.english_pool()
    idx = SimilarityIndex("en", 0.7)
    t0 = time.time()
    kept: list[str] = []
    tried = 0
    while len(kept) < n:
        a, c = rng.choice(pool).split(), rng.choice(pool).split()
        text = b.perturb_en(rng, " ".join(a[: max(2, len(a) // 2)] + c[len(c) // 2 :]))
        tried += 1
        if idx.offer(text).keep:
            kept.append(text)
    print(f"  {n:,} kept of {tried:,} candidates in {time.time() - t0:.0f}s", file=sys.stderr)
    con = sqlite3.connect(db)
    con.execute("PRAGMA synchronous=OFF")
    rows, inst, emb = [], [], []
    when = "2026-01-01 00:00:00"
    for i, text in enumerate(kept, 1):
        rows.append((i, run.id, "en", text, instruction_hash(text), rng.random() < 0.3, "accepted", None, True, when, when))
        out = " ".join(rng.choice(pool) for _ in range(3))
        inst.append((i, 0, rng.choice(pool) if rng.random() < 0.4 else "", out))
    con.executemany("INSERT INTO sample (id, run_id, lang, instruction, instruction_hash, is_classification, status, reason, indexed, "
                    "created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?)", rows)
    con.executemany("INSERT INTO instance (sample_id, idx, input, output) VALUES (?,?,?,?)", inst)
    reqs = [(run.id, "bootstrap", "bench", "h", "p", "r", 900, 300, 0.0006, "done", 1, when, 800, 1) for _ in range(n // 3)]
    con.executemany("INSERT INTO request (run_id, stage, model, prompt_hash, prompt, response, tokens_in, tokens_out, cost, state, "
                    "attempt, created_at, latency_ms, prompts) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)", reqs)
    if embed_dim:
        import numpy as np

        con.execute("CREATE TABLE IF NOT EXISTS embedding (id INTEGER PRIMARY KEY, sample_id INTEGER, model TEXT, dim INTEGER, vector BLOB)")
        gen = np.random.default_rng(seed)
        for start in range(0, n, 10_000):
            vec = gen.normal(size=(min(10_000, n - start), embed_dim)).astype("<f4")
            emb = [(start + k + 1, "bench", embed_dim, v.tobytes()) for k, v in enumerate(vec)]
            con.executemany("INSERT INTO embedding (sample_id, model, dim, vector) VALUES (?,?,?,?)", emb)
    con.commit()
    con.close()


def measure(db: Path) -> dict:
    from datagen import storage
    from datagen.report import figures, render
    from datagen.export import atomic_write

    engine = storage.connect(f"sqlite:///{db}")
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    report = {"schema": figures.SCHEMA, "run": figures.run_figures(engine, "bench", timings)}
    t1 = time.perf_counter()
    with tempfile.TemporaryDirectory() as d:
        atomic_write(Path(d) / "r.json", lambda f: f.write(figures.to_json(report)))
        page = render.to_html(report)
        atomic_write(Path(d) / "r.html", lambda f: f.write(page))
        size = (Path(d) / "r.html").stat().st_size
    t2 = time.perf_counter()
    storage.dispose_all()
    timings["render and write"] = t2 - t1
    sim = report["run"]["similarity"]["to_kept"]
    return {"total_s": round(t2 - t0, 1), "phases_s": {k: round(v, 1) for k, v in timings.items()}, "html_bytes": size,
            "above_floor_share": sim["above_floor_share"], "near_duplicate_share": sim["near_duplicate_share"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10000,100000")
    ap.add_argument("--embed-dim", type=int, default=0, help="also store random embeddings of this size (0: none)")
    ap.add_argument("--rebuild", action="store_true")
    args = ap.parse_args()
    print(f"cores: {os.cpu_count()}, load: {os.getloadavg()[0]:.1f}", file=sys.stderr)
    for n in (int(x) for x in args.sizes.split(",")):
        db = Path(tempfile.gettempdir()) / f"datagen-report-bench-{n}{'-e' + str(args.embed_dim) if args.embed_dim else ''}.db"
        if args.rebuild or not db.exists():
            build(db, n, args.embed_dim)
        load = os.getloadavg()[0]
        print(json.dumps({"samples": n, "embed_dim": args.embed_dim, "load_before": round(load, 1), **measure(db)}))


if __name__ == "__main__":
    main()
