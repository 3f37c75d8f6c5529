"""Storage: the only package that knows SQL. Everything else calls these functions."""

from datagen.errors import StorageError  # what storage raises for a database it cannot use
from datagen.storage.db import DEFAULT_URL, connect, dispose_all, ping, resolve_url
from datagen.storage.batches import batch_costs, batches_with_runs, list_batches
from datagen.storage.models import Audit, Batch, InstanceRow, Request, Run, Sample
from datagen.storage.runs import (
    HEARTBEAT,
    STALE_AFTER,
    RunStats,
    add_sample,
    begin_request,
    end_request,
    finish_sample,
    get_run,
    instruction_hash,
    indexed_instructions,
    kept_texts,
    list_runs,
    log_request,
    open_run,
    pending_samples,
    run_id_of,
    run_stats,
    set_classification,
    set_run_state,
    shown_state,
    touch_run,
)

