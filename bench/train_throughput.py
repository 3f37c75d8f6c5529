"""QLoRA training throughput: the standard recipe against `train qlora`'s code path, same model, same data.

    python bench/train_throughput.py              # 7B LLaMA shape, random weights, on the GPU
    python bench/train_throughput.py --tiny       # a few-MB model, any machine (a smoke test of this script)

The model is LLaMA-shaped (hidden 4096, 32 layers, intermediate 11008, vocab 64000), random
weights written once to --model-dir and loaded through `from_pretrained` with bitsandbytes NF4 +
double quantization, as a real checkpoint would be. Samples are alpaca-like: lognormal lengths
(mean ~270 tokens, at most 1024), the first 20-50% prompt (no loss), token ids Zipf-distributed so
the loss has something to fall on.

baseline: HF Trainer + peft + prepare_model_for_kbit_training, LoRA r 64 on all linear layers,
          gradient checkpointing, paged_adamw_32bit, dynamic padding, batch 8.
ours-*:   train.qlora.fit (the loop `train qlora` runs) with train.model.add_lora, in a few settings.

Tokens/s counts real (non-padding) tokens over the timed steps (after --warmup steps). Each
setting runs in a process of its own (the model loads in seconds), so compiled graphs, the
baseline's fp32 casts and the allocator's state never leak from one setting into the next.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from train import data as D  # noqa: E402
from train import model as M  # noqa: E402
from train import qlora as Q  # noqa: E402

GiB = 2**30

try:
    import matplotlib  # noqa: F401
except ImportError:  # a bare GPU box may lack it; the loss plot is not what this measures
    Q.plot_loss = lambda *a, **k: None


def shape(tiny: bool) -> dict:
    if tiny:
        return dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4, vocab_size=1000)
    return dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32, vocab_size=64000)


def make_samples(n: int, vocab: int, seed: int, max_len: int = 1024, mean: float = 270.0) -> list[dict]:
    rng = np.random.default_rng(seed)
    sigma = 0.75
    mu = math.log(mean) - sigma**2 / 2  # so that E[length] = mean before clipping
    lens = np.clip(rng.lognormal(mu, sigma, n).astype(int), 16, max_len)
    perm = rng.permutation(vocab - 3) + 3  # ids 0-2 are pad/bos/eos
    out = []
    for L in lens:
        ranks = np.minimum(rng.zipf(1.3, L - 2), vocab - 3) - 1
        ids = [1] + perm[ranks].tolist() + [2]
        p = int(L * rng.uniform(0.2, 0.5))
        labels = [-100] * p + ids[p:]
        out.append({"input_ids": ids, "labels": labels, "targets": labels[1:] + [-100]})
    return out


def build_model_dir(path: Path, tiny: bool) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    if (path / "config.json").exists():
        return path
    cfg = LlamaConfig(**shape(tiny), max_position_embeddings=2048, rms_norm_eps=1e-5, tie_word_embeddings=False,
                      pad_token_id=0, bos_token_id=1, eos_token_id=2)
    t = time.perf_counter()
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)  # initialise in bf16 directly: 13 GB instead of 27
    with torch.device(dev):
        m = LlamaForCausalLM(cfg)
    torch.set_default_dtype(old)
    tmp = path.with_name(path.name + ".tmp")
    m.save_pretrained(tmp, max_shard_size="4GB")
    tmp.rename(path)
    del m
    gc.collect()
    torch.cuda.empty_cache() if dev == "cuda" else None
    print(f"random model written to {path} in {time.perf_counter() - t:.1f}s", flush=True)
    return path


def peak_reset():
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_gib() -> float:
    return torch.cuda.max_memory_allocated() / GiB if torch.cuda.is_available() else float("nan")


def throughput(tokens: list[int], ends: list[float], warmup: int) -> float:
    """Real tokens per second over steps warmup+1..N, from per-step token counts and end times."""
    if len(ends) <= warmup + 1:
        warmup = 0
        return sum(tokens) / ends[-1] if ends and ends[-1] > 0 else float("nan")
    return sum(tokens[warmup + 1:]) / (ends[-1] - ends[warmup])


# -- the standard recipe ------------------------------------------------------------------------

def run_baseline(model, samples, args, out: Path) -> dict:
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import Trainer, TrainerCallback, TrainingArguments

    seen: list[int] = []

    def collate(batch):
        n = max(len(s["input_ids"]) for s in batch)
        ids = torch.zeros(len(batch), n, dtype=torch.long)
        lab = torch.full((len(batch), n), -100, dtype=torch.long)
        att = torch.zeros(len(batch), n, dtype=torch.long)
        for i, s in enumerate(batch):
            k = len(s["input_ids"])
            ids[i, :k], lab[i, :k], att[i, :k] = torch.tensor(s["input_ids"]), torch.tensor(s["labels"]), 1
        seen.append(int(att.sum()))
        return {"input_ids": ids, "labels": lab, "attention_mask": att}

    ends: list[float] = []

    class Clock(TrainerCallback):
        def on_train_begin(self, *a, **k):
            self.t0 = time.perf_counter()

        def on_step_end(self, *a, **k):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            ends.append(time.perf_counter() - self.t0)

    class Ordered(Trainer):  # same sample order as listed (the data is already shuffled)
        def _get_train_sampler(self, *a, **k):
            return torch.utils.data.SequentialSampler(self.train_dataset)

    peak_reset()
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=True)
    model = get_peft_model(model, LoraConfig(r=64, lora_alpha=16, lora_dropout=0.05, bias="none", task_type="CAUSAL_LM",
                                             target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]))
    targs = TrainingArguments(
        output_dir=str(out / "baseline"), per_device_train_batch_size=8, gradient_accumulation_steps=1, max_steps=args.steps,
        learning_rate=2e-4, lr_scheduler_type="constant_with_warmup", warmup_steps=0, optim="paged_adamw_32bit" if args.bnb_optim else "adamw_torch",
        bf16=torch.cuda.is_available(), gradient_checkpointing=True, max_grad_norm=0.3, logging_steps=1, save_strategy="no",
        report_to=[], remove_unused_columns=False, dataloader_num_workers=0, disable_tqdm=True, seed=0)
    tr = Ordered(model=model, args=targs, train_dataset=samples, data_collator=collate, callbacks=[Clock()])
    tr.train()
    losses = [h["loss"] for h in tr.state.log_history if "loss" in h]
    return {"name": "baseline: HF Trainer, padding, grad ckpt, paged_adamw_32bit, batch 8", "tokens_per_s": throughput(seen, ends, args.warmup),
            "peak_gib": peak_gib(), "loss_first": losses[0], "loss_last": float(np.mean(losses[-3:])), "steps": len(ends),
            "tokens": sum(seen), "samples_per_step": 8, "losses": losses}


# -- ours ---------------------------------------------------------------------------------------

def run_ours(base, samples, args, out: Path, prec: M.Precision, *, name: str, rows: int, gc_on: bool, optim: str, chunk: int, row_len: int, lora_dtype: str = "fp32",
             compile: bool = False, attn: str = "sdpa", deepspeed: str | None = None) -> dict:
    peak_reset()
    base.set_attn_implementation(attn)  # what --attn-implementation does at load time
    model = M.add_lora(base, rank=64, alpha=16, dropout=0.05, gradient_checkpointing=gc_on, lora_dtype=lora_dtype)
    cfg = Q.Config(output_dir=str(out / name), max_steps=args.steps, per_device_batch_size=rows, packing=True,
                   max_seq_length=row_len, gradient_checkpointing=gc_on, optim=optim, loss_chunk=chunk, save_steps=0, seed=0,
                   lora_rank=64, lora_alpha=16, lora_dropout=0.05, learning_rate=2e-4, bits=args.bits, lora_dtype=lora_dtype, compile=compile,
                   attn_implementation=attn, deepspeed=deepspeed)
    err = None
    try:
        Q.fit(cfg, model, samples, prec=prec, pad_id=0, meta={"bench": name}, template_name="none (token ids)")
    except torch.OutOfMemoryError as exc:
        err = f"out of memory: {str(exc).splitlines()[0][:120]}"
    peak = peak_gib()
    log = [json.loads(line) for line in (out / name / "train_log.jsonl").read_text().splitlines()] if (out / name / "train_log.jsonl").exists() else []
    res = {"name": name, "attn": attn, "deepspeed": deepspeed, "lora_dtype": lora_dtype, "compile": compile, "rows": rows, "row_len": row_len, "grad_ckpt": gc_on, "optim": optim, "peak_gib": peak, "error": err}
    if log:
        losses = [r["loss"] for r in log]
        res.update(tokens_per_s=throughput([r["tokens"] for r in log], [r["elapsed_s"] for r in log], args.warmup),
                   loss_first=losses[0], loss_last=float(np.mean(losses[-3:])), steps=len(log), tokens=sum(r["tokens"] for r in log),
                   samples_per_step=None, losses=losses)
    return res


def objective_check(base, samples) -> dict:
    """The same 8 samples, padded vs packed into one row: the summed loss must agree (no cross-sample attention)."""
    dev = next(base.parameters()).device
    backbone, head = Q.parts(base)
    eight = samples[:8]
    padded = {k: v.to(dev) for k, v in D.pad_batch(eight, 0).items()}
    packed = {k: v.to(dev) for k, v in D.packed_batch([eight]).items()}
    ac = torch.autocast("cuda", dtype=torch.bfloat16, enabled=dev.type == "cuda")
    with torch.no_grad(), ac:
        a = float(Q.token_loss_sum(backbone, head, padded, chunk=4096, checkpoint=False))
        b = float(Q.token_loss_sum(backbone, head, packed, chunk=4096, checkpoint=False))
    n = sum(sum(t != -100 for t in s["targets"]) for s in eight)
    return {"padded_mean_loss": a / n, "packed_mean_loss": b / n, "rel_diff": abs(a - b) / abs(a)}


def profiled(fn, where: Path):
    """Run fn under the torch profiler; write GPU time per kernel family and the top kernels."""
    import re
    from collections import Counter

    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        result = fn()
    events = [e for e in prof.key_averages() if e.self_device_time_total > 0]
    families = [("gemm (cuBLAS/CUTLASS)", r"gemm|cutlass|sm90_|nvjet|ampere_|cublas"), ("NF4 dequantize (bitsandbytes)", r"dequant|kDequant"),
                ("flex attention", r"flex|triton_tem"), ("sdpa / flash / mem-efficient", r"fmha|flash|attention|efficient"),
                ("fused elementwise (inductor)", r"triton_(poi|red|per)"), ("cross-entropy / softmax", r"softmax|nll|cross|log_softmax"),
                ("optimizer", r"adam|multi_tensor|foreach"), ("copies / casts", r"copy|cast|cat|elementwise|vectorized|unrolled")]
    fam: Counter = Counter()
    for e in events:
        name = next((f for f, rx in families if re.search(rx, e.key, re.I)), "other")
        fam[name] += e.self_device_time_total
    total = sum(fam.values())
    lines = [f"GPU time by kernel family ({total / 1e6:.2f} s in all):"]
    lines += [f"  {f:34s} {t / 1e6:8.3f} s  {100 * t / total:5.1f}%" for f, t in fam.most_common()]
    lines += ["", "top kernels:"]
    lines += [f"  {e.self_device_time_total / 1e6:8.3f} s  {e.count:6d}x  {e.key[:110]}" for e in sorted(events, key=lambda e: -e.self_device_time_total)[:30]]
    where.write_text("\n".join(lines) + "\n")
    print("\n".join(lines[:12]), flush=True)
    return result


def settings(rows: int, steps: int) -> dict:
    """Every setting by name: keyword arguments for run_ours (n = samples it consumes)."""
    r = rows
    return {
        "baseline": dict(name="baseline: HF Trainer, padding, grad ckpt, paged_adamw_32bit, batch 8", n=8 * (steps + 1)),
        "mem": dict(name="ours-mem: packed 1x1024, grad ckpt, paged_adamw_8bit", rows=1, gc_on=True, optim="paged_adamw_8bit", chunk=1024, row_len=1024, n=400),
        "mem-bf16": dict(name="ours-mem-bf16: packed 1x1024, grad ckpt, paged_adamw_8bit, bf16 LoRA", rows=1, gc_on=True,
                         optim="paged_adamw_8bit", chunk=1024, row_len=1024, n=400, lora_dtype="bf16"),
        "fast": dict(name=f"ours-fast: packed {r}x1024, no grad ckpt", rows=r, gc_on=False, optim="adamw", chunk=4096, row_len=1024, n=2400),
        "fast-bf16": dict(name=f"ours-fast-bf16: packed {r}x1024, no grad ckpt, bf16 LoRA", rows=r, gc_on=False,
                          optim="adamw", chunk=4096, row_len=1024, n=2400, lora_dtype="bf16"),
        "gc": dict(name="ours-gc: packed 16x1024, grad ckpt", rows=16, gc_on=True, optim="adamw", chunk=4096, row_len=1024, n=2400),
        "gc-compile": dict(name="ours-gc-compile: packed 16x1024, grad ckpt, compiled layers", rows=16, gc_on=True, optim="adamw",
                           chunk=4096, row_len=1024, n=2400, compile=True),
        "fast-compile": dict(name=f"ours-fast-compile: packed {r}x1024, no grad ckpt, sdpa, compiled", rows=r,
                             gc_on=False, optim="adamw", chunk=4096, row_len=1024, n=2400, compile=True),
        "flex-compile": dict(name=f"ours-flex-compile: packed {r}x1024, no grad ckpt, flex attention, compiled", rows=r,
                             gc_on=False, optim="adamw", chunk=4096, row_len=1024, n=2400, compile=True, attn="flex_attention"),
        "flex16-compile": dict(name="ours-flex16-compile: packed 16x1024, no grad ckpt, flex attention, compiled", rows=16,
                               gc_on=False, optim="adamw", chunk=4096, row_len=1024, n=4800, compile=True, attn="flex_attention"),
        "flex16-bf16-compile": dict(name="ours-flex16-bf16-compile: packed 16x1024, no grad ckpt, flex, compiled, bf16 LoRA", rows=16,
                                    gc_on=False, optim="adamw", chunk=4096, row_len=1024, n=4800, compile=True, attn="flex_attention",
                                    lora_dtype="bf16"),
        "zero2": dict(name=f"ours-zero2: packed {r}x1024, no grad ckpt, flex, compiled, DeepSpeed ZeRO-2 (1 GPU)",
                      rows=r, gc_on=False, optim="adamw", chunk=4096, row_len=1024, n=2400, compile=True,
                      attn="flex_attention", deepspeed="zero2"),
    }


def child(args) -> None:
    """One setting in this process: nothing (compiled graphs, prepare_model_for_kbit_training's
    fp32 casts, allocator state) carries over from one setting to the next."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    out = Path(args.out)
    sh = shape(args.tiny)
    s = dict(settings(args.fast_rows, args.steps)[args.one])
    name, n = s.pop("name"), s.pop("n")
    if args.tiny:
        n = max(n // 16, 40)
    if args.tiny and not torch.cuda.is_available():
        if "optim" in s:
            s["optim"] = "adamw"  # bitsandbytes' paged optimizers want a GPU
        if "attn" in s:
            s["attn"] = "sdpa"  # flex attention has no backward on the CPU
    samples = make_samples(20000 if not args.tiny else 1500, sh["vocab_size"], seed=1)
    prec = M.pick_precision(args.bits)  # what `train qlora` picks: bf16 compute on the GPU, fp32 on the CPU
    t = time.perf_counter()
    base = M.load_base(Path(args.model_dir), prec)  # what `train qlora` does: from_pretrained with NF4 + double quant
    loaded = {"load_s": time.perf_counter() - t, "model_gib": torch.cuda.memory_allocated() / GiB if torch.cuda.is_available() else float("nan")}
    check = objective_check(base, samples) if args.check else None
    part = samples[args.offset:args.offset + n]
    if args.one == "baseline":
        run = lambda: run_baseline(base, part, args, out)  # noqa: E731
    else:
        run = lambda: run_ours(base, part, args, out, prec, name=args.one, **s)  # noqa: E731
    res = profiled(run, out / "profile.txt") if args.profile else run()
    res.update(name=name, **loaded)
    Path(args.results).write_text(json.dumps({"run": res, "objective_check": check}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--bits", type=int, default=4)
    ap.add_argument("--model-dir", default="/tmp/bench-llama")
    ap.add_argument("--out", default=os.environ.get("OUT", "/tmp/bench-out"))
    ap.add_argument("--modes", default="mem,flex16-compile,flex-compile,baseline")
    ap.add_argument("--fast-rows", type=int, default=8)
    ap.add_argument("--results", default=None, help="where results.json goes [default: --out/results.json], rewritten after every setting")
    ap.add_argument("--no-bnb-optim", dest="bnb_optim", action="store_false")
    ap.add_argument("--profile", action="store_true", help="profile the first setting's kernels (GPU time by kernel family) into --out/profile.txt")
    ap.add_argument("--one", help=argparse.SUPPRESS)  # internal: run this one setting in this process
    ap.add_argument("--offset", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--check", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        return child(args)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    res_file = Path(args.results) if args.results else out / "results.json"
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    sh = shape(args.tiny)
    print(f"device {gpu}; torch {torch.__version__}; model {sh}", flush=True)
    path = build_model_dir(Path(args.model_dir + ("-tiny" if args.tiny else "")), args.tiny)
    modes = args.modes.split(",")
    table = settings(args.fast_rows, args.steps)
    unknown = [m for m in modes if m not in table]
    if unknown:
        sys.exit(f"unknown --modes {', '.join(unknown)}; known: {', '.join(table)}")
    results = {"gpu": gpu, "torch": torch.__version__, "shape": sh, "steps": args.steps, "warmup": args.warmup,
               "one_process_per_setting": True, "runs": []}
    offset = 0
    for i, mode in enumerate(modes):  # each setting gets fresh samples from the same stream
        one = out / f".{mode}.json"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--one", mode, "--offset", str(offset), "--results", str(one),
               "--model-dir", str(path), "--out", str(out), "--steps", str(args.steps), "--warmup", str(args.warmup),
               "--bits", str(args.bits), "--fast-rows", str(args.fast_rows)]
        cmd += ["--tiny"] * args.tiny + ["--no-bnb-optim"] * (not args.bnb_optim) + ["--check"] * (i == 0) + ["--profile"] * (args.profile and i == 0)
        offset += table[mode]["n"] if not args.tiny else max(table[mode]["n"] // 16, 40)
        r = subprocess.run(cmd)
        if r.returncode != 0 or not one.exists():
            results["runs"].append({"name": table[mode]["name"], "error": f"exit {r.returncode}", "peak_gib": float("nan")})
        else:
            got = json.loads(one.read_text())
            results["runs"].append(got["run"])
            if got["objective_check"]:
                results["objective_check"] = got["objective_check"]
                print("objective check:", got["objective_check"], flush=True)
        print(json.dumps({k: v for k, v in results["runs"][-1].items() if k != "losses"}), flush=True)
        res_file.write_text(json.dumps(results, indent=2))

    base_tps = next((r["tokens_per_s"] for r in results["runs"] if r["name"].startswith("baseline") and "tokens_per_s" in r), None)
    print(f"\n{gpu}: {args.steps} steps each, tokens/s over the last {args.steps - args.warmup}, one process per setting")
    print(f"{'run':62s} {'tok/s':>9s} {'x base':>7s} {'peak GiB':>9s} {'loss 1st':>9s} {'loss end':>9s}")
    for r in results["runs"]:
        tps = r.get("tokens_per_s", float("nan"))
        ratio = tps / base_tps if base_tps else float("nan")
        print(f"{r['name'][:62]:62s} {tps:9.0f} {ratio:7.2f} {r['peak_gib']:9.2f} {r.get('loss_first', float('nan')):9.3f} {r.get('loss_last', float('nan')):9.3f}"
              + (f"  {r['error']}" if r.get("error") else ""))


if __name__ == "__main__":
    main()
