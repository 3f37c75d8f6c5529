"""Training on several processes: DDP under torchrun, or DeepSpeed ZeRO stage 1/2 with --deepspeed.

Either way every process keeps a whole copy of the (4-bit) base on its own GPU
(`device_map={"": local_rank}`) and trains on its own share of the samples. DDP all-reduces the
LoRA gradients; ZeRO-2 reduce-scatters them and splits the AdamW state across ranks, so each GPU
holds 1/N of both. ZeRO-3 would shard the frozen 4-bit weights themselves, which bitsandbytes'
packed tensors do not survive: refused. DeepSpeed is an existing engine, used as documented
(`deepspeed.initialize`, `engine.backward`, `engine.step`, `save_checkpoint`/`load_checkpoint`).
"""

from __future__ import annotations

import copy
import json
import os
import socket
from pathlib import Path

import torch

from datagen.errors import TrainError

# --deepspeed zero2: the usual QLoRA ZeRO-2 settings. Batch sizes, accumulation and clipping are
# filled in from our own flags so the two can never disagree.
ZERO2 = {
    "zero_optimization": {"stage": 2, "overlap_comm": True, "contiguous_gradients": True,
                          "reduce_scatter": True, "reduce_bucket_size": 200_000_000, "allgather_bucket_size": 200_000_000},
    "zero_allow_untested_optimizer": True,  # our torch AdamW / bitsandbytes paged AdamW, not DeepSpeed's fused ones (no op builds)
    "wall_clock_breakdown": False,
    "steps_per_print": 1 << 30,  # our progress bar reports; DeepSpeed's own lines would interleave with it
}
BUILTIN = {"zero2": ZERO2, "zero-2": ZERO2, "zero1": {**ZERO2, "zero_optimization": {"stage": 1}}}


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", 0))


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", 1))


def init(*, need_group: bool = False) -> tuple[int, int]:
    """(rank, world size). Under torchrun / accelerate launch / deepspeed, one process per GPU joined
    by NCCL (gloo on CPUs). DeepSpeed wants a process group even alone: then a one-rank group."""
    world = world_size()
    if torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if world > 1:
        if torch.cuda.is_available():
            torch.cuda.set_device(local_rank())
        torch.distributed.init_process_group(backend)
    elif need_group:
        with socket.socket() as s:  # a free port on loopback for the one-rank rendezvous
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        # What a launcher would have set (DeepSpeed checks LOCAL_RANK itself).
        for k, v in {"LOCAL_RANK": "0", "RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}.items():
            os.environ.setdefault(k, v)
        torch.distributed.init_process_group(backend)
    return (torch.distributed.get_rank() if world > 1 else 0), world


def deepspeed_config(spec: str, *, micro_batch: int, grad_accum: int, max_grad_norm: float, world: int,
                     autocast: torch.dtype | None = None) -> dict:
    """`zero2` (or `zero1`), or a DeepSpeed JSON file; checked before anything slow happens.
    `autocast`: the dtype our loop's torch.autocast computes in, if any."""
    if spec.lower() in BUILTIN:
        ds = copy.deepcopy(BUILTIN[spec.lower()])
    else:
        p = Path(spec)
        if not p.is_file():
            raise TrainError(f"--deepspeed: give zero2, zero1 or a DeepSpeed JSON file; {spec!r} is neither")
        try:
            ds = json.loads(p.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise TrainError(f"--deepspeed: cannot parse {p}: {exc}".splitlines()[0]) from None
        if not isinstance(ds, dict):
            raise TrainError(f"--deepspeed: {p} must be a JSON object")
    stage = (ds.get("zero_optimization") or {}).get("stage", 0)
    if stage not in (0, 1, 2):
        raise TrainError(f"--deepspeed: ZeRO stage {stage} is not supported with a 4-bit base (it would shard the packed "
                         "bitsandbytes weights); use stage 2")
    for key in ("optimizer", "scheduler", "torch_autocast"):
        if key in ds:
            raise TrainError(f"--deepspeed: remove the {key!r} section; --optim, --lr-scheduler and --compute-dtype set it")
    for key in ("fp16", "bf16"):
        if (ds.get(key) or {}).get("enabled") in (True, "true"):
            # DeepSpeed would cast the whole module, 4-bit weights included; autocast does the
            # bf16 compute instead and the LoRA weights stay as --lora-dtype says.
            raise TrainError(f"--deepspeed: remove {key}.enabled; the compute dtype comes from --compute-dtype")
    ours = {"train_micro_batch_size_per_gpu": micro_batch, "gradient_accumulation_steps": grad_accum,
            "gradient_clipping": max_grad_norm, "train_batch_size": micro_batch * grad_accum * world}
    for key, value in ours.items():
        if ds.get(key, "auto") not in ("auto", value):
            raise TrainError(f"--deepspeed: {key} is {ds[key]} in the config but {value} from the flags; "
                             "set it with the flags (or \"auto\")")
        ds[key] = value
    if autocast is not None:
        # Without this section DeepSpeed switches our autocast off inside its forward, and the
        # model silently runs in fp32 (seen on an H200: 28% slower, 18 GiB more). The empty list
        # keeps gradient reduction in fp32, as DDP does.
        ds["torch_autocast"] = {"enabled": True, "dtype": str(autocast).replace("torch.", ""), "lower_precision_safe_modules": []}
    return ds


def require_deepspeed() -> None:
    import importlib.util

    if importlib.util.find_spec("deepspeed") is None:
        raise TrainError("--deepspeed needs the deepspeed package: pip install 'datagen[deepspeed]'")


def deepspeed_engine(module, optimizer, scheduler, ds: dict):
    require_deepspeed()
    import deepspeed
    from deepspeed.utils import logger

    logger.setLevel("WARNING")  # its INFO lines (config dumps, timers) would drown our progress display
    init(need_group=True)
    engine, _, _, _ = deepspeed.initialize(model=module, optimizer=optimizer, lr_scheduler=scheduler, config=ds,
                                           model_parameters=[p for p in module.parameters() if p.requires_grad])
    return engine


def describe(ds: dict | None, world: int) -> str:
    if ds is not None:
        return f"; DeepSpeed ZeRO-{ds.get('zero_optimization', {}).get('stage', 0)} over {world} process{'es' if world > 1 else ''}"
    return f"; DDP over {world} processes" if world > 1 else ""


def barrier() -> None:
    if torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1:
        torch.distributed.barrier()
