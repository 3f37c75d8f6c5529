"""The backend protocol and its errors: what every backend implements and raises."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from datagen.errors import DatagenError, Unavailable

if TYPE_CHECKING:  # annotations only: importing a backend module needs no pydantic
    from datagen.records import Generation, Prompt


class BackendError(DatagenError):
    """One failed attempt. `retryable` failures are tried again; others fail the prompt."""

    def __init__(self, message: str, *, retryable: bool, retry_after: float | None = None):
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after


class BatchRefused(BackendError):
    """The server refused a request carrying several prompts (llama.cpp's server takes one): send them one by one."""

    def __init__(self, message: str):
        super().__init__(message, retryable=True)


class FatalBackendError(Unavailable):
    """Nothing will work (bad key, unknown model, unreachable server): stop the run."""


@runtime_checkable
class Backend(Protocol):
    name: str
    model: str
    max_batch: int  # prompts per call
    context_window: int

    def count_tokens(self, text: str) -> int: ...

    async def check(self) -> None:
        """Fail fast with FatalBackendError before a run starts."""

    async def complete(self, prompts: list[Prompt]) -> list[Generation]: ...

    async def aclose(self) -> None: ...


_CJK = re.compile(r"[\u3000-\u9fff\uff00-\uffef]")


def estimate_tokens(text: str) -> int:
    """Rough BPE count for servers whose tokenizer we lack: ~4 chars per token, 1 per CJK char."""
    cjk = len(_CJK.findall(text))
    return cjk + (len(text) - cjk + 3) // 4
