"""The Batch API of a provider, as batch mode uses it: the whole contract between datagen/batch/run.py
and a provider. OpenAI's (datagen/batch/openai_batches.py) is the one implementation; a second
provider is one module implementing `BatchProvider` plus a branch in `provider_for`.

The contract, in the order a batch meets it:
  upload    the input file, from our lines (`line` formats one request in the provider's format);
  create    one try, carrying our idempotency key; a failed create may still have made the batch,
  find      so the caller looks the batch up by key before it creates again (the write-ahead rule);
  poll      the batch as it stands (`RemoteBatch`, statuses in our words: see `ENDED`);
  results   its answers and errors, one `Generation` per line it has, keyed by our request id;
  cancel    ask it to stop (finished lines are kept and come back through `results`);
  delete    a file we no longer need (input, output, error), once its results are stored.
Errors: `BackendError` (retryable or not) and `FatalBackendError`, as the online backends raise.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

from datagen.errors import InputError

if TYPE_CHECKING:
    from datagen.records import Generation, Prompt

# Statuses a provider's batch may have (a provider maps its own onto these); after ENDED it changes no more.
STATUSES = ("validating", "in_progress", "finalizing", "completed", "expired", "cancelling", "cancelled", "failed")
ENDED = ("completed", "expired", "cancelled", "failed")


@dataclass
class RemoteBatch:
    """A provider's batch as last seen."""

    id: str
    status: str
    output_file_id: str | None = None
    error_file_id: str | None = None
    completed: int = 0
    failed: int = 0
    errors: list[dict] = field(default_factory=list)  # why a batch failed: [{code, message, line, param}]


@dataclass
class Results:
    answers: dict[int, Generation]  # request id -> answer (text, or error for a failed line)
    unreadable: int = 0  # lines we could not read (not ours, or garbled)


class BatchProvider(Protocol):
    endpoint: str  # what the lines ask for (stored with the batch)
    max_lines: int  # per input file
    max_bytes: int

    def line(self, request_id: int, body: str) -> bytes:
        """One request of an input file; `body` is the JSON the online backend would send."""

    async def upload(self, name: str, data: bytes) -> str: ...

    async def create(self, input_file_id: str, key: str) -> RemoteBatch:
        """One try; on failure the caller looks the key up with `find` before creating again."""

    async def find(self, key: str, since: datetime) -> RemoteBatch | None:
        """The provider's batch created with this key (no earlier than about `since`), or None."""

    async def poll(self, batch_id: str) -> RemoteBatch: ...

    async def results(self, batch: RemoteBatch, prompts: dict[int, Prompt]) -> Results:
        """Every line the ended batch has an outcome for, among `prompts` (request id -> its prompt)."""

    async def cancel(self, batch_id: str) -> RemoteBatch: ...

    async def delete(self, file_id: str) -> None: ...


def provider_for(backend, tries: int = 5) -> BatchProvider:
    """The Batch API that goes with an online backend (same server, key and model)."""
    from datagen.backends.openai_compat import OpenAIBackend

    if isinstance(backend, OpenAIBackend):
        from datagen.batch.openai_batches import OpenAIBatches

        return OpenAIBatches(backend, tries=tries)
    raise InputError(f"--mode batch has no Batch API for the {getattr(backend, 'name', backend)!r} backend: use --api chat or --api completion")
