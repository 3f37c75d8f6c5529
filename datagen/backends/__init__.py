"""Model backends behind one small protocol, so chat, completion and local modes are interchangeable.

A backend turns a batch of Prompts into Generations, one attempt, and says whether a failure
is worth retrying. Rate limits, retries, batching and logging live in datagen.client.

    base.py           the protocol (its errors: datagen.errors)
    openai_compat.py  Chat / Completion APIs (OpenAI or any compatible server)
    local.py          the embedded transformers model
"""

from __future__ import annotations

from datagen.backends.base import Backend, estimate_tokens
from datagen.errors import BackendError, BatchRefused, FatalBackendError

__all__ = ["Backend", "BackendError", "BatchRefused", "FatalBackendError", "estimate_tokens", "make_backend"]


def make_backend(api: str, model: str, **kw) -> Backend:
    if api in ("chat", "completion"):
        from datagen.backends.openai_compat import OpenAIBackend

        return OpenAIBackend(
            api,
            model,
            api_key=kw.get("api_key"),
            base_url=kw.get("base_url"),
            timeout=kw.get("timeout", 120.0),
            prompts_per_request=kw.get("prompts_per_request", 1),
            context_window=kw.get("context_window", 4096),
        )
    if api == "local":
        from datagen.backends.local import LocalBackend

        return LocalBackend(model, batch_size=kw.get("batch_size", 8), context_window=kw.get("context_window"))
    raise FatalBackendError(f"unknown --api {api!r}: use chat, completion or local")
