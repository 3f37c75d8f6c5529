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
    out = []
    for run, st in storage.list_runs(engine):
        out.append(
            RunOut(
                id=run.id,
                name=run.name,
                lang=run.lang,
                api=run.api,
                model=run.model,
                target=run.target,
                state=run.state,
                config=scrub_config(run.config),
                created_at=run.created_at,
                updated_at=run.updated_at,
                by_status=dict(st.by_status),
                by_reason=dict(st.by_reason),
                kept=st.kept,
                acceptance=round(st.acceptance, 4),
                requests=st.requests,
                errors=st.errors,
                tokens_in=st.tokens_in,
                tokens_out=st.tokens_out,
                cost=st.cost,
            )
        )
    return out


@router.get("/reasons", response_model=list[str], summary="Every rejection reason in the database")
def list_reasons(engine: EngineDep):
    return queries.reasons(engine)
