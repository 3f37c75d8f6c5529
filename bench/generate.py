"""Generation speed benchmark: the async pipeline against a one-request-at-a-time loop.

Both run against the same local OpenAI-compatible stub (`scripts/devserver.py`) with a fixed
latency and a sliding-window rate limit that answers 429 + Retry-After beyond it. The stub
runs in its own process (a fresh one per phase, so one phase's window never throttles the
next), so this process's CPU time is the pipeline's own work: HTTP client, parsing,
filtering, SQLite.

Phases (all in one go, each skippable):
  startup   `datagen generate --help` and a tiny run's time to first request
  pipeline  `await datagen.generate.generate(...)` for --seconds; a sampler polls the stub's
            /stats every second; figures come from a steady window after --warmup
  baseline  Alpaca's generate_instruction_following_data loop: send one request, wait,
            parse, ROUGE-L (rouge_score, brute force) against everything, repeat
  local     the embedded model (datagen.backends.local.LocalBackend): tokens/s batched vs one prompt
            at a time, torch threads = 1 and = all cores

    python bench/generate.py                  # ~5 minutes
    python bench/generate.py --seconds 60 --baseline-seconds 30 --skip local
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from common import free_port  # bench/common.py (the scripts run from bench/)

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

PY = sys.executable


# ---------------------------------------------------------------- the stub server



class Stub:
    """`python scripts/devserver.py` in a child process."""

    def __init__(self, latency: float, rpm: int | None):
        self.port = free_port()
        cmd = [PY, str(ROOT / "scripts" / "devserver.py"), "--port", str(self.port), "--latency", str(latency)]
        if rpm:
            cmd += ["--rpm", str(rpm)]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        deadline = time.monotonic() + 60
        while True:
            try:
                self.stats()
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"stub server did not start: {self.proc.stderr.read().decode()[-2000:]}")
                time.sleep(0.05)

    def stats(self) -> dict:
        import http.client

        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        try:
            conn.request("GET", "/stats")
            return json.loads(conn.getresponse().read())
        finally:
            conn.close()

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# ---------------------------------------------------------------- startup


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def bench_startup(reps: int) -> dict:
    walls, cpus = [], []
    for _ in range(reps):
        c0, t0 = children_cpu(), time.perf_counter()
        subprocess.run([PY, "-m", "datagen.cli", "generate", "--help"], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
        walls.append(time.perf_counter() - t0)
        cpus.append(children_cpu() - c0)
    # A tiny run: time from process start to the stub's first served completion (latency 0, no limit).
    firsts, totals, tcpus = [], [], []
    for _ in range(reps):
        with Stub(0.0, None) as stub, tempfile.TemporaryDirectory() as tmp:
            cmd = [PY, "-m", "datagen.cli", "generate", "-n", "1", "--api", "chat", "--base-url", stub.base_url,
                   "--db", str(Path(tmp) / "t.db"), "--no-progress"]
            c0, t0 = children_cpu(), time.perf_counter()
            proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            first = None
            while proc.poll() is None:
                if first is None and stub.stats()["served"] > 0:
                    first = time.perf_counter() - t0
                time.sleep(0.01)
            totals.append(time.perf_counter() - t0)
            tcpus.append(children_cpu() - c0)
            if proc.returncode != 0:
                raise RuntimeError(f"tiny run failed: {proc.stderr.read().decode()[-2000:]}")
            firsts.append(first if first is not None else totals[-1])
    # Which heavy modules does the library entry point pull in before any request?
    probe = ("import sys, time; t = time.perf_counter(); import datagen.generate, datagen.backends as b; "
             "b.make_backend('chat', 'x', base_url='http://127.0.0.1:9/v1'); "
             "print(time.perf_counter() - t); "
             "print(','.join(m for m in ('openai', 'httpx', 'numpy', 'rapidfuzz', 'jieba', 'torch', 'transformers', 'sqlmodel') if m in sys.modules))")
    out = subprocess.run([PY, "-c", probe], cwd=ROOT, check=True, capture_output=True, text=True).stdout.split("\n")
    return {
        "help_wall_s": statistics.median(walls), "help_cpu_s": statistics.median(cpus),
        "tiny_first_request_s": statistics.median(firsts), "tiny_total_s": statistics.median(totals),
        "tiny_cpu_s": statistics.median(tcpus), "api_import_s": float(out[0]), "api_imports": out[1],
    }


# ---------------------------------------------------------------- pipeline


async def _pipeline(args, stub: Stub, db: str) -> dict:
    from datagen.generate import GenerateOptions, generate
    from datagen.pipeline import PipelineConfig

    opts = GenerateOptions(
        run="bench", api="chat", model="stub", base_url=stub.base_url, db=db, concurrency=args.concurrency,
        rpm=None if args.no_client_rpm else args.rpm,
        pipeline=PipelineConfig(target=10**9, random_seed=args.seed),
    )
    samples: list[dict] = []
    state: dict = {}

    async def watch(name, prog, client, task):
        state.update(prog=prog, client=client)
        t0 = time.monotonic()
        loop = asyncio.get_running_loop()
        next_at = t0
        while not task.done():
            now = time.monotonic()
            st = await loop.run_in_executor(None, stub.stats)
            samples.append({
                "t": now - t0, "cpu": time.process_time(), "served": st["served"], "rejected_429": st["rate_limited"],
                "accepted": prog.accepted, "candidates": prog.candidates, "bootstraps": prog.bootstraps,
                "requests": client.counters.requests, "errors": client.counters.errors,
                # in flight (holding a concurrency slot) and queued on the RPM limiter: is the pipeline short of work?
                "inflight": args.concurrency - client._sem._value,
                "rpm_waiting": len(client._rpm._waiters) if client._rpm else 0,
                "work": prog.in_progress,
            })
            if now - t0 >= args.seconds:
                task.cancel()
                break
            next_at += 1.0
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))

    try:
        await generate(opts, on_start=watch)
    except asyncio.CancelledError:
        pass
    import sqlite3

    with sqlite3.connect(db) as con:  # answered requests' latency as the client saw it (queueing in the SDK included); rows still `sent` have none
        lat = sorted(r[0] for r in con.execute("select latency_ms from request where state = 'done' and error is null"))
    latency = {"p50": lat[len(lat) // 2], "p90": lat[int(len(lat) * 0.9)], "max": lat[-1]} if lat else {}
    return {"latency_ms": latency, "samples": samples, "progress": state.get("prog"), "counters": state.get("client").counters}


def bench_pipeline(args) -> dict:
    with Stub(args.latency, args.rpm) as stub, tempfile.TemporaryDirectory() as tmp:
        res = asyncio.run(_pipeline(args, stub, str(Path(tmp) / "bench.db")))
    s = res["samples"]
    start = next(x for x in s if x["t"] >= args.warmup)
    end = s[-1]
    span = end["t"] - start["t"]
    accepted = end["accepted"] - start["accepted"]
    served = end["served"] - start["served"]
    p = res["progress"]
    return {
        "window_s": span, "warmup_s": start["t"],
        "served_window": served, "served_total": end["served"],
        "limit_share": served / (args.rpm * span / 60),
        "requests_per_min": served * 60 / span,
        "accepted_window": accepted, "accepted_total": end["accepted"],
        "accepted_per_min": accepted * 60 / span,
        "accepted_per_min_total": end["accepted"] * 60 / end["t"],
        "cpu_window_s": end["cpu"] - start["cpu"],
        "cpu_ms_per_accepted": 1000 * (end["cpu"] - start["cpu"]) / max(1, accepted),
        "rate_limited_429": end["rejected_429"], "client_errors": end["errors"],
        "candidates": p.candidates, "bootstraps": p.bootstraps, "rejected": dict(p.rejected),
        "requests_per_accepted": served / max(1, accepted),
        "similar_share": p.rejected.get("similar", 0) / max(1, p.candidates),
        "latency_ms": res["latency_ms"],
        "timeline": [(round(x["t"], 1), x["served"], x["accepted"], x["rejected_429"], x["inflight"], x["rpm_waiting"], x["work"]) for x in s],
    }


# ---------------------------------------------------------------- baseline: Alpaca's loop


def bench_baseline(args) -> dict:
    """One request at a time, as Alpaca's generate_instruction_following_data does.

    Same stub, same prompts, same parsers and heuristics as the pipeline, sequential: ask for new
    instructions, wait, parse, score each one with rouge_score's ROUGE-L against every seed and
    machine instruction (brute force; Alpaca even forks a Pool per candidate, which this leaves
    out, so the baseline here is if anything faster than Alpaca's), then for a kept one ask
    "classification?", wait, ask for instances, wait, apply the instance rules, and after each
    round rewrite the whole output file (Alpaca's jdump of everything so far).
    """
    import openai
    from rouge_score import rouge_scorer

    from datagen.filters import InstructionFilter, filter_instances
    from datagen.pipeline import PipelineConfig
    from datagen.prompts import (bootstrap_prompt, classify_prompt, instances_prompt, load_prompts, parse_instances,
                                 parse_task_list, parse_yes_no, pick_classify_shots, pick_instance_shots)
    from datagen.seeds import default_seed_path, load_seeds

    cfg = PipelineConfig()
    seeds = load_seeds(default_seed_path("en"))
    ps = load_prompts("en")
    rng = random.Random(args.seed)
    heur = InstructionFilter("en")
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    all_tokens = [scorer._tokenizer.tokenize(s.instruction) for s in seeds]
    machine: list[dict] = []

    with Stub(args.latency, args.rpm) as stub, tempfile.TemporaryDirectory() as tmp:
        client = openai.OpenAI(base_url=stub.base_url, api_key="no-key", max_retries=0)
        out = Path(tmp) / "regen.json"
        requests = 0

        def ask(text: str, max_tokens: int, temperature: float, top_p: float):
            nonlocal requests
            while True:
                try:
                    r = client.chat.completions.create(model="stub", messages=[{"role": "user", "content": text}],
                                                       max_tokens=max_tokens, temperature=temperature, top_p=top_p)
                    requests += 1
                    return r.choices[0].message.content or "", r.choices[0].finish_reason
                except openai.RateLimitError:
                    time.sleep(1)

        c0, t0 = time.process_time(), time.monotonic()
        deadline = t0 + args.baseline_seconds
        candidates = bootstraps = similar = 0
        while time.monotonic() < deadline:
            examples = [s.instruction for s in rng.sample(seeds, cfg.num_seed_examples)]
            examples += rng.sample([m["instruction"] for m in machine], min(cfg.num_machine_examples, len(machine)))
            rng.shuffle(examples)
            text, nxt = bootstrap_prompt(ps, examples, cfg.new_per_prompt)
            reply, finish = ask(text, cfg.bootstrap_max_tokens, cfg.temperature, cfg.top_p)
            bootstraps += 1
            for inst in parse_task_list(reply, nxt, truncated=finish == "length"):
                if time.monotonic() >= deadline:
                    break
                candidates += 1
                if heur.check(inst):
                    continue
                toks = scorer._tokenizer.tokenize(inst)
                scores = [rouge_scorer._score_lcs(toks, t).fmeasure for t in all_tokens]
                if scores and max(scores) > cfg.threshold:
                    similar += 1
                    continue
                all_tokens.append(toks)
                shots = pick_classify_shots(seeds, rng)
                yn, _ = ask(classify_prompt(ps, shots, inst), cfg.classify_max_tokens, 0.0, 1.0)
                out_first = bool(parse_yes_no(ps, yn))
                shots = pick_instance_shots(seeds, rng, out_first)
                reply2, finish2 = ask(instances_prompt(ps, shots, inst, out_first, cfg.max_instances),
                                      cfg.instances_max_tokens, cfg.temperature, cfg.top_p)
                tail = (ps.instances_output_first if out_first else ps.instances_input_first).query
                tail = tail.split("\n", 1)[1] if "\n" in tail else tail
                kept, _ = filter_instances(parse_instances(ps, reply2, out_first, finish2 == "length", tail), cfg.max_instances)
                if kept:
                    machine.append({"instruction": inst, "is_classification": out_first,
                                    "instances": [i.model_dump() for i in kept]})
            out.write_text(json.dumps(machine, indent=4, default=str))
        elapsed = time.monotonic() - t0
        cpu = time.process_time() - c0
        client.close()
    return {
        "elapsed_s": elapsed, "requests": requests, "requests_per_min": requests * 60 / elapsed,
        "accepted": len(machine), "accepted_per_min": len(machine) * 60 / elapsed,
        "candidates": candidates, "bootstraps": bootstraps, "similar_share": similar / max(1, candidates),
        "cpu_s": cpu, "cpu_ms_per_accepted": 1000 * cpu / max(1, len(machine)),
        "requests_per_accepted": requests / max(1, len(machine)),
    }


# ---------------------------------------------------------------- the embedded model


def bench_local(args) -> dict:
    import torch

    from datagen.backends.local import LocalBackend
    from datagen.records import Prompt, Stage

    topics = ["volcanoes", "honeybees", "chess", "tides", "bread", "jazz", "bicycles", "libraries"]
    prompts = [Prompt(stage=Stage.bootstrap, text=f"Write one sentence about {t}.", max_tokens=args.tokens,
                      temperature=0.0, top_p=1.0) for t in topics[: args.batch]]
    rows = {}
    for threads in sorted({1, os.cpu_count() or 1}):
        be = LocalBackend(None, batch_size=args.batch, threads=threads)
        be.load()
        torch.set_num_threads(threads)
        be.generate(prompts[:2])  # warm-up
        for mode in ("one", "batch"):
            c0, t0 = time.process_time(), time.perf_counter()
            if mode == "batch":
                gens = be.generate(prompts)
            else:  # one prompt at a time, within --local-seconds (at least one prompt): a rate is a rate
                gens = []
                for p in prompts:
                    gens += be.generate([p])
                    if time.perf_counter() - t0 >= args.local_seconds:
                        break
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            toks = sum(g.tokens_out for g in gens)
            rows[f"{mode}/t{threads}"] = {"prompts": len(gens), "tokens": toks, "wall_s": wall, "cpu_s": cpu, "tok_s": toks / wall,
                                          "tok_per_cpu_s": toks / max(cpu, 1e-9)}
    return rows


# ---------------------------------------------------------------- report


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        mem = int(next(l for l in Path("/proc/meminfo").read_text().splitlines() if l.startswith("MemTotal")).split()[1]) / 2**20
    except (OSError, StopIteration):
        mem = float("nan")
    load = os.getloadavg()
    return (f"{cpu}, {os.cpu_count()} cores, {mem:.0f} GiB, {platform.system()} {platform.release()}, "
            f"Python {platform.python_version()}, load avg {load[0]:.1f}/{load[1]:.1f}/{load[2]:.1f}")


def report(args, res: dict) -> str:
    lines = [f"machine: {res['machine_start']}", f"         (at end: load avg {res['load_end']})",
             f"stub: latency {args.latency:g} s, limit {args.rpm} requests/min (sliding 60 s window, 429 + Retry-After); "
             f"pipeline: --concurrency {args.concurrency}, client --rpm {'off' if args.no_client_rpm else args.rpm}", ""]
    row = "{:<44} {:>16} {:>16} {:>9}"
    p, b = res.get("pipeline"), res.get("baseline")
    if p or b:
        lines.append(row.format("generation", "pipeline", "one-at-a-time", "ratio"))
        lines.append(row.format("-" * 44, "-" * 16, "-" * 16, "-" * 9))

        def r(name, pv, bv, fmt="{:.1f}", ratio=True):
            ps_ = fmt.format(pv) if pv is not None else "-"
            bs_ = fmt.format(bv) if bv is not None else "-"
            rs = f"{pv / bv:.2f}x" if ratio and pv is not None and bv else ""
            lines.append(row.format(name, ps_, bs_, rs))

        g = lambda d, k: d[k] if d else None  # noqa: E731
        r("measured window (s)", g(p, "window_s"), g(b, "elapsed_s"), ratio=False)
        r("requests served / min", g(p, "requests_per_min"), g(b, "requests_per_min"))
        r("share of the server's limit", 100 * p["limit_share"] if p else None,
          100 * b["requests_per_min"] / args.rpm if b else None, "{:.1f} %", ratio=False)
        r("accepted instructions / min", g(p, "accepted_per_min"), g(b, "accepted_per_min"))
        r("  (pipeline incl. warm-up)", g(p, "accepted_per_min_total"), g(b, "accepted_per_min"))
        r("accepted in the window", g(p, "accepted_window"), g(b, "accepted"), "{:.0f}", ratio=False)
        r("requests per accepted instruction", g(p, "requests_per_accepted"), g(b, "requests_per_accepted"), "{:.2f}")
        r("candidates rejected as ROUGE-L similar", 100 * p["similar_share"] if p else None,
          100 * b["similar_share"] if b else None, "{:.0f} %", ratio=False)
        r("CPU ms per accepted instruction", g(p, "cpu_ms_per_accepted"), g(b, "cpu_ms_per_accepted"))
        if p:
            lines.append(f"  pipeline: {p['served_total']} served in all, {p['rate_limited_429']} answered 429, "
                         f"{p['client_errors']} failed attempts logged, {p['candidates']} candidates from "
                         f"{p['bootstraps']} prompts, rejected {p['rejected']}; client-side latency ms {p['latency_ms']}")
        lines.append("")
    if res.get("local"):
        lines.append(f"embedded model (SmolLM2-135M, {args.tokens} new tokens max, {args.batch} short prompts, greedy)")
        lrow = "{:<22} {:>8} {:>8} {:>9} {:>9} {:>10} {:>12}"
        lines.append(lrow.format("mode / torch threads", "prompts", "tokens", "wall s", "CPU s", "tok/s", "tok/CPU-s"))
        for k, v in res["local"].items():
            lines.append(lrow.format(k, v["prompts"], v["tokens"], f"{v['wall_s']:.2f}", f"{v['cpu_s']:.2f}", f"{v['tok_s']:.1f}", f"{v['tok_per_cpu_s']:.1f}"))
        loc = res["local"]
        for t in sorted({1, os.cpu_count() or 1}):
            if f"batch/t{t}" in loc and f"one/t{t}" in loc:
                lines.append(f"  batch {args.batch} vs one at a time, {t} thread(s): {loc[f'batch/t{t}']['tok_s'] / loc[f'one/t{t}']['tok_s']:.2f}x tok/s")
        lines.append("")
    if res.get("startup"):
        s = res["startup"]
        lines += [
            "startup",
            f"  datagen generate --help          {s['help_wall_s']:.2f} s wall, {s['help_cpu_s']:.2f} s CPU",
            f"  tiny run (-n 1, stub latency 0)  first request after {s['tiny_first_request_s']:.2f} s, done in {s['tiny_total_s']:.2f} s, {s['tiny_cpu_s']:.2f} s CPU",
            f"  import datagen.generate + backend  {s['api_import_s']:.2f} s; heavy modules loaded: {s['api_imports'] or 'none'}",
            "",
        ]
    if p and b:
        lines.append("goals")
        lines.append(f"  pipeline >= 95% of the server's limit: {100 * p['limit_share']:.1f} % -> {'MET' if p['limit_share'] >= 0.95 else 'MISSED'}")
        ratio = p["accepted_per_min"] / max(b["accepted_per_min"], 1e-9)
        lines.append(f"  pipeline >= 10x one-at-a-time (accepted/min): {ratio:.2f}x -> {'MET' if ratio >= 10 else 'MISSED'}")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=120, help="pipeline phase length")
    ap.add_argument("--baseline-seconds", type=float, default=60, help="one-at-a-time phase length")
    ap.add_argument("--warmup", type=float, default=None, help="seconds left out of the pipeline's steady window [default: a sixth of --seconds]")
    ap.add_argument("--latency", type=float, default=1.0, help="stub latency per request (s)")
    ap.add_argument("--rpm", type=int, default=600, help="stub rate limit (requests/min); also given to the pipeline")
    ap.add_argument("--no-client-rpm", action="store_true", help="do not tell the pipeline the limit: rely on 429 + Retry-After alone")
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tokens", type=int, default=64, help="new tokens per prompt for the embedded model")
    ap.add_argument("--batch", type=int, default=8, help="batch size for the embedded model")
    ap.add_argument("--local-seconds", type=float, default=20, help="time budget for one-prompt-at-a-time per thread setting")
    ap.add_argument("--skip", default="", help="comma list of phases to skip: startup,pipeline,baseline,local")
    ap.add_argument("--json", type=Path, default=None, help="also write all figures here")
    args = ap.parse_args()
    if args.warmup is None:
        args.warmup = args.seconds / 6
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    res: dict = {"machine_start": machine()}
    for phase, fn in (("startup", lambda: bench_startup(3)), ("pipeline", bench_pipeline),
                      ("baseline", bench_baseline), ("local", bench_local)):
        if phase in skip:
            continue
        print(f"[{time.strftime('%H:%M:%S')}] {phase} ...", file=sys.stderr, flush=True)
        res[phase] = fn() if phase == "startup" else fn(args)
    load = os.getloadavg()
    res["load_end"] = f"{load[0]:.1f}/{load[1]:.1f}/{load[2]:.1f}"
    text = report(args, res)
    print(text)
    if args.json:
        args.json.write_text(json.dumps({"args": vars(args) | {"json": str(args.json)}, **res}, indent=2, default=str))


if __name__ == "__main__":
    main()
