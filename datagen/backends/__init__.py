"""Model backends behind one small protocol, so chat, completion and local modes are interchangeable.

A backend turns a batch of Prompts into Generations, one attempt, and says whether a failure
is worth retrying. Rate limits, retries, batching and logging live in datagen.client.

    base.py           the protocol (its errors: datagen.errors)
    openai_compat.py  Chat / Completion APIs (OpenAI or any compatible server)
    local.py          the embedded model through transformers (CPU or GPU)
    llamacpp.py       the embedded model through llama.cpp in-process (CPU, GGUF files)
"""

from __future__ import annotations

from datagen.backends.base import Backend, estimate_tokens
from datagen.errors import BackendError, BatchRefused, FatalBackendError

__all__ = ["Backend", "BackendError", "BatchRefused", "FatalBackendError", "estimate_tokens", "make_backend"]


def make_backend(api: str, model: str, **kw) -> Backend:
    """The backend for --api; `kw` goes to its constructor, whose defaults are config.py's."""
    if api in ("chat", "completion"):
        from datagen.backends.openai_compat import OpenAIBackend

        return OpenAIBackend(api, model, **kw)
    if api == "local":
        from datagen.backends.local import LocalBackend

        engine = local_engine(model, kw.get("engine") or "auto")
        if engine == "llamacpp":
            from datagen.backends.llamacpp import LlamaCppBackend

            return LlamaCppBackend(model, batch_size=kw.get("batch_size", 8), context_window=kw.get("context_window"))
        return LocalBackend(model, batch_size=kw.get("batch_size", 8), context_window=kw.get("context_window"))
    raise FatalBackendError(f"unknown --api {api!r}: use chat, completion or local")


def local_engine(model: str | None, engine: str = "auto") -> str:
    """The in-process engine for --api local: auto is llama.cpp (config.CPU_ENGINE) for a GGUF model on a
    machine without CUDA, transformers otherwise."""
    from datagen import config
    from datagen.backends.local import resolve_model

    if engine == "vllm":
        raise FatalBackendError("--engine vllm runs in Ray replicas only: add --ray, or use --engine auto|transformers|llamacpp")
    if engine not in ("auto", "transformers", "llamacpp"):
        raise FatalBackendError(f"unknown --engine {engine!r}: use auto, transformers, llamacpp or vllm")
    gguf = resolve_model(model)[1] is not None
    if engine == "llamacpp" and not gguf:
        raise FatalBackendError(f"--engine llamacpp needs a .gguf model, not {model!r}")
    if engine != "auto":
        return engine
    return config.CPU_ENGINE if gguf and not _cuda() else "transformers"


def _cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()
