"""Loading a base model for QLoRA (4-bit NF4 + double quantization, or 8/16 bits) and adding LoRA.

LoRA goes on every linear layer except the output head, found by scanning the modules, so
families we do not list by name still work. The names we expect per family are checked so a
surprising architecture is reported rather than silently half-adapted.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from datagen.errors import TrainError
from train.distributed import local_rank

# The linear layers QLoRA adapts in the families we know; the scan must find all of them.
KNOWN_TARGETS = {
    "llama": {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"},
    "baichuan": {"W_pack", "o_proj", "gate_proj", "up_proj", "down_proj"},
    "bloom": {"query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"},
}


@dataclass
class Precision:
    device: torch.device
    bits: int
    dtype: torch.dtype  # compute dtype

    def describe(self) -> str:
        dt = str(self.dtype).replace("torch.", "")
        w = {4: "4-bit NF4 weights (double quant)", 8: "8-bit weights"}.get(self.bits, f"{dt} weights")
        return f"device {self.device}, {w}, {dt} compute"


def resolve_model_path(name: str) -> Path:
    """A HF model directory, a .gguf file, or the built-in SmolLM2 name, as a loadable HF directory."""
    p = Path(name).expanduser()
    if p.is_dir() and (p / "config.json").is_file():
        return p  # a plain HF directory needs nothing from datagen's generation side
    try:
        from datagen.backends.local import BUILTIN, builtin_gguf, materialize

        if name.lower() in BUILTIN:
            return materialize(builtin_gguf())
        if p.is_file() and p.suffix == ".gguf":
            return materialize(p)
    except TrainError:
        raise
    except Exception as exc:
        raise TrainError(f"cannot prepare model {name!r}: {exc}".splitlines()[0]) from None
    raise TrainError(f"model not found: {name!r} (give a HF model directory, a .gguf file, or 'smollm2')")


def model_type(path: Path) -> str:
    try:
        return json.loads((path / "config.json").read_text()).get("model_type", "")
    except (OSError, json.JSONDecodeError) as exc:
        raise TrainError(f"cannot read {path / 'config.json'}: {exc}") from None


def needs_remote_code(path: Path) -> bool:
    # Baichuan ships its modeling code beside the weights; nothing else we support needs it.
    return model_type(path).lower().startswith("baichuan")


def pick_precision(bits: int, dtype: str = "auto") -> Precision:
    if bits not in (4, 8, 16, 32):
        raise TrainError(f"--bits must be 4, 8, 16 or 32, not {bits}")
    if torch.cuda.is_available():
        device = torch.device("cuda", local_rank())
        auto = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    else:
        # CPU: float32 compute; bf16 matmuls on a small CPU are slower and gain nothing here.
        device, auto = torch.device("cpu"), torch.float32
    names = {"auto": auto, "bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
    if dtype not in names:
        raise TrainError(f"unknown compute dtype {dtype!r}: use auto, bf16, fp16 or fp32")
    dt = torch.float32 if bits == 32 else names[dtype]
    if dt == torch.float16:
        warnings.warn("fp16 compute: QLoRA in fp16 often ends in loss 0 or NaN; prefer bf16 where the GPU has it", stacklevel=2)
    return Precision(device, bits, dt)


def load_tokenizer(path: Path, *, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except Exception as exc:
        raise TrainError(f"cannot load tokenizer from {path}: {exc}".splitlines()[0]) from None
    if tok.pad_token_id is None:
        # Baichuan (and LLaMA) have no pad token; labels are -100 on pads, so EOS serves.
        tok.pad_token = tok.eos_token if tok.eos_token is not None else tok.unk_token
    tok.padding_side = "right"
    return tok


def load_base(path: Path, prec: Precision, *, trust_remote_code: bool = False, attn: str | None = None):
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    kwargs: dict = {"dtype": prec.dtype, "trust_remote_code": trust_remote_code}
    if prec.bits == 4:
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=prec.dtype)
    elif prec.bits == 8:
        kwargs["quantization_config"] = BitsAndBytesConfig(load_in_8bit=True)
    # One whole copy per process: under torchrun each rank keeps its model on its own GPU (DDP).
    gpu = prec.device.index if prec.device.index is not None else local_rank()
    kwargs["device_map"] = {"": gpu if prec.device.type == "cuda" else "cpu"}
    if attn:  # else transformers' default: sdpa where the architecture has it (LLaMA), eager otherwise (BLOOM)
        kwargs["attn_implementation"] = attn
    try:
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    except Exception as exc:
        raise TrainError(f"cannot load model from {path}: {exc}".splitlines()[0]) from None
    model.config.use_cache = False
    return model


def lora_targets(model) -> list[str]:
    """Leaf names of every linear layer but the output head (bitsandbytes layers subclass nn.Linear)."""
    head = model.get_output_embeddings()
    names = set()
    for full, mod in model.named_modules():
        if isinstance(mod, torch.nn.Linear) and mod is not head and not full.endswith("lm_head"):
            names.add(full.rsplit(".", 1)[-1])
    if not names:
        raise TrainError("no linear layer found to put LoRA on")
    family = next((f for f in KNOWN_TARGETS if model.config.model_type.lower().startswith(f)), None)
    if family and not KNOWN_TARGETS[family] <= names:
        missing = ", ".join(sorted(KNOWN_TARGETS[family] - names))
        raise TrainError(f"{model.config.model_type} model lacks the expected linear layers: {missing}")
    return sorted(names)


def add_lora(model, *, rank: int, alpha: float, dropout: float, gradient_checkpointing: bool, lora_dtype: str = "fp32"):
    from peft import LoraConfig, get_peft_model

    for p in model.parameters():
        p.requires_grad_(False)
    if gradient_checkpointing:
        # Non-reentrant checkpointing needs no grad-requiring inputs, so frozen embeddings are fine.
        with warnings.catch_warnings():  # renamed activation_checkpointing_* in transformers 5.2x; the old name works on both
            warnings.simplefilter("ignore", FutureWarning)
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    cfg = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=lora_targets(model),
                     bias="none", task_type="CAUSAL_LM")
    model = get_peft_model(model, cfg)
    if lora_dtype == "bf16":
        # As the QLoRA reference code does under bf16: adapter weights in bf16 skip peft's fp32 casts of
        # every adapted layer's input (faster, less memory), at the cost of coarser weight updates.
        for p in model.parameters():
            if p.requires_grad:
                p.data = p.data.to(torch.bfloat16)
    elif lora_dtype != "fp32":
        raise TrainError(f"unknown --lora-dtype {lora_dtype!r}: use fp32 or bf16")
    return model


def supports_packing(model) -> bool:
    # Packing relies on position_ids restarting per sample; ALiBi models (BLOOM) take none.
    import inspect

    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "position_ids" in inspect.signature(inner.forward).parameters
