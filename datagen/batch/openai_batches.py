"""OpenAI's Files and Batch API (and any server offering /v1/files and /v1/batches) through the official
client: the one `BatchProvider` implementation. Our batch key travels in the batch's metadata.

Every call but `create` is retried here on retryable errors: a create whose answer was lost may have
made the batch, so the caller looks it up by key first (the write-ahead rule in batch/run.py).
"""

from __future__ import annotations

import asyncio
import json
import random
from datetime import datetime

import openai

from datagen.errors import BackendError, FatalBackendError
from datagen.backends.openai_compat import OpenAIBackend
from datagen.batch.provider import Results, RemoteBatch
from datagen.config import BATCH_MAX_BYTES, BATCH_MAX_LINES
from datagen.records import Generation, Prompt

KEY = "datagen_key"  # metadata field carrying our batch row's key


class OpenAIBatches:
    max_lines = BATCH_MAX_LINES
    max_bytes = BATCH_MAX_BYTES

    def __init__(self, backend: OpenAIBackend, tries: int = 5):
        self.backend = backend
        self.client = backend.client
        self.tries = max(1, tries)
        self.where = backend.base_url or "the OpenAI API"
        self.endpoint = backend.endpoint

    async def _call(self, what: str, fn, tries: int | None = None):
        tries = tries or self.tries
        for attempt in range(1, tries + 1):
            try:
                return await fn()
            except Exception as exc:
                err = self.backend.classify(exc)
                if isinstance(err, FatalBackendError):
                    if isinstance(exc, openai.NotFoundError) and what in ("files.create", "batches.create", "batches.list"):
                        raise FatalBackendError(f"{self.where} does not serve the Batch API ({what}: 404); batch mode needs OpenAI or a server with /v1/files and /v1/batches") from None
                    raise err from None
                if not (isinstance(err, BackendError) and err.retryable) or attempt == tries:
                    raise BackendError(f"{what} at {self.where}: {err}", retryable=isinstance(err, BackendError) and err.retryable) from None
                await asyncio.sleep(max(err.retry_after or 0.0, random.uniform(0, min(30.0, 2.0**attempt))))

    @staticmethod
    def _remote(b) -> RemoteBatch:
        counts = b.request_counts
        errors = getattr(b, "errors", None)
        return RemoteBatch(
            id=b.id, status=b.status, output_file_id=b.output_file_id, error_file_id=b.error_file_id,
            completed=counts.completed if counts else 0, failed=counts.failed if counts else 0,
            errors=[e.model_dump() for e in errors.data] if errors and getattr(errors, "data", None) else [],
        )

    def line(self, request_id: int, body: str) -> bytes:
        return f'{{"custom_id": "{request_id}", "method": "POST", "url": "{self.endpoint}", "body": {body}}}\n'.encode("utf-8")

    async def upload(self, name: str, data: bytes) -> str:
        f = await self._call("files.create", lambda: self.client.files.create(file=(name, data, "application/jsonl"), purpose="batch"))
        return f.id

    async def create(self, input_file_id: str, key: str) -> RemoteBatch:
        return self._remote(await self._call("batches.create", lambda: self.client.batches.create(
            input_file_id=input_file_id, endpoint=self.endpoint, completion_window="24h", metadata={KEY: key}), tries=1))

    async def find(self, key: str, since: datetime) -> RemoteBatch | None:
        """Batches list newest first: stop at ones older than ours."""
        floor = since.timestamp() - 3600  # clock skew between us and the provider

        async def scan():
            async for b in self.client.batches.list(limit=100):
                if (b.metadata or {}).get(KEY) == key:
                    return self._remote(b)
                if b.created_at < floor:
                    return None
            return None

        return await self._call("batches.list", scan)

    async def poll(self, batch_id: str) -> RemoteBatch:
        return self._remote(await self._call("batches.retrieve", lambda: self.client.batches.retrieve(batch_id)))

    async def cancel(self, batch_id: str) -> RemoteBatch:
        return self._remote(await self._call("batches.cancel", lambda: self.client.batches.cancel(batch_id)))

    async def delete(self, file_id: str) -> None:
        async def delete():
            try:
                await self.client.files.delete(file_id)
            except openai.NotFoundError:
                pass  # gone already: a retry after a delete whose answer was lost

        await self._call("files.delete", delete)

    async def _content(self, file_id: str) -> str:
        async def read():
            return (await self.client.files.content(file_id)).text

        return await self._call("files.content", read)

    async def results(self, batch: RemoteBatch, prompts: dict[int, Prompt]) -> Results:
        out = Results(answers={})
        for file_id in (batch.output_file_id, batch.error_file_id):
            if not file_id:
                continue
            for raw in (await self._content(file_id)).splitlines():
                if not raw.strip():
                    continue
                try:
                    line = json.loads(raw)
                    rid = int(line["custom_id"])
                except (ValueError, KeyError, TypeError):
                    out.unreadable += 1
                    continue
                if rid in prompts and rid not in out.answers:
                    out.answers[rid] = self._answer(line, prompts[rid])
        return out

    def _answer(self, line: dict, prompt: Prompt) -> Generation:
        resp, err = line.get("response"), line.get("error")
        if resp and resp.get("status_code") == 200:
            try:
                return self.backend.generations(resp.get("body") or {}, [prompt])[0]
            except Exception as exc:  # a body the SDK cannot read: an error for this line, retried
                return Generation(error=f"bad response: {type(exc).__name__}: {str(exc)[:200]}")
        if resp:
            body = resp.get("body") or {}
            msg = (body.get("error") or {}).get("message") if isinstance(body, dict) else None
            return Generation(error=f"HTTP {resp.get('status_code')}: {msg or str(body)[:200]}")
        err = err or {}
        return Generation(error=f"{err.get('code') or 'error'}: {err.get('message') or 'no message'}")
