"""Folding a LoRA adapter into its base model, saved as a plain 16- or 32-bit HF model.

Never into a quantized base: merging into 4-bit (or 8-bit) weights rounds the adapter's delta
away and gives a model that is not the one trained. We refuse and say so.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from datagen.errors import TrainError
from train import model as M
from datagen.files import atomic_dir
from train.qlora import META_FILE

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def find_adapter(path: str | Path) -> Path:
    """The adapter folder: `path` itself, or the adapter/ inside a training output dir."""
    path = Path(path)
    if not (path / "adapter_config.json").is_file() and (path / "adapter" / "adapter_config.json").is_file():
        return path / "adapter"
    return path


def read_meta(adapter: Path) -> dict:
    if not (adapter / "adapter_config.json").is_file():
        raise TrainError(f"no adapter in {adapter} (expected adapter_config.json; give the run's output dir, its adapter/ or a checkpoint-N/ folder)")
    meta_file = adapter / META_FILE
    return json.loads(meta_file.read_text()) if meta_file.is_file() else {}


def load_with_adapter(base: str | None, adapter: Path, *, dtype: torch.dtype, bits: int = 16, device: str = "cpu"):
    """(model with adapter, tokenizer, meta); `base` defaults to the one the adapter was trained on."""
    from peft import PeftModel

    adapter = find_adapter(adapter)
    meta = read_meta(adapter)
    base = base or meta.get("base")
    if not base:
        raise TrainError("give --base: the adapter does not record its base model")
    path = M.resolve_model_path(base)
    remote = M.needs_remote_code(path)
    tok = M.load_tokenizer(path, trust_remote_code=remote)
    prec = M.Precision(torch.device(device), bits, dtype)
    lm = M.load_base(path, prec, trust_remote_code=remote)
    try:
        model = PeftModel.from_pretrained(lm, adapter)
    except Exception as exc:
        raise TrainError(f"cannot apply adapter {adapter} to {path}: {exc}".splitlines()[0]) from None
    model.eval()
    return model, tok, meta


def merge(base: str | None, adapter: str | Path, out: str | Path, *, dtype: str = "bf16", bits: int = 16) -> Path:
    if bits in (4, 8):
        raise TrainError(f"refusing to merge into a {bits}-bit model: the merged weights would be re-quantized and lose the "
                         "adapter; merge into the 16-bit base (--bits 16), then quantize the result if you need to")
    if dtype not in DTYPES:
        raise TrainError(f"unknown --dtype {dtype!r}: use bf16, fp16 or fp32")
    adapter, out = find_adapter(adapter), Path(out)
    base = base or read_meta(adapter).get("base")
    if base:
        cfg_file = M.resolve_model_path(base) / "config.json"
        qc = json.loads(cfg_file.read_text()).get("quantization_config") or {}
        if qc.get("load_in_4bit") or qc.get("load_in_8bit") or qc.get("quant_method") in ("bitsandbytes", "gptq", "awq"):
            raise TrainError(f"refusing to merge into a quantized base ({cfg_file.parent}): give the 16-bit base model")
    model, tok, meta = load_with_adapter(base, adapter, dtype=DTYPES[dtype])
    merged = model.merge_and_unload()
    with atomic_dir(out) as tmp:
        merged.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        (tmp / META_FILE).write_text(json.dumps({**meta, "merged_from": str(adapter), "base": str(tmp.parent / out.name)}, indent=2))
    return out
