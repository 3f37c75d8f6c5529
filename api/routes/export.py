from __future__ import annotations

import itertools
from datetime import datetime, timezone
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse

from api.deps import EngineDep, to_filter
from api.schemas import READ_ERRORS, Filter
from datagen.export import lines, render
from datagen.records import KEPT

router = APIRouter(tags=["export"], responses=READ_ERRORS)


@router.get(
    "/export",
    summary="The filtered set as alpaca JSON (streamed), byte for byte what `datagen export` writes. Without a status filter: accepted and approved only.",
    response_class=StreamingResponse,
)
def export(engine: EngineDep, params: Annotated[Filter, Query()]):
    f = to_filter(engine, params)
    if not f.status:
        f.status = list(KEPT)

    # The first record is read before the 200 goes out, so a query that fails is an error status.
    # A failure later aborts the connection: the chunked body never ends, so no client can take
    # the cut file for a whole one (curl exits 18, fetch() rejects, the JSON has no closing `]`).
    pieces = render(lines(engine, f))
    first = list(itertools.islice(pieces, 2))  # "[" and the first record (or the end): the query has run
    body = (piece.encode() for piece in itertools.chain(first, pieces))
    name = f"datagen-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}.json"
    return StreamingResponse(body, media_type="application/json", headers={"Content-Disposition": f'attachment; filename="{name}"'})
