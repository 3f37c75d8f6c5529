"""`train qlora`'s options, declared once: the dataclass the loop reads, its defaults and the flags' help.

Light on purpose (no torch): the CLI builds its options from these fields."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path

from datagen.errors import TrainError


def opt(default, help: str | None = None, *, flag: bool = True):  # noqa: A002
    """A field with the help its flag shows; flag=False: a key for --config files only."""
    return field(default=default, metadata={"help": help, "flag": flag})


@dataclass
class Config:
    data: str = opt("", "Training file (alpaca JSON/JSONL, sharegpt conversations/messages) or folder (a LLaMA-Factory dataset_dir with one dataset, a Hugging Face dataset folder).")
    model_name_or_path: str = opt("", "HF model directory, a .gguf file, or 'smollm2' (built in).")
    output_dir: str = opt("", "Where checkpoints, adapter/, train_log.jsonl and loss.png go.")
    template: str = opt("auto", "auto | alpaca | baichuan | llama2 | bloomz | chatml")
    max_seq_length: int = opt(1024)
    lora_rank: int = opt(64)
    lora_alpha: float = opt(16.0)
    lora_dropout: float = opt(0.05)
    learning_rate: float = opt(2e-4)
    lr_scheduler: str = opt("constant_with_warmup", "Any transformers schedule name.")
    warmup_steps: int = opt(0)
    epochs: float = opt(1.0)
    max_steps: int = opt(0, "> 0: stop after this many optimizer steps (overrides --epochs).")
    per_device_batch_size: int = opt(8, "Samples (or packed rows) per micro-batch.")
    grad_accum: int = opt(1)
    packing: bool = opt(False, "Concatenate samples into rows of --max-seq-length, no padding, no cross-sample attention.")
    resume: bool = opt(False, "Continue from the last checkpoint in --output-dir.")
    bits: int = opt(4, "4 (NF4 + double quant) | 8 | 16")
    compute_dtype: str = opt("auto", "auto (bf16 on GPUs that have it, fp32 on CPU) | bf16 | fp16 | fp32")
    gradient_checkpointing: bool = opt(True)
    lora_dtype: str = opt("fp32", "fp32 | bf16: adapter weights' dtype (bf16: less memory, as the QLoRA reference code)")
    # None: transformers' default (sdpa for LLaMA); flash_attention_2 needs flash-attn
    attn_implementation: str | None = opt(None, "sdpa | eager | flash_attention_2 | flex_attention [default: transformers' choice]")
    # packed rows then get one fixed length
    compile: bool = opt(False, "torch.compile each decoder layer (GPU; best with --packing).")
    optim: str = opt("adamw", "adamw | paged_adamw_32bit | paged_adamw_8bit")
    weight_decay: float = opt(0.0, flag=False)
    max_grad_norm: float = opt(0.3)
    save_steps: int = opt(100, "0: no checkpoints (the final adapter is still written).")
    save_total_limit: int = opt(2)
    logging_steps: int = opt(1, flag=False)
    seed: int = opt(42)
    # tokens per lm_head chunk: the full [tokens, vocab] logits never exist at once
    loss_chunk: int = opt(4096, flag=False)
    deepspeed: str | None = opt(None, "zero2 | zero1 | a DeepSpeed JSON file: ZeRO across the torchrun/deepspeed processes (stage 3 is refused with a 4-bit base).")
    trust_remote_code: bool | None = opt(None, flag=False)  # None: only for families that need it (baichuan)
    extra: dict = field(default_factory=dict)

    @classmethod
    def keys(cls) -> set[str]:
        return {f.name for f in fields(cls)} - {"extra"}


def load_config_file(path: str | Path) -> dict:
    """YAML or JSON with the flags' names (dashes or underscores)."""
    p = Path(path)
    if not p.is_file():
        raise TrainError(f"config file not found: {p}")
    try:
        if p.suffix in (".yaml", ".yml"):
            import yaml

            raw = yaml.safe_load(p.read_text()) or {}
        else:
            raw = json.loads(p.read_text())
    except Exception as exc:
        raise TrainError(f"cannot parse config {p}: {exc}".splitlines()[0]) from None
    if not isinstance(raw, dict):
        raise TrainError(f"config {p} must be a mapping of option names to values")
    out = {k.replace("-", "_"): v for k, v in raw.items()}
    unknown = set(out) - Config.keys()
    if unknown:
        raise TrainError(f"unknown keys in {p}: {', '.join(sorted(unknown))}")
    return out
