"""Tokens/s of the embedded model on the CPU: the transformers engine against the llama.cpp engine, same run.

Both engines (llama.cpp with the GGUF as shipped and with converted weights) get the same prompts (long-answer requests, so rows run to --new-tokens), greedy
decoding, the same thread count, at each batch size; the engines take turns per batch size and
per repeat, so a neighbour's load hits both alike. The ratio is the figure to read on a shared
machine; the load average is printed with it.

    python bench/local_cpu.py                           # batch 1, 8, 16; 64 new tokens; 1 repeat
    python bench/local_cpu.py --batches 1,8,16 --new-tokens 128 --repeats 3 --json cpu.json
    python bench/local_cpu.py --prompt-words 300 --weights file,f16,f32    # bootstrap-sized prompts
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.local_gpu import TOPICS, prompts  # noqa: E402 - the same prompt set as the GPU bench


def engines(threads: int | None, batch: int, weights: list[str]) -> dict:
    from datagen.backends.llamacpp import LlamaCppBackend
    from datagen.backends.local import LocalBackend

    engs = {"transformers": LocalBackend(None, batch_size=batch, threads=threads)}
    for w in weights:
        engs[f"llama.cpp/{w}"] = LlamaCppBackend(None, batch_size=batch, threads=threads, weights=w)
    return engs


def long_prompts(n: int, new_tokens: int, words: int) -> list:
    """The bench prompts behind a preamble of about `words` words, like a bootstrap prompt's examples."""
    pre = " ".join(f"Task {i}: describe {TOPICS[i % len(TOPICS)]} in plain words." for i in range(words // 6 + 1))
    ps = prompts(n, new_tokens)
    for p in ps:
        p.text = pre + "\n" + p.text
    return ps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", default="1,8,16", help="comma-separated batch sizes")
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=1, help="timed calls per engine and batch size (median reported)")
    ap.add_argument("--threads", type=int, default=None, help="CPU threads for both engines [default: cores - 1]")
    ap.add_argument("--weights", default="file,f16", help="llama.cpp weight variants (file: the GGUF as shipped; f16, f32: converted)")
    ap.add_argument("--prompt-words", type=int, default=0, help="a preamble of about this many words before each prompt (0: none)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    batches = [int(b) for b in args.batches.split(",")]

    engs = engines(args.threads, max(batches), args.weights.split(","))
    make = (lambda n, k: long_prompts(n, k, args.prompt_words)) if args.prompt_words else prompts
    head = {"python": platform.python_version(), "cores": os.cpu_count(), "new_tokens": args.new_tokens, "prompt_words": args.prompt_words,
            "repeats": args.repeats, "load_avg_start": [round(x, 1) for x in os.getloadavg()]}
    for name, e in engs.items():
        t0 = time.perf_counter()
        e.load()
        head[f"{name}_load_s"] = round(time.perf_counter() - t0, 2)
        head[f"{name}_dtype"] = e.dtype
        e.generate_raw(prompts(2, 4))  # warm-up
    print(" ".join(f"{k}={v}" for k, v in head.items()), flush=True)

    rows = []
    for b in batches:
        runs: dict[str, list] = {n: [] for n in engs}
        for _ in range(args.repeats):
            for name, e in engs.items():
                t0 = time.perf_counter()
                gens = e.generate_raw(make(b, args.new_tokens))
                secs = time.perf_counter() - t0
                toks = sum(g["tokens_out"] for g in gens)
                runs[name].append((toks / secs, toks, secs))
        row = {"batch": b, "load_avg": round(os.getloadavg()[0], 1)}
        for name, rs in runs.items():
            rs.sort()
            tps, toks, secs = rs[len(rs) // 2]
            row[name] = {"tokens": toks, "seconds": round(secs, 2), "tokens_per_s": round(tps, 1)}
        base = row["transformers"]["tokens_per_s"]
        row["vs_transformers"] = {n: round(row[n]["tokens_per_s"] / base, 2) for n in engs if n != "transformers"}
        rows.append(row)
        print(f"batch={b:<3d} tokens={row['transformers']['tokens']:<5d} "
              + " ".join(f"{n}={row[n]['tokens_per_s']:.1f}tok/s" for n in engs)
              + "  vs transformers: " + " ".join(f"{n}={r:.2f}x" for n, r in row["vs_transformers"].items())
              + f"  load_avg={row['load_avg']}", flush=True)
    if args.json:
        args.json.write_text(json.dumps({**head, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
