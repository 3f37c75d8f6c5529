from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, status

from api import services
from api.deps import EngineDep, to_filter
from api.schemas import READ_ERRORS, Filter, Text
from datagen import storage
from datagen.storage import queries, score_views
from datagen.storage import scores as storage_scores

router = APIRouter(tags=["stats"], responses=READ_ERRORS)
VERB_SAMPLE = 5_000


@router.get("/stats", summary="Counts, ROUGE-L and length histograms, leading verbs, for a filter")
def stats(engine: EngineDep, params: Annotated[Filter, Query()]):
    f = to_filter(engine, params)
    out = queries.stats(engine, f)
    rows = queries.sample_instructions(engine, f, limit=VERB_SAMPLE)
    out["verbs"] = services.verb_stats(rows)
    out["verbs_sampled"] = len(rows)
    conds = queries.where(engine, f)
    out["score_histograms"] = score_views.histograms(engine, conds)
    out["judge_agreement"] = score_views.agreement(engine, conds)
    return out


@router.get("/scores/keys", summary="Score keys (scorer, rubric, model) with their count, min and max, optionally for one run")
def score_keys(engine: EngineDep, run: Annotated[Text | None, Query(max_length=200)] = None):
    run_id = None
    if run:
        r = storage.get_run(engine, run)
        if r is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no run named {run!r}")
        run_id = r.id
    return [{**k, "key": score_views.key_name(k["scorer"], k["rubric"], k["model"])} for k in storage_scores.score_keys(engine, run_id)]
