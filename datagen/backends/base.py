"""The backend protocol: what every backend implements (the errors it raises are in datagen.errors)."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Protocol, runtime_checkable


if TYPE_CHECKING:  # annotations only: importing a backend module needs no pydantic
    from datagen.records import Generation, Prompt


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
