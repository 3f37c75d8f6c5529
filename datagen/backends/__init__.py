"""Model backends behind one small protocol, so chat, completion and local modes are interchangeable.

A backend turns a batch of Prompts into Generations, one attempt, and says whether a failure
is worth retrying. Rate limits, retries, batching and logging live in datagen.client.

    base.py           the protocol and its errors
    openai_compat.py  Chat / Completion APIs (OpenAI or any compatible server)
    local.py          the embedded transformers model
"""

from __future__ import annotations

from datagen.backends.base import Backend, BackendError, BatchRefused, FatalBackendError, estimate_tokens

__all__ = ["Backend", "BackendError", "BatchRefused", "FatalBackendError", "estimate_tokens", "make_backend"]


def make_backend(api: str, model: str, **kw) -> Backend:
    """The backend for --api; `kw` goes to its constructor, whose defaults are config.py's."""
    if api in ("chat", "completion"):
        from datagen.backends.openai_compat import OpenAIBackend

        return OpenAIBackend(api, model, **kw)
    if api == "local":
        from datagen.backends.local import LocalBackend

        return LocalBackend(model, **kw)
    raise FatalBackendError(f"unknown --api {api!r}: use chat, completion or local")
