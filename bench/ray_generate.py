"""Scale-out benchmark: the embedded model in-process against a pool of Ray replicas, and the coordinator's ceiling.

Phases (each skippable with --skip):
  inprocess  `datagen generate --api local` as a library call: one replica, torch on one thread
  ray        the same run with `--ray auto --replicas 2 --threads-per-replica 1`: two replicas, one
             thread each, on a local Ray instance this script starts (CPUs and object store capped)
  ceiling    the same coordinator over Ray replicas whose engine answers instantly (the stub's text
             generator, scripts/devserver.py reply_for): candidates screened per second when inference
             costs nothing, i.e. how many replicas one coordinator can feed

Both model phases use the same target, seed, batch size and answer budget; their clocks start when
the run starts (after the model loads and Ray starts) and stop when the target is reached, or,
with --seconds, after that long with a target out of reach. A small target keeps few prompts in
flight near its end (the pipeline asks only for what the gap needs), so it under-uses a second
replica; --seconds measures what a long run gets.

    python bench/ray_generate.py                           # target 6, ~10 minutes on 2 cores
    python bench/ray_generate.py --seconds 240 --json r.json    # a long run's steady state, 4 minutes per phase
    python bench/ray_generate.py --warmup 300 --seconds 600    # count only after the pipeline has filled
    python bench/ray_generate.py --skip inprocess,ray --ceiling-seconds 60
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ["PYTHONPATH"] = str(ROOT) + (os.pathsep + os.environ["PYTHONPATH"] if os.environ.get("PYTHONPATH") else "")
os.environ.setdefault("DATAGEN_THREADS", "1")  # the in-process replica: one torch thread, like each Ray replica


def load() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip().split("load average:")[-1].strip()


def start_ray(cpus: int) -> None:
    import logging

    import ray

    ray.init(num_cpus=cpus, object_store_memory=100 * 2**20, include_dashboard=False,
             logging_level=logging.WARNING, log_to_driver=False)


async def _run(opts, seconds: float | None, warmup: float = 0.0) -> dict:
    from datagen.generate import generate

    clock: dict = {}

    def mark(prog, client) -> dict:
        c = client.counters
        return dict(t=time.monotonic(), accepted=prog.accepted, candidates=prog.candidates, requests=c.requests,
                    errors=c.errors, tokens_out=c.tokens_out)

    async def watch(name, prog, client, task):
        clock.update(client=client, prog=prog, start=mark(prog, client))
        if seconds:  # a window of a long run: the target is out of reach, the run is stopped here
            if warmup:  # the pipeline first fills with new candidates; count from its steady state
                await asyncio.sleep(warmup)
                clock["start"] = mark(prog, client)
            await asyncio.sleep(seconds)
            task.cancel()

    try:
        await generate(opts, on_start=watch)
    except asyncio.CancelledError:
        pass
    a, b = clock["start"], mark(clock["prog"], clock["client"])
    secs = b["t"] - a["t"]
    d = {k: b[k] - a[k] for k in ("accepted", "candidates", "requests", "errors", "tokens_out")}
    return {
        "seconds": round(secs, 1), "warmup_s": warmup, **d,
        "accepted_per_min": round(d["accepted"] * 60 / secs, 2), "candidates_per_min": round(d["candidates"] * 60 / secs, 1),
        "tokens_out_per_s": round(d["tokens_out"] / secs, 1),
    }


def phase_model(args, tmp: Path, ray_replicas: int) -> dict:
    from datagen.generate import GenerateOptions
    from datagen.pipeline import PipelineConfig

    before = load()
    opts = GenerateOptions(
        run=f"bench-{ray_replicas}", api="local", model="smollm2", db=str(tmp / f"r{ray_replicas}.db"), batch_size=args.batch,
        ray="auto" if ray_replicas else None, replicas=max(1, ray_replicas), threads_per_replica=1,
        pipeline=PipelineConfig(target=10**9 if args.seconds else args.target, random_seed=args.seed, bootstrap_max_tokens=args.max_tokens,
                                instances_max_tokens=args.max_tokens),
    )
    if ray_replicas:
        start_ray(ray_replicas)
    try:
        res = asyncio.run(_run(opts, args.seconds, args.warmup if args.seconds else 0.0))
    finally:
        if ray_replicas:
            import ray

            ray.shutdown()
    res.update(load_before=before, load_after=load())
    return res


class InstantEngine:
    """Answers at once with the stub server's plausible text: inference at zero cost."""

    engine = "instant"
    device = "none"

    def load(self) -> None:
        self.rng = random.Random(os.getpid())

    def generate(self, prompts):
        import importlib.util

        from datagen.records import Generation

        # The stub server is a script (scripts/devserver.py), not part of the package: load it by path.
        spec = importlib.util.spec_from_file_location("devserver", ROOT / "scripts" / "devserver.py")
        devserver = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(devserver)
        reply_for = devserver.reply_for

        out = []
        for p in prompts:
            text, finish = reply_for(p.text, self.rng, p.max_tokens)
            out.append(Generation(text=text, finish_reason=finish, tokens_in=len(p.text) // 4, tokens_out=len(text) // 4))
        return out


async def _ceiling(args, db: str) -> dict:
    """generate()'s wiring (datagen/generate.py) with the pool built here, so its engine can be the instant one."""
    from datagen import storage
    from datagen.backends.ray_pool import RayPool
    from datagen.client import LLMClient
    from datagen.pipeline import Pipeline, PipelineConfig
    from datagen.prompts import load_prompts
    from datagen.seeds import default_seed_path, load_seeds

    pool = RayPool("smollm2", replicas=args.ceiling_replicas, batch_size=args.batch, engine_factory=InstantEngine)
    await pool.check()
    engine = storage.connect(db)
    run, _ = storage.open_run(engine, "ceiling", lang="en", api="local", model="instant", target=10**9, config={})

    def log(prompt, gen, attempt, cost):
        return storage.log_request(engine, run.id, prompt.stage.value, "instant", prompt.text, gen, attempt=attempt, cost=cost)

    client = LLMClient(pool, concurrency=args.ceiling_replicas, log=log)
    client.batch_wait = 0.2  # as generate() sets for local models
    cfg = PipelineConfig(target=10**9, random_seed=args.seed, max_bootstrap_inflight=args.batch * args.ceiling_replicas,
                         bootstrap_max_tokens=args.max_tokens, instances_max_tokens=args.max_tokens)
    pipe = Pipeline(cfg, client, engine, run.id, "en", load_seeds(default_seed_path("en")), load_prompts("en", None))
    task = asyncio.create_task(pipe.run())
    t0, c0 = time.monotonic(), time.process_time()
    await asyncio.sleep(args.ceiling_seconds)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    secs, cpu = time.monotonic() - t0, time.process_time() - c0
    p = pipe.progress
    await client.aclose()
    return {
        "seconds": round(secs, 1), "replicas": args.ceiling_replicas, "candidates": p.candidates, "accepted": p.accepted,
        "requests": client.counters.requests, "candidates_per_s": round(p.candidates / secs, 1),
        "accepted_per_s": round(p.accepted / secs, 2), "requests_per_s": round(client.counters.requests / secs, 1),
        "coordinator_cpu_share": round(cpu / secs, 2),
    }


def phase_ceiling(args, tmp: Path) -> dict:
    import ray

    before = load()
    start_ray(args.ceiling_replicas)
    try:
        res = asyncio.run(_ceiling(args, str(tmp / "ceiling.db")))
    finally:
        ray.shutdown()
    res.update(load_before=before, load_after=load())
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target", type=int, default=6, help="accepted instructions per model run")
    ap.add_argument("--seconds", type=float, default=None,
                    help="instead of a target: run each model phase this long with a target out of reach (a long run's steady state)")
    ap.add_argument("--warmup", type=float, default=0.0, help="with --seconds: seconds run before the window opens (not counted)")
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--batch", type=int, default=8, help="prompts per forward pass (--batch-size)")
    ap.add_argument("--max-tokens", type=int, default=160, help="answer budget of instruction and instance prompts")
    ap.add_argument("--ceiling-seconds", type=float, default=30.0)
    ap.add_argument("--ceiling-replicas", type=int, default=2)
    ap.add_argument("--skip", default="", help="comma-separated: inprocess,ray,ceiling")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    out: dict = {"args": vars(args) | {"json": str(args.json)}, "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        if "inprocess" not in skip:
            out["inprocess"] = phase_model(args, tmp, 0)
            print("in-process, 1 replica:", json.dumps(out["inprocess"]), flush=True)
        if "ray" not in skip:
            out["ray"] = phase_model(args, tmp, 2)
            print("Ray, 2 replicas:      ", json.dumps(out["ray"]), flush=True)
        if "inprocess" in out and "ray" in out:
            a, b = out["inprocess"], out["ray"]
            out["ratio"] = {k: round(b[k] / a[k], 2) for k in ("accepted_per_min", "candidates_per_min", "tokens_out_per_s") if a[k]}
            print(f"accepted/min: in-process {a['accepted_per_min']}, Ray x2 {b['accepted_per_min']}, "
                  f"ratio {out['ratio'].get('accepted_per_min', 'n/a')}x (goal >= 1.7x); candidates/min ratio "
                  f"{out['ratio'].get('candidates_per_min', 'n/a')}x; tokens out/s ratio {out['ratio'].get('tokens_out_per_s', 'n/a')}x")
        if "ceiling" not in skip:
            out["ceiling"] = phase_ceiling(args, tmp)
            c = out["ceiling"]
            print(f"coordinator ceiling ({c['replicas']} instant replicas): {c['candidates_per_s']} candidates screened/s, "
                  f"{c['requests_per_s']} requests/s, {c['accepted_per_s']} accepted/s; coordinator CPU {c['coordinator_cpu_share']:.0%}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
