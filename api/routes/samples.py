from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query

from api import services
from api.deps import ActorDep, EngineDep, ReviewerDep, invalid, require_token, score_key, to_filter
from api.schemas import (
    MAX_ID,
    READ_ERRORS,
    WRITE_ERRORS,
    BulkIn,
    BulkOut,
    Count,
    EditIn,
    EditOut,
    Filter,
    ListParams,
    ReviewIn,
    ReviewOut,
    SampleDetail,
    SamplePage,
    Similar,
)
from api.security import scrub_text
from datagen.errors import NotFound
from datagen.records import Instance
from datagen.storage import queries, score_views

router = APIRouter(tags=["samples"], responses=READ_ERRORS)
SampleId = Annotated[int, Path(ge=1, le=MAX_ID)]
COUNT_CAP = 1_000_000  # exact progress ("312 of 10,417 reviewed") for any review queue of a sane size


@router.get("/samples", response_model=SamplePage, summary="Filter, search, sort and page through samples")
def list_samples(engine: EngineDep, params: Annotated[ListParams, Query()]):
    f = to_filter(engine, params)
    page = queries.list_samples(engine, f, sort=params.sort, limit=params.limit, cursor=params.cursor, by=score_key(params))
    cols = score_views.columns(engine, [it["id"] for it in page.items])
    return SamplePage(items=[{**it, "scores": cols.get(it["id"], {})} for it in page.items], next_cursor=page.next_cursor)


@router.get("/samples/count", response_model=Count, summary="How many samples match and how many are reviewed (counted up to 1,000,000)")
def count_samples(engine: EngineDep, params: Annotated[Filter, Query()]):
    c = queries.count_samples(engine, to_filter(engine, params), cap=COUNT_CAP)
    return Count(count=c.count, capped=c.capped, reviewed=c.reviewed)


def _load(engine, sample_id: int) -> dict:
    row = queries.get_sample(engine, sample_id)
    if row is None:
        raise NotFound(f"no sample {sample_id}")
    if row["request"]:  # prompts and responses are logged verbatim; mask anything key-shaped
        for k in ("prompt", "response", "error"):
            row["request"][k] = scrub_text(row["request"][k])
    return row


@router.get("/samples/{sample_id:int}", response_model=SampleDetail, summary="One sample: instances, the request it came from, its audit log")
def get_sample(engine: EngineDep, sample_id: SampleId):
    row = _load(engine, sample_id)
    if row["nearest"]:
        row["nearest_highlight"] = services.highlight(row["instruction"], row["nearest"], row["lang"])
    row["audit"] = queries.audit_log(engine, sample_id)
    row["scores"] = score_views.detail(engine, sample_id)  # the judge's reason and suggested verdict are text to escape
    return row


@router.get("/samples/{sample_id:int}/similar", response_model=list[Similar], summary="Most similar kept instructions of the same run")
def similar(engine: EngineDep, reviewer: ReviewerDep, sample_id: SampleId, k: Annotated[int, Query(ge=1, le=20)] = 5):
    row = _load(engine, sample_id)
    hits = reviewer.top_k(row["run_id"], row["lang"], row["instruction"], k=k, exclude=sample_id)
    for h in hits:
        h["highlight"] = services.highlight(row["instruction"], h["instruction"], row["lang"])
    return hits


@router.patch(
    "/samples/{sample_id:int}",
    response_model=EditOut,
    dependencies=[Depends(require_token)],
    responses=WRITE_ERRORS,
    summary="Edit; checked by the run's own filters first: a kept sample that would fail them is refused (409, with the reasons)",
)
def edit_sample(engine: EngineDep, reviewer: ReviewerDep, actor: ActorDep, sample_id: SampleId, body: EditIn):
    instances = None if body.instances is None else [Instance(input=i.input, output=i.output) for i in body.instances]
    findings = reviewer.edit(sample_id, actor=actor, instruction=body.instruction, instances=instances, note=body.note)
    return {"sample": _load(engine, sample_id), "findings": findings}


WRITE = {"response_model": ReviewOut, "dependencies": [Depends(require_token)], "responses": WRITE_ERRORS}


@router.post(
    "/samples/{sample_id:int}/approve",
    summary="Approve; a sample that fails its run's filters is refused (409, with the reasons) unless the body says force=true",
    **WRITE,
)
def approve(reviewer: ReviewerDep, actor: ActorDep, sample_id: SampleId, body: ReviewIn | None = None):
    new = reviewer.approve(sample_id, actor=actor, note=body.note if body else None, force=bool(body and body.force))
    return ReviewOut(id=sample_id, status=new, reviewed_by=actor)


@router.post("/samples/{sample_id:int}/reject", summary="Reject (status becomes discarded)", **WRITE)
def reject(engine: EngineDep, actor: ActorDep, sample_id: SampleId, body: ReviewIn | None = None):
    new = queries.review_sample(engine, sample_id, "reject", actor=actor, note=body.note if body else None)
    return ReviewOut(id=sample_id, status=new, reviewed_by=actor)


@router.post("/samples/{sample_id:int}/undo", summary="Undo the sample's last review: its status goes back to what the audit log recorded before it", **WRITE)
def undo(engine: EngineDep, actor: ActorDep, sample_id: SampleId):
    return ReviewOut(id=sample_id, status=queries.undo_review(engine, sample_id, actor=actor), reviewed_by=actor)


@router.post(
    "/samples/bulk",
    response_model=BulkOut,
    dependencies=[Depends(require_token)],
    responses=WRITE_ERRORS,
    summary="Approve or reject everything a filter matches, or only the listed ids",
)
def bulk(engine: EngineDep, actor: ActorDep, body: BulkIn):
    f = to_filter(engine, body.filter, ids=body.ids)
    if f.is_empty() and not body.all:
        raise invalid(("body", "filter"), "the filter matches every sample: narrow it, list ids, or send all=true")
    return queries.bulk_review(engine, f, body.action, actor=actor, note=body.note, max_rows=body.max_rows)
