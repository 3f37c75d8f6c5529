"""Ways out for a batch a run cannot finish by itself: a `submitting` row the provider may never have
seen (dropped once a lookup by key says so), a batch to stop (`cancel`), and one the provider refuses
for good (`abandon`: its lines become errors and are asked again on resume)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable

from datagen.errors import BackendError
from datagen.batch.provider import ENDED, BatchProvider, provider_for
from datagen.batch.run import first_error, ingest, record
from datagen.errors import InputError, NotFound
from datagen.storage import batches as store
from datagen.storage.models import Batch


async def drop_unsent(engine, run_id: int, provider: BatchProvider, say: Callable[[str], None], stages=None) -> bool:
    """Look up each open batch of the run that has no provider id yet: drop those the provider never
    saw, record those it has. True when the run has no open batch left."""
    left = False
    for b in store.list_batches(engine, run_id, open_only=True, stages=stages):
        if not b.provider_id:
            found = await provider.find(b.key, b.created_at)
            if found is None:
                n = store.drop_batch(engine, b.id)
                say(f"batch {b.id}: dropped; the provider never saw it ({n} lines, never sent)")
                continue
            record(engine, b, found)
        left = True
    return not left


def _batch(engine, batch_id: int) -> Batch:
    b = store.get_batch(engine, batch_id)
    if b is None:
        raise NotFound(f"no batch {batch_id}")
    return b


async def _with_provider(engine, b: Batch, work):
    """Run `work(provider, price)` with the Batch API and batch price the batch's run was started with."""
    from datagen.backends import make_backend
    from datagen.client import Price
    from datagen.config import BATCH_DISCOUNT
    from datagen.generate import price_for

    run = store.run_of(engine, b)
    cfg = json.loads(run.config or "{}")
    backend = make_backend(run.api, run.model, base_url=cfg.get("base_url"), timeout=cfg.get("timeout") or 120.0)
    try:
        listed = price_for(run.model, cfg.get("price_in"), cfg.get("price_out"), run.api)
        price = Price(listed.input * BATCH_DISCOUNT, listed.output * BATCH_DISCOUNT)
        return await work(provider_for(backend, cfg.get("max_tries") or 5), price, cfg)
    finally:
        await backend.aclose()


async def cancel(engine, batch_id: int, say: Callable[[str], None], wait: float = 60.0) -> str:
    """Cancel a batch at the provider, wait (up to `wait` s) for it to end and store what it finished.
    A batch the provider never saw is dropped. Returns the batch's status."""
    b = _batch(engine, batch_id)
    if b.ingested:
        raise InputError(f"batch {b.id} has ended ({b.status}) and its results are stored: nothing to cancel")

    async def work(provider: BatchProvider, price, cfg) -> str:
        if not b.provider_id:
            found = await provider.find(b.key, b.created_at)
            if found is None:
                n = store.drop_batch(engine, b.id)
                say(f"batch {b.id}: dropped; the provider never saw it ({n} lines, never sent)")
                return "dropped"
            record(engine, b, found)
        record(engine, b, await provider.poll(b.provider_id))  # the stored status may be stale
        if b.status not in ENDED and b.status != "cancelling":
            try:
                record(engine, b, await provider.cancel(b.provider_id))
            except BackendError:  # it may have ended meanwhile (a provider refuses to cancel an ended batch)
                record(engine, b, await provider.poll(b.provider_id))
                if b.status not in ENDED:
                    raise
        deadline = time.monotonic() + wait
        while b.status not in ENDED and time.monotonic() < deadline:
            await asyncio.sleep(min(1.0, max(0.05, deadline - time.monotonic())))
            record(engine, b, await provider.poll(b.provider_id))
        if b.status not in ENDED:
            say(f"batch {b.id} ({b.provider_id}): still {b.status}; its run stores what it finished when resumed")
            return b.status
        await ingest(engine, b, provider, price, say, keep_files=bool(cfg.get("keep_files")))
        return b.status

    return await _with_provider(engine, b, work)


def abandon(engine, batch_id: int, say: Callable[[str], None]) -> None:
    """Stop tracking a batch without asking the provider (one it refuses for good, or one gone): its lines
    get an error and are asked again when the run resumes. If the provider does run it, those lines are
    paid twice: cancel is the way for a batch the provider still answers for."""
    b = _batch(engine, batch_id)
    if b.ingested:
        raise InputError(f"batch {b.id} has ended ({b.status}) and its results are stored: nothing to abandon")
    n = store.ingest(engine, b.id, {}, "no result: batch abandoned by the user", status="abandoned", failed=b.requests, completed=0)
    say(f"batch {b.id}: abandoned ({n} of {b.requests} lines answered; the rest are asked again on resume)"
        + (f"; the provider said: {first_error(b.errors)}" if b.errors else ""))
