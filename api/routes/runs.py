from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, Query

from api.deps import EngineDep
from api.schemas import READ_ERRORS, BatchOut, Filter, RunOut, Text
from api.security import scrub_config, scrub_obj
from datagen import storage
from datagen.storage import queries

router = APIRouter(tags=["runs"], responses=READ_ERRORS)


@router.get("/runs", response_model=list[RunOut], summary="Runs with their counts and costs (actual, and batch estimates)")
def list_runs(engine: EngineDep):
    rows = storage.list_runs(engine)
    est = storage.batch_costs(engine, [run.id for run, _ in rows])
    return [
        RunOut(**{**run.model_dump(), **vars(st), "config": scrub_config(run.config), "kept": st.kept, "acceptance": round(st.acceptance, 4)},
               cost_est=est.get(run.id, (0.0, 0.0))[0], cost_in_flight=est.get(run.id, (0.0, 0.0))[1])
        for run, st in rows
    ]


def _errors(raw: str | None) -> list[dict] | None:
    """The provider's reasons, stored as JSON; text that is not a JSON list is shown as one message."""
    if not raw:
        return None
    try:
        data = json.loads(raw)
    except ValueError:
        data = None
    if not isinstance(data, list) or not all(isinstance(e, dict) for e in data):
        data = [{"message": raw}]
    return scrub_obj(data)


@router.get("/batches", response_model=list[BatchOut], summary="Batch-mode batches, oldest first, with estimated and actual cost")
def list_batches(engine: EngineDep, run: Annotated[Text | None, Query(max_length=200, description="only this run (name)")] = None):
    run_id = storage.run_id_of(engine, run)
    return [
        BatchOut(**b.model_dump(exclude={"key", "run_id", "errors"}), run=name, errors=_errors(b.errors))
        for b, name in storage.batches_with_runs(engine, run_id)
    ]


@router.get("/reasons", response_model=list[str], summary="Every rejection reason in the database")
def list_reasons(engine: EngineDep):
    return queries.reasons(engine)


@router.get("/filters", response_model=dict[str, str], summary="The sample filter's fields and their JSON types (the dashboard builds its queries from these)")
def filter_fields():
    out = {}
    for name, prop in Filter.model_json_schema()["properties"].items():
        types = [t.get("type") for t in prop.get("anyOf", [prop])]
        out[name] = next((t for t in types if t not in (None, "null")), "string")
    return out
