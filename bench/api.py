"""Benchmark the review API on a large database: filtered lists, search, counts.

    python bench/api.py                      # build /tmp/datagen-api-bench.db (1,000,000 samples) once, then measure
    python bench/api.py --rows 200000 --db /tmp/small.db --repeat 30
    python bench/api.py --rebuild            # regenerate the database

The database is written with direct executemany inserts (FTS5 triggers dropped during the
load, the index rebuilt once after), from the English corpus in ../shared/corpus with
word-level perturbations and Chinese instructions assembled from the BELLE seed
instructions (read at run time) and phrase templates. Queries go over HTTP to a real
uvicorn on 127.0.0.1, so the figures include FastAPI, JSON and the socket.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sqlite3
import statistics
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from common import free_port  # bench/common.py (the scripts run from bench/)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CORPUS_CANDIDATES = [ROOT.parent / "shared" / "corpus" / "smollm2_instructions_en.txt", Path("/work/shared/corpus/smollm2_instructions_en.txt")]
ZH_SEEDS_CANDIDATES = [ROOT.parent / "shared" / "reference" / "zh_seed_tasks.json", Path("/work/shared/reference/zh_seed_tasks.json")]
TOKEN = "bench-token-0123456789abcdef"

EN_ADJ = "short detailed simple clear brief formal friendly creative funny persuasive technical concise".split()
EN_SWAP = {"write": "compose", "give": "provide", "explain": "describe", "list": "name", "create": "generate", "make": "produce"}
ZH_VERBS = ["写", "写一篇", "生成", "列出", "解释", "总结", "翻译", "描述", "分析", "比较", "给出", "设计", "推荐", "改写", "判断"]
ZH_OBJ = ["文章", "故事", "诗歌", "报告", "清单", "建议", "计划", "邮件", "对话", "标题", "摘要", "广告语", "食谱", "问题", "答案"]
ZH_TOPIC = ["关于环境保护的", "关于人工智能的", "关于健康饮食的", "关于旅行的", "关于教育的", "关于秋天的", "关于友谊的",
            "关于城市交通的", "关于历史人物的", "关于科学实验的", "关于音乐的", "关于运动的", "关于理财的", "关于工作效率的"]
ZH_TAIL = ["。", "，不超过100字。", "，语言要简洁。", "，并给出理由。", "，适合小学生阅读。", "，用三个要点说明。", ""]
REASONS = ["similar"] * 12 + ["too_long", "too_short", "blacklist", "leading_punctuation", "repetition", "empty_output", "write_a_program", "not_chinese"]


def _first(paths):
    return next((p for p in paths if p.exists()), None)


def english_pool() -> list[str]:
    p = _first(CORPUS_CANDIDATES)
    if p is None:
        sys.exit("corpus not found: ../shared/corpus/smollm2_instructions_en.txt")
    return [line.strip() for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]


def chinese_pool() -> list[str]:
    out = []
    p = _first(ZH_SEEDS_CANDIDATES)
    if p is not None:
        for line in p.read_text(encoding="utf-8").splitlines():
            if line.strip():
                out.append(json.loads(line)["instruction"])
    return out


def perturb_en(rng: random.Random, text: str) -> str:
    words = text.split()
    r = rng.random()
    if r < 0.25 and len(words) > 4:
        del words[rng.randrange(1, len(words))]
    elif r < 0.5:
        words.insert(rng.randrange(1, len(words) + 1), rng.choice(EN_ADJ))
    elif r < 0.65 and words[0].lower() in EN_SWAP:
        words[0] = EN_SWAP[words[0].lower()].capitalize()
    elif r < 0.8 and len(words) > 3:
        i = rng.randrange(1, len(words) - 1)
        words[i], words[i + 1] = words[i + 1], words[i]
    text = " ".join(words)
    if rng.random() < 0.3:
        text += f" ({rng.randrange(10_000_000)})"  # keeps most rows distinct, as a real stream is
    return text


def make_zh(rng: random.Random, seeds: list[str]) -> str:
    if seeds and rng.random() < 0.4:
        s = rng.choice(seeds)
        return s + rng.choice(ZH_TAIL) + (f"（{rng.randrange(10_000_000)}）" if rng.random() < 0.3 else "")
    return "请" * (rng.random() < 0.3) + rng.choice(ZH_VERBS) + rng.choice(ZH_TOPIC) + rng.choice(ZH_OBJ) + rng.choice(ZH_TAIL) + (
        f"（{rng.randrange(10_000_000)}）" if rng.random() < 0.3 else ""
    )


def build(db: Path, rows: int, seed: int = 7) -> None:
    from datagen import storage
    from datagen.storage import search
    from datagen.storage.runs import instruction_hash

    if db.exists():
        for suffix in ("", "-wal", "-shm"):
            Path(str(db) + suffix).unlink(missing_ok=True)
    engine = storage.connect(f"sqlite:///{db}")
    runs = [("bench-en-a", "en"), ("bench-en-b", "en"), ("bench-zh-a", "zh"), ("bench-zh-b", "zh")]
    run_ids = {}
    for name, lang in runs:
        r, _ = storage.open_run(engine, name, lang=lang, api="openai", model="bench", target=rows, config={"temperature": 0.7})
        run_ids[name] = r.id
    storage.dispose_all()

    rng = random.Random(seed)
    en, zh = english_pool(), chinese_pool()
    t0 = time.time()
    con = sqlite3.connect(db)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=OFF")
    trig = con.execute("SELECT name, sql FROM sqlite_master WHERE type='trigger' AND name LIKE 'sample_fts_%'").fetchall()
    for name, _ in trig:
        con.execute(f"DROP TRIGGER {name}")
    start = datetime(2025, 1, 1, tzinfo=timezone.utc).replace(tzinfo=None)
    seen: set[tuple[int, str]] = set()
    batch, inst = [], []
    sid = 0
    for i in range(rows):
        zh_row = rng.random() < 0.25
        run = runs[(2 if zh_row else 0) + (rng.random() < 0.5)][0]
        text = make_zh(rng, zh) if zh_row else perturb_en(rng, rng.choice(en))
        r = rng.random()
        status = "accepted" if r < 0.55 else "rejected" if r < 0.90 else "approved" if r < 0.95 else "discarded" if r < 0.98 else "pending"
        h = instruction_hash(text)
        if status in ("accepted", "approved", "pending"):
            if (run_ids[run], h) in seen:
                status = "rejected"  # the unique kept index allows one kept copy per run
            else:
                seen.add((run_ids[run], h))
        reason = rng.choice(REASONS) if status == "rejected" else None
        score = round(min(1.0, rng.betavariate(2, 5) + (0.45 if reason == "similar" else 0)), 4) if rng.random() < 0.97 else None
        when = (start + timedelta(seconds=i * 3)).isoformat(sep=" ")
        sid += 1
        batch.append((sid, run_ids[run], "zh" if zh_row else "en", text, h, rng.random() < 0.2, status, reason, None, None, score,
                      status != "rejected" or reason != "similar", None, None, None, when, when))
        inst.append((sid, 0, "" if rng.random() < 0.4 else "some input text", "an output for this task"))
        if len(batch) == 20_000:
            _flush(con, batch, inst)
            batch, inst = [], []
            print(f"\r  {i + 1:,} rows ({time.time() - t0:.0f}s)", end="", file=sys.stderr)
    _flush(con, batch, inst)
    print(f"\r  {rows:,} rows inserted in {time.time() - t0:.0f}s; building the FTS5 index...", file=sys.stderr)
    t1 = time.time()
    con.execute(search.POPULATE)  # sample_fts keeps its own copy: fill it from the tables
    for _, sql in trig:
        con.execute(sql)
    con.commit()
    con.execute("ANALYZE")
    con.commit()
    con.close()
    print(f"  FTS5 rebuilt in {time.time() - t1:.0f}s; total {time.time() - t0:.0f}s", file=sys.stderr)


def _flush(con, batch, inst):
    con.executemany(
        "INSERT INTO sample (id, run_id, lang, instruction, instruction_hash, is_classification, status, reason, detail, nearest, "
        "nearest_score, indexed, request_id, review_note, reviewed_by, created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        batch,
    )
    con.executemany("INSERT INTO instance (sample_id, idx, input, output) VALUES (?,?,?,?)", inst)
    con.commit()


def ensure_indexes(db: Path) -> None:
    """Create any index the current models declare but an older bench database lacks."""
    from datagen import storage

    storage.connect(f"sqlite:///{db}")
    storage.dispose_all()



def queries(rng: random.Random) -> dict[str, callable]:
    en_words = ["poem", "recipe", "customer", "summarize", "explain", "healthy", "story", "email", "product", "history", "climate", "travel"]
    rare = ["photosynthesis", "quantum", "volcano", "sonnet", "mortgage", "marathon", "chemistry", "galaxy"]
    zh2 = ["诗歌", "故事", "文章", "建议", "翻译", "旅行", "健康", "教育"]
    zh3 = ["人工智能", "环境保护", "健康饮食", "城市交通", "工作效率", "小学生"]
    return {
        "list: no filter, newest": lambda: {"sort": "-id"},
        "list: status": lambda: {"status": rng.choice(["accepted", "rejected", "approved", "discarded"])},
        "list: run+lang+status": lambda: {"run": rng.choice(["bench-en-a", "bench-zh-b"]), "status": "accepted", "lang": rng.choice(["en", "zh"])},
        "list: reason, by ROUGE-L desc": lambda: {"status": "rejected", "reason": rng.choice(["similar", "too_long", "blacklist"]), "sort": "-score"},
        "list: ROUGE-L range": lambda: {"score_min": round(rng.uniform(0.3, 0.6), 2), "score_max": round(rng.uniform(0.65, 0.9), 2)},
        "list: length range": lambda: {"len_min": rng.choice([20, 40, 60]), "len_max": rng.choice([80, 120, 200]), "status": "accepted"},
        "list: classification": lambda: {"classification": "true", "status": "accepted"},
        "list: all filters": lambda: {"run": "bench-en-b", "lang": "en", "status": "rejected", "reason": "similar", "score_min": 0.6, "len_max": 150},
        "list: sort by length": lambda: {"status": "accepted", "sort": rng.choice(["-length", "length"])},
        "search: en common word": lambda: {"q": rng.choice(en_words)},
        "search: en rare word": lambda: {"q": rng.choice(rare)},
        "search: en two words + status": lambda: {"q": f"{rng.choice(en_words)} {rng.choice(['the', 'a', 'of'])}", "status": "accepted"},
        "search: zh 2 chars (LIKE)": lambda: {"q": rng.choice(zh2)},
        "search: zh 3+ chars (FTS5)": lambda: {"q": rng.choice(zh3)},
        "search: zh + filters": lambda: {"q": rng.choice(zh3), "status": "rejected", "reason": "similar"},
        "count: status (capped 10k)": lambda: ("count", {"status": rng.choice(["accepted", "rejected"])}),
        "count: search": lambda: ("count", {"q": rng.choice(en_words + zh3)}),
    }


def measure(base: str, repeat: int, seed: int = 11) -> dict[str, tuple[float, float, float]]:
    import httpx

    rng = random.Random(seed)
    out = {}
    with httpx.Client(base_url=base, timeout=60) as c:
        c.get("/api/samples", params={"limit": 1})  # warm the connection and page cache
        for name, make in queries(rng).items():
            times = []
            for i in range(repeat + 2):
                spec = make()
                path = "/api/samples"
                if isinstance(spec, tuple):
                    path, spec = "/api/samples/count", spec[1]
                params = dict(spec)
                if path == "/api/samples":
                    params.setdefault("limit", 50)
                t = time.perf_counter()
                r = c.get(path, params=params)
                dt = (time.perf_counter() - t) * 1000
                if r.status_code != 200:
                    raise SystemExit(f"{name}: HTTP {r.status_code} {r.text[:200]}")
                if i >= 2:  # the first two warm the page cache for this kind
                    times.append(dt)
            # deep pages: follow the cursor 20 pages in
            times.sort()
            p95 = times[min(len(times) - 1, int(round(0.95 * (len(times) - 1))))]
            out[name] = (statistics.median(times), p95, times[-1])
            print(f"  {name:34s} p50 {out[name][0]:7.1f} ms   p95 {p95:7.1f} ms   max {times[-1]:7.1f} ms", file=sys.stderr)
        times = []
        for _ in range(max(3, repeat // 5)):
            cursor, t = None, time.perf_counter()
            for _page in range(20):
                r = c.get("/api/samples", params={"status": "accepted", "limit": 50, **({"cursor": cursor} if cursor else {})})
                cursor = r.json()["next_cursor"]
            times.append((time.perf_counter() - t) * 1000 / 20)
        times.sort()
        out["list: keyset page (20 pages deep)"] = (statistics.median(times), times[int(0.95 * (len(times) - 1))], times[-1])
        print(f"  {'list: keyset page (20 deep)':34s} p50 {out['list: keyset page (20 pages deep)'][0]:7.1f} ms per page", file=sys.stderr)
        t = time.perf_counter()
        c.get("/api/stats", params={"run": "bench-en-a"})
        out["stats: one run (not a target)"] = ((time.perf_counter() - t) * 1000,) * 3
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--db", type=Path, default=Path("/tmp/datagen-api-bench.db"))
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=40, help="timed requests per query kind")
    ap.add_argument("--rebuild", action="store_true")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()

    if args.rebuild or not args.db.exists():
        print(f"building {args.db} with {args.rows:,} samples", file=sys.stderr)
        build(args.db, args.rows)
    ensure_indexes(args.db)
    n = sqlite3.connect(args.db).execute("SELECT count(*) FROM sample").fetchone()[0]
    port = free_port()
    env = dict(os.environ, DATAGEN_API_TOKEN=TOKEN, PYTHONPATH=str(ROOT))
    server = subprocess.Popen(
        # The real `datagen serve` command.
        [sys.executable, "-m", "api.cli", "serve", "--host", "127.0.0.1", "--port", str(port), "--db", f"sqlite:///{args.db}"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        import httpx

        for _ in range(100):
            try:
                httpx.get(base + "/api/health", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.2)
        print(f"measuring on {n:,} samples over HTTP ({args.repeat} requests per kind)", file=sys.stderr)
        figures = measure(base, args.repeat)
    finally:
        server.terminate()
        server.wait(10)
    if args.json:
        args.json.write_text(json.dumps({"rows": n, "figures": figures}, indent=2))
    print("\n| query | p50 ms | p95 ms | max ms |\n|---|---:|---:|---:|")
    for name, (p50, p95, mx) in figures.items():
        print(f"| {name} | {p50:.1f} | {p95:.1f} | {mx:.1f} |")


if __name__ == "__main__":
    main()
