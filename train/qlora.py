"""The training loop, top to bottom: config, data, model, optimizer, steps, checkpoints, logs.

One optimizer step = `grad_accum` micro-batches. The loss is the mean over every target token
of the step (summed per micro-batch, divided by the step's token count), so padding, packing and
accumulation all give the same objective. A checkpoint holds the adapter weights and everything
else needed to continue exactly: optimizer, scheduler, step, data position and RNG states.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import torch

from datagen.errors import TrainError
from train import data as D
from train import distributed as dist
from train import model as M
from datagen.files import atomic_dir, replace_dir
from train.config import Config
from train.templates import get as get_template

STATE_FILE = "train_state.pt"
DS_TAG = "deepspeed"  # the sub-folder DeepSpeed writes its shards to inside checkpoint-N/
META_FILE = "datagen_train.json"  # beside an adapter: base model and template, for chat and merge


# -- loss ---------------------------------------------------------------------------------------

def _chunk_loss(h: torch.Tensor, weight: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
    logits = torch.nn.functional.linear(h, weight).float()
    return torch.nn.functional.cross_entropy(logits, tgt, ignore_index=D.IGNORE, reduction="sum")


def token_loss_sum(backbone, head, batch: dict, *, chunk: int, checkpoint: bool) -> torch.Tensor:
    """Sum of the cross-entropy over the batch's target tokens.

    Only positions with a target go through lm_head, in chunks; with `checkpoint` each chunk's
    logits are recomputed in backward instead of kept (the memory of a 64k vocabulary).
    """
    kwargs = {"input_ids": batch["input_ids"], "use_cache": False}
    if "position_ids" in batch:
        # No attention mask: transformers reads the restarting position_ids as packed samples and
        # builds a block-diagonal causal mask (tested: packed loss == padded loss).
        kwargs["position_ids"] = batch["position_ids"]
    else:
        kwargs["attention_mask"] = batch["attention_mask"]
    hidden = backbone(**kwargs).last_hidden_state
    tgt = batch["targets"]
    keep = tgt != D.IGNORE
    h, t = hidden[keep], tgt[keep]
    total = hidden.new_zeros((), dtype=torch.float32)
    for i in range(0, h.shape[0], chunk):
        if checkpoint and torch.is_grad_enabled():
            total = total + torch.utils.checkpoint.checkpoint(_chunk_loss, h[i:i + chunk], head.weight, t[i:i + chunk], use_reentrant=False)
        else:
            total = total + _chunk_loss(h[i:i + chunk], head.weight, t[i:i + chunk])
    return total


class TokenLoss(torch.nn.Module):
    """forward(batch) -> summed token loss; the unit DDP wraps."""

    def __init__(self, model, *, chunk: int, checkpoint: bool):
        super().__init__()
        self.model, self.chunk, self.checkpoint = model, chunk, checkpoint

    def forward(self, batch: dict) -> torch.Tensor:
        backbone, head = parts(self.model)
        return token_loss_sum(backbone, head, batch, chunk=self.chunk, checkpoint=self.checkpoint)

    def state_dict(self, *args, **kwargs):
        # What DeepSpeed's checkpoint stores: the trainable (LoRA) weights alone, not the frozen base
        # nor bitsandbytes' quantization state (about 100 MB for a 7B model).
        sd = super().state_dict(*args, **kwargs)
        prefix = kwargs.get("prefix", "")
        keep = {prefix + n for n, p in self.named_parameters() if p.requires_grad}
        return type(sd)((k, v) for k, v in sd.items() if k in keep)


def compile_layers(model) -> None:
    """Compile the decoder layers one by one: one graph, reused by every layer, in about a minute;
    the mask building and the loss stay eager (their shapes change from step to step)."""
    backbone, _ = parts(model)
    layers = getattr(backbone, "layers", None) or getattr(backbone, "h", None)
    if layers is None:
        raise TrainError("--compile: cannot find the decoder layers of this model")
    for layer in layers:
        layer.compile(dynamic=False)


def real_tokens(batch: dict) -> int:
    """Tokens that are not padding."""
    if "segments" in batch:
        return int((batch["segments"] > 0).sum())
    return int(batch["attention_mask"].sum())


def parts(model):
    """(backbone, lm_head) of a causal LM, through a peft wrapper if there is one."""
    lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    return getattr(lm, lm.base_model_prefix), lm.get_output_embeddings()


# -- optimizer and schedule -----------------------------------------------------------------------

def make_optimizer(params, cfg: Config, device: torch.device):
    if cfg.optim == "adamw":
        return torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay, fused=device.type == "cuda")
    if cfg.optim in ("paged_adamw_32bit", "paged_adamw_8bit"):
        import bitsandbytes as bnb

        cls = bnb.optim.PagedAdamW32bit if cfg.optim.endswith("32bit") else bnb.optim.PagedAdamW8bit
        return cls(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    raise TrainError(f"unknown --optim {cfg.optim!r}: use adamw, paged_adamw_32bit or paged_adamw_8bit")


def make_scheduler(opt, cfg: Config, total_steps: int):
    from transformers import get_scheduler

    try:
        return get_scheduler(cfg.lr_scheduler, opt, num_warmup_steps=cfg.warmup_steps, num_training_steps=total_steps)
    except ValueError as exc:
        raise TrainError(f"--lr-scheduler: {exc}".splitlines()[0]) from None


# -- checkpoints ---------------------------------------------------------------------------------

def rng_state() -> dict:
    import numpy as np

    st = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def set_rng_state(st: dict) -> None:
    import numpy as np

    random.setstate(st["python"])
    np.random.set_state(st["numpy"])
    torch.set_rng_state(st["torch"])
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


def save_adapter(model, out: Path, meta: dict) -> None:
    """Adapter weights + config + our meta, written to a temp dir and renamed into place."""
    with atomic_dir(out) as tmp:
        model.save_pretrained(tmp)
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2))


def save_checkpoint(model, opt, sched, step: int, batches: D.Batches, out_dir: Path, meta: dict, keep: int,
                    engine=None, rank: int = 0, world: int = 1) -> Path:
    """Called on every rank. Each writes its own data position and RNG state (ranks see different
    samples, so their dropout streams differ), and under DeepSpeed its own optimizer shard. Rank 0
    adds the adapter and the rest, then renames the folder into place."""
    ck = out_dir / f"checkpoint-{step}"
    part = out_dir / f".checkpoint-{step}.partial"
    if rank == 0:
        shutil.rmtree(part, ignore_errors=True)
        part.mkdir(parents=True)
    dist.barrier()
    torch.save({"data": batches.state(), "rng": rng_state()}, part / f"rank{rank}.pt")
    if engine is not None:  # ZeRO shards, through DeepSpeed's own checkpoint (TokenLoss.state_dict keeps it to LoRA weights)
        engine.save_checkpoint(str(part), tag=DS_TAG, exclude_frozen_parameters=True)
    dist.barrier()
    if rank == 0:
        model.save_pretrained(part)
        (part / META_FILE).write_text(json.dumps(meta, indent=2))
        state = {"step": step, "world": world, "deepspeed": engine is not None}
        if engine is None:
            state.update(optimizer=opt.state_dict(), scheduler=sched.state_dict())
        torch.save(state, part / STATE_FILE)  # written last: marks the checkpoint complete
        replace_dir(part, ck)
        for old in checkpoints(out_dir)[:-keep] if keep > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
    dist.barrier()
    return ck


def checkpoints(out_dir: Path) -> list[Path]:
    found = [p for p in out_dir.glob("checkpoint-*") if (p / STATE_FILE).is_file() and p.name.split("-")[-1].isdigit()]
    return sorted(found, key=lambda p: int(p.name.split("-")[-1]))


def load_checkpoint(model, opt, sched, batches: D.Batches, ck: Path, engine=None, rank: int = 0, world: int = 1) -> int:
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    state = torch.load(ck / STATE_FILE, weights_only=False)
    if state.get("deepspeed", False) != (engine is not None):
        how = "with" if state.get("deepspeed") else "without"
        raise TrainError(f"{ck.name} was written {how} --deepspeed: resume it the same way")
    if state.get("world", 1) != world:  # each rank's share of the data depends on the number of ranks
        raise TrainError(f"{ck.name} was written by {state.get('world', 1)} processes: resume with the same number, not {world}")
    if engine is not None:  # adapter weights, optimizer shard and scheduler from DeepSpeed's files
        engine.load_checkpoint(str(ck), tag=DS_TAG, load_module_strict=False)
    else:
        weights = load_file(ck / "adapter_model.safetensors", device=str(next(model.parameters()).device))
        set_peft_model_state_dict(model, weights)
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
    mine = torch.load(ck / f"rank{rank}.pt", weights_only=False)
    batches.restore(mine["data"])
    set_rng_state(mine["rng"])
    return state["step"]


# -- logs ----------------------------------------------------------------------------------------

def plot_loss(log_file: Path, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in log_file.read_text().splitlines() if line.strip()]
    if not rows:
        return
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot([r["step"] for r in rows], [r["loss"] for r in rows], lw=1)
    ax.set_xlabel("step")
    ax.set_ylabel("loss (target tokens)")
    ax.set_title(png.parent.name)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    tmp = png.with_name(f".{png.name}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, png)


# -- the run -------------------------------------------------------------------------------------

def prepare(cfg: Config, console=None):
    """Everything before the first step; returned so the benchmark can drive the same objects."""
    if cfg.deepspeed:  # a bad DeepSpeed config, or no deepspeed at all, fails here, before the model load
        dist.require_deepspeed()
        dist.deepspeed_config(cfg.deepspeed, micro_batch=cfg.per_device_batch_size, grad_accum=cfg.grad_accum,
                              max_grad_norm=cfg.max_grad_norm, world=dist.world_size())
    if cfg.max_steps <= 0 and cfg.epochs <= 0:
        raise TrainError("give --epochs > 0 or --max-steps > 0")
    if cfg.per_device_batch_size < 1 or cfg.grad_accum < 1:
        raise TrainError("--per-device-batch-size and --grad-accum must be at least 1")
    dialogs = D.load_dialogs(cfg.data)  # bad data fails before the (slow) model load
    path = M.resolve_model_path(cfg.model_name_or_path)
    remote = M.needs_remote_code(path) if cfg.trust_remote_code is None else cfg.trust_remote_code
    prec = M.pick_precision(cfg.bits, cfg.compute_dtype)
    tok = M.load_tokenizer(path, trust_remote_code=remote)
    template = get_template(cfg.template, model_type=M.model_type(path), tokenizer=tok)
    samples = D.encode_all(tok, template, dialogs, cfg.max_seq_length)
    model = M.load_base(path, prec, trust_remote_code=remote, attn=cfg.attn_implementation)
    if cfg.packing and not M.supports_packing(model):
        raise TrainError(f"--packing needs a model that takes position_ids; {model.config.model_type} does not (use padding)")
    model = M.add_lora(model, rank=cfg.lora_rank, alpha=cfg.lora_alpha, dropout=cfg.lora_dropout,
                       gradient_checkpointing=cfg.gradient_checkpointing, lora_dtype=cfg.lora_dtype)
    meta = {"base": str(path), "template": template.name, "bits": cfg.bits, "max_seq_length": cfg.max_seq_length}
    return {"path": path, "prec": prec, "tok": tok, "template": template, "samples": samples, "model": model, "meta": meta}


def run(cfg: Config, console=None) -> dict:
    from rich.console import Console

    console = console or Console(stderr=True)
    rank, world = dist.init()
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    out_dir = Path(cfg.output_dir)
    if not cfg.output_dir:
        raise TrainError("--output-dir is required")
    if not cfg.resume and checkpoints(out_dir):
        raise TrainError(f"{out_dir} already has checkpoints: pass --resume to continue, or pick another --output-dir")

    p = prepare(cfg, console)  # bad data or model fails here, before anything is written
    return fit(cfg, p["model"], p["samples"], prec=p["prec"], pad_id=p["tok"].pad_token_id, meta=p["meta"],
               template_name=p["template"].name, console=console, rank=rank, world=world)


def fit(cfg: Config, model, samples: list[dict], *, prec: M.Precision, pad_id: int, meta: dict, template_name: str = "",
        console=None, rank: int = 0, world: int = 1) -> dict:
    """The steps themselves, on a LoRA model and encoded samples (the benchmark calls this too)."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    console = console or Console(stderr=True)
    out_dir = Path(cfg.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    log_file = out_dir / "train_log.jsonl"
    n_train = sum(x.numel() for x in model.parameters() if x.requires_grad)
    n_all = sum(x.numel() * (2 if type(x).__name__ == "Params4bit" else 1) for x in model.parameters())  # 4-bit: two a byte
    amp = prec.dtype if prec.device.type == "cuda" and prec.dtype != torch.float32 else None  # autocast's dtype, if any
    ds = dist.deepspeed_config(cfg.deepspeed, micro_batch=cfg.per_device_batch_size, grad_accum=cfg.grad_accum,
                               max_grad_norm=cfg.max_grad_norm, world=world, autocast=amp) if cfg.deepspeed else None
    if rank == 0:
        console.print(f"[bold]train qlora[/]: {prec.describe()}; template {template_name}; "
                      f"{len(samples)} samples{' packed' if cfg.packing else ''}; LoRA r={cfg.lora_rank} on "
                      f"{', '.join(sorted(model.peft_config['default'].target_modules))}; "
                      f"{n_train / 1e6:.2f}M trainable of {n_all / 1e6:.1f}M parameters"
                      + dist.describe(ds, world))
    core = model
    step_fn = TokenLoss(core, chunk=cfg.loss_chunk, checkpoint=cfg.gradient_checkpointing)
    if world > 1 and ds is None:
        # DDP wraps the module whose forward is the loss, so its gradient all-reduce sees every use.
        step_fn = torch.nn.parallel.DistributedDataParallel(step_fn, device_ids=[dist.local_rank()] if prec.device.type == "cuda" else None)
    model = step_fn

    if world > 1:  # each rank trains on its own share; gradients are averaged (DDP) or reduce-scattered (ZeRO)
        samples = samples[rank::world]
    batches = D.Batches(samples, batch_size=cfg.per_device_batch_size, pad_id=pad_id, packing=cfg.packing,
                        row_len=cfg.max_seq_length, seed=cfg.seed, fixed=cfg.compile and cfg.packing)
    if cfg.compile:
        compile_layers(core)
    steps_per_epoch = max(1, math.ceil(batches.per_epoch / cfg.grad_accum))
    total = cfg.max_steps if cfg.max_steps > 0 else max(1, math.ceil(cfg.epochs * steps_per_epoch))
    opt = make_optimizer([x for x in model.parameters() if x.requires_grad], cfg, prec.device)
    sched = make_scheduler(opt, cfg, total)
    # DeepSpeed takes over backward, clipping and the optimizer and scheduler steps; its step()
    # acts only at the end of each grad_accum micro-batches.
    engine = dist.deepspeed_engine(step_fn, opt, sched, ds) if ds is not None else None
    if engine is not None:
        model = step_fn = engine

    step = 0
    if cfg.resume:
        found = checkpoints(out_dir)
        if found:
            step = load_checkpoint(core, opt, sched, batches, found[-1], engine=engine, rank=rank, world=world)
            if rank == 0:
                console.print(f"resumed from {found[-1].name} at step {step}")
            keep = [line for line in log_file.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= step] if log_file.exists() else []
            log_file.write_text("".join(line + "\n" for line in keep))  # steps after the checkpoint are redone
        elif rank == 0:
            console.print("--resume: no checkpoint yet, starting at step 0")
    elif log_file.exists():
        log_file.unlink()

    autocast = torch.autocast(prec.device.type, dtype=prec.dtype, enabled=amp is not None)
    model.train()
    t0, tokens_total, last = time.perf_counter(), 0, {}
    progress = Progress(TextColumn("step {task.completed}/{task.total}"), BarColumn(), TextColumn("{task.description}"),
                        TimeRemainingColumn(), console=console, disable=rank != 0)
    with progress:
        task = progress.add_task("", total=total, completed=step)
        while step < total:
            ts = time.perf_counter()
            micro = [{k: v.to(prec.device) for k, v in batches.next().items()} for _ in range(cfg.grad_accum)]
            n_tgt = sum(int((m["targets"] != D.IGNORE).sum()) for m in micro)
            n_tok = sum(real_tokens(m) for m in micro)
            loss_sum = 0.0
            lr = sched.get_last_lr()[0]
            for i, m in enumerate(micro):
                sync = world == 1 or i == len(micro) - 1 or engine is not None
                ctx = model.no_sync() if not sync else contextlib.nullcontext()
                with ctx, autocast:
                    ls = step_fn(m)
                if engine is not None:
                    engine.backward(ls / max(n_tgt, 1), scale_wrt_gas=False)  # already a mean over the whole step
                    engine.step()
                else:
                    (ls / max(n_tgt, 1)).backward()
                loss_sum += float(ls.detach())
            if engine is not None:
                grad_norm = float(engine.get_global_grad_norm() or 0.0)
            else:
                grad_norm = float(torch.nn.utils.clip_grad_norm_([x for x in model.parameters() if x.requires_grad], cfg.max_grad_norm)) if cfg.max_grad_norm > 0 else 0.0
                opt.step()
                sched.step()
                opt.zero_grad(set_to_none=True)
            step += 1
            if prec.device.type == "cuda":
                torch.cuda.synchronize()  # so the step time (and tokens/s) includes the optimizer's kernels
            dt = time.perf_counter() - ts
            tokens_total += n_tok
            loss = loss_sum / max(n_tgt, 1)
            if not math.isfinite(loss):
                raise TrainError(f"loss is {loss} at step {step} ({prec.describe()}); fp16 is the usual cause")
            last = {"step": step, "loss": round(loss, 6), "lr": lr, "grad_norm": round(grad_norm, 6), "tokens": n_tok,
                    "target_tokens": n_tgt, "tokens_per_s": round(n_tok / dt, 1), "elapsed_s": round(time.perf_counter() - t0, 3)}
            if rank == 0:
                if step % cfg.logging_steps == 0 or step == total:
                    with open(log_file, "a") as f:
                        f.write(json.dumps(last) + "\n")
                progress.update(task, completed=step, description=f"loss {loss:.4f}  lr {lr:.2e}  {n_tok / dt:,.0f} tok/s")
            if cfg.save_steps > 0 and (step % cfg.save_steps == 0 or step == total):
                save_checkpoint(core, opt, sched, step, batches, out_dir, meta, cfg.save_total_limit, engine=engine, rank=rank, world=world)
    if rank == 0:
        save_adapter(core, out_dir / "adapter", meta)
        args_file = out_dir / "train_args.json"
        (out_dir / ".train_args.json.tmp").write_text(json.dumps({k: v for k, v in asdict(cfg).items() if k != "extra"}, indent=2))
        os.replace(out_dir / ".train_args.json.tmp", args_file)
        if log_file.exists():
            plot_loss(log_file, out_dir / "loss.png")
        console.print(f"done: {step} steps; adapter in {out_dir / 'adapter'}; log {log_file}; plot {out_dir / 'loss.png'}")
    return last

