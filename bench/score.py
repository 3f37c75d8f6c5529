"""Curation throughput (issue 20): IFD samples/s and `datagen select` time.

IFD: datagen's own scorer (datagen.scores.ifd.compute: both passes, right padding, loss at output
positions only), on alpaca-size records of about --tokens tokens (instruction + input + output,
built from /work/shared/corpus's machine-written instructions when present), timed after one
warm-up batch. The model is the embedded SmolLM2 (default), a HF directory (--model), or a
random-weight LLaMA of Llama-3.2-1B's shape (--model-shape 1b: hidden 2048, 16 layers, 32 heads,
8 KV heads, MLP 8192, vocab 128256; bf16 on CUDA) with SmolLM2's tokenizer supplying the ids.

Selection: Deita's greedy rule (datagen.scores.select.greedy_diverse) over random clustered unit
vectors of SmolLM2's width (576), at --select-n sizes, with --max 6000 and with no maximum (the
worst case: every candidate walked against everything kept; up to --no-max-up-to rows).

    python bench/score.py --n 64                                  # this machine, embedded model
    python bench/score.py --model-shape 1b --n 52000 --batch-size 128 --skip-select --json ifd_h200.json
    python bench/score.py --skip-ifd --select-n 50000,200000
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CORPUS = Path("/work/shared/corpus/smollm2_instructions_en.txt")
FILLER = ("the river carries stone and light through a green valley where people build bridges, grow bread, "
          "count stars and write letters about tides, bees, glaciers and the long history of tea").split()


def records(n: int, tokens: int, seed: int = 0, corpus: Path = CORPUS) -> list[tuple[str, list[tuple[str, str]]]]:
    """(instruction, [(input, output)]) with about `tokens` tokens in all (~0.75 words per token)."""
    rnd = random.Random(seed)
    lines = [x.strip() for x in corpus.read_text().splitlines() if x.strip()] if corpus.exists() else ["Write about the river."]
    words = int(tokens * 0.75)
    out = []
    for i in range(n):
        instruction = lines[i % len(lines)]
        inp = " ".join(rnd.choice(FILLER) for _ in range(words // 6))
        output = " ".join(rnd.choice(FILLER) for _ in range(words - words // 6 - len(instruction.split())))
        out.append((instruction, [(inp, output)]))
    return out


def load(args):
    import torch

    from datagen.scores import models as M

    if args.model_shape != "1b":
        loaded = M.load(args.model, causal=True)
        return loaded.model, loaded.tokenizer, loaded.device, str(loaded.dtype), args.model or "smollm2"
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(args.tokenizer or M.hf_dir(None))  # a bare GPU box carries the tokenizer files alone
    cuda = torch.cuda.is_available()
    dtype = torch.bfloat16 if cuda else torch.float32
    cfg = LlamaConfig(vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
                      num_key_value_heads=8, max_position_embeddings=4096, tie_word_embeddings=True, rope_theta=500000.0)
    torch.manual_seed(0)
    with torch.device("cuda" if cuda else "cpu"):
        lm = LlamaForCausalLM(cfg).to(dtype).eval()
    return lm, tok, "cuda" if cuda else "cpu", str(dtype), "llama-1b-shape (random weights)"


def bench_ifd(args) -> dict:
    import torch

    from datagen.scores import ifd

    lm, tok, device, dtype, name = load(args)
    recs = records(args.n, args.tokens, corpus=args.corpus)
    lens = [len(ifd.encode(tok, r[0], *r[1][0]).cond) for r in recs[:200]]
    ifd.compute(lm, tok, recs[: args.batch_size], device=device, batch_size=args.batch_size)  # warm-up
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    page = 4 * args.batch_size  # as score_run pages them
    done = 0
    for a in range(0, len(recs), page):
        vals = ifd.compute(lm, tok, recs[a : a + page], device=device, batch_size=args.batch_size)
        done += sum(v.value is not None for v in vals)
    if device == "cuda":
        torch.cuda.synchronize()
    secs = time.perf_counter() - t0
    params = sum(p.numel() for p in lm.parameters())
    out = {"model": name, "params": params, "device": device, "dtype": dtype, "threads": torch.get_num_threads(),
           "records": args.n, "scored": done, "batch_size": args.batch_size, "mean_cond_tokens": sum(lens) / len(lens),
           "seconds": round(secs, 3), "samples_per_s": round(args.n / secs, 3),
           "minutes_for_52k": round(52000 / (args.n / secs) / 60, 2)}
    if device == "cuda":
        out["gpu"] = torch.cuda.get_device_name(0)
        out["max_mem_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    return out


def bench_select(sizes: list[int], dim: int = 576, tau: float = 0.9, no_max_up_to: int = 50000) -> list[dict]:
    import numpy as np

    from datagen.scores.select import greedy_diverse

    out = []
    for n in sizes:
        rng = np.random.default_rng(0)
        centres = rng.normal(size=(n // 4, dim)).astype(np.float32)
        # A quarter of the rows are cluster centres, the rest noisy copies: near-duplicates to drop.
        x = centres[rng.integers(0, len(centres), n)] + 0.25 * rng.normal(size=(n, dim)).astype(np.float32)
        for max_keep in (6000, None) if n <= no_max_up_to else (6000,):
            t0 = time.perf_counter()
            kept = greedy_diverse(x, tau, max_keep)
            secs = time.perf_counter() - t0
            out.append({"n": n, "dim": dim, "diversity": tau, "max": max_keep, "kept": len(kept), "seconds": round(secs, 2)})
            print(json.dumps(out[-1]), flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="HF causal LM directory [default: the embedded SmolLM2]")
    ap.add_argument("--model-shape", choices=["1b"], default=None, help="A random-weight LLaMA of this shape instead of --model.")
    ap.add_argument("--tokenizer", default=None, help="--model-shape: a tokenizer directory [default: the embedded SmolLM2's]")
    ap.add_argument("--corpus", type=Path, default=CORPUS, help="instructions, one a line")
    ap.add_argument("--n", type=int, default=64, help="Records to score.")
    ap.add_argument("--tokens", type=int, default=300, help="About this many tokens per record.")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--select-n", default="50000,200000", help="Sizes for the selection benchmark.")
    ap.add_argument("--no-max-up-to", type=int, default=50000, help="Also time the walk with no --max (the worst case) up to this size.")
    ap.add_argument("--skip-ifd", action="store_true")
    ap.add_argument("--skip-select", action="store_true")
    ap.add_argument("--json", default=None, help="Write the results here too.")
    args = ap.parse_args()
    res: dict = {"machine": platform.node(), "python": platform.python_version()}
    if not args.skip_ifd:
        res["ifd"] = bench_ifd(args)
        print(json.dumps(res["ifd"]), flush=True)
    if not args.skip_select:
        res["select"] = bench_select([int(x) for x in args.select_n.split(",") if x], no_max_up_to=args.no_max_up_to)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
