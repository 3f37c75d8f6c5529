from __future__ import annotations

from fastapi import APIRouter

from api.deps import EngineDep
from api.schemas import READ_ERRORS, RunOut
from api.security import scrub_config
from datagen import storage
from datagen.storage import queries

router = APIRouter(tags=["runs"], responses=READ_ERRORS)


@router.get("/runs", response_model=list[RunOut], summary="Runs with their counts and costs")
def list_runs(engine: EngineDep):
    return [
        RunOut(**{**run.model_dump(), **vars(st), "config": scrub_config(run.config), "kept": st.kept, "acceptance": round(st.acceptance, 4)})
        for run, st in storage.list_runs(engine)
    ]


@router.get("/reasons", response_model=list[str], summary="Every rejection reason in the database")
def list_reasons(engine: EngineDep):
    return queries.reasons(engine)
