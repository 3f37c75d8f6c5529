"""OpenAI's Files and Batch API through the official client, with our error classes and retries.

Only `create` is not simply retried: a create whose answer was lost may have made the batch, so
the batch is first looked up by the key in its metadata (the write-ahead rule in batch/run.py).
"""

from __future__ import annotations

import asyncio
import random
from datetime import datetime

from datagen.backends.openai_compat import OpenAIBackend
from datagen.errors import BackendError, FatalBackendError

KEY = "datagen_key"  # metadata field carrying our batch row's key


class Provider:
    def __init__(self, backend: OpenAIBackend, tries: int = 5):
        self.backend = backend
        self.client = backend.client
        self.tries = max(1, tries)
        self.where = backend.base_url or "the OpenAI API"

    async def _call(self, what: str, fn, tries: int | None = None):
        tries = tries or self.tries
        for attempt in range(1, tries + 1):
            try:
                return await fn()
            except Exception as exc:
                err = self.backend._classify(exc)
                if isinstance(err, FatalBackendError):
                    if isinstance(exc, self.backend._openai.NotFoundError) and what in ("files.create", "batches.create", "batches.list"):
                        raise FatalBackendError(f"{self.where} does not serve the Batch API ({what}: 404); batch mode needs OpenAI or a server with /v1/files and /v1/batches") from None
                    raise err from None
                if not (isinstance(err, BackendError) and err.retryable) or attempt == tries:
                    raise BackendError(f"{what} at {self.where}: {err}", retryable=isinstance(err, BackendError) and err.retryable) from None
                await asyncio.sleep(max(err.retry_after or 0.0, random.uniform(0, min(30.0, 2.0**attempt))))

    async def upload(self, name: str, data: bytes) -> str:
        f = await self._call("files.create", lambda: self.client.files.create(file=(name, data, "application/jsonl"), purpose="batch"))
        return f.id

    async def create(self, input_file_id: str, endpoint: str, key: str):
        """One try: after a failure the caller looks the batch up by key before it creates again."""
        return await self._call("batches.create", lambda: self.client.batches.create(
            input_file_id=input_file_id, endpoint=endpoint, completion_window="24h", metadata={KEY: key}), tries=1)

    async def find(self, key: str, since: datetime):
        """The provider's batch carrying this key, or None. Batches list newest first: stop at ones older than ours."""
        floor = since.timestamp() - 3600  # clock skew between us and the provider

        async def scan():
            async for b in self.client.batches.list(limit=100):
                if (b.metadata or {}).get(KEY) == key:
                    return b
                if b.created_at < floor:
                    return None
            return None

        return await self._call("batches.list", scan)

    async def retrieve(self, batch_id: str):
        return await self._call("batches.retrieve", lambda: self.client.batches.retrieve(batch_id))

    async def cancel(self, batch_id: str):
        return await self._call("batches.cancel", lambda: self.client.batches.cancel(batch_id))

    async def content(self, file_id: str) -> str:
        async def read():
            return (await self.client.files.content(file_id)).text

        return await self._call("files.content", read)
