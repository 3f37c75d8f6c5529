from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from api import services
from api.deps import EngineDep, to_filter
from api.schemas import READ_ERRORS, Filter
from datagen.storage import queries

router = APIRouter(tags=["stats"], responses=READ_ERRORS)
VERB_SAMPLE = 5_000


@router.get("/stats", summary="Counts, ROUGE-L and length histograms, leading verbs, for a filter")
def stats(engine: EngineDep, params: Annotated[Filter, Query()]):
    f = to_filter(engine, params)
    out = queries.stats(engine, f)
    rows = queries.sample_instructions(engine, f, limit=VERB_SAMPLE)
    out["verbs"] = services.verb_stats(rows)
    out["verbs_sampled"] = len(rows)
    return out
