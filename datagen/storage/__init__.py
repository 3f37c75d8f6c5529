"""Storage: the only package that knows SQL. Everything else calls these functions.

The names below load on first use (PEP 562): importing a submodule that needs no SQLAlchemy
(url, migrate.quick_head, overview) then costs nothing, which is how `datagen runs` starts fast.
"""

from __future__ import annotations

import importlib
import importlib.util

_FROM = {
    "errors": ("StorageError",),  # what storage raises for a database it cannot use
    "storage.url": ("DEFAULT_URL", "resolve_url"),
    "storage.db": ("connect", "dispose_all", "ping"),
    "storage.batches": ("batch_costs", "batches_with_runs", "list_batches"),
    "storage.models": ("Audit", "Batch", "InstanceRow", "Request", "Run", "Sample"),
    "storage.overview": ("RunStats", "shown_state"),
    "storage.runs": (
        "HEARTBEAT", "STALE_AFTER", "add_sample", "begin_request", "end_request", "finish_sample", "get_run",
        "instruction_hash", "indexed_instructions", "kept_texts", "list_runs", "log_request", "open_run",
        "pending_samples", "run_id_of", "run_stats", "set_classification", "set_run_state", "touch_run",
    ),
}
_WHERE = {name: module for module, names in _FROM.items() for name in names}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:  # a submodule (storage.queries) not imported yet
        if importlib.util.find_spec(f"{__name__}.{name}") is None:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        return importlib.import_module(f"{__name__}.{name}")
    value = getattr(importlib.import_module(f"datagen.{_WHERE[name]}"), name)
    globals()[name] = value  # looked up once
    return value
