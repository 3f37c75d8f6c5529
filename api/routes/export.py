from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse

from api.deps import EngineDep, to_filter
from api.schemas import Filter
from datagen.export import lines, render
from datagen.records import KEPT

router = APIRouter(tags=["export"])


@router.get(
    "/export",
    summary="The filtered set as alpaca JSON (streamed), byte for byte what `datagen export` writes. Without a status filter: accepted and approved only.",
    response_class=StreamingResponse,
)
def export(engine: EngineDep, params: Annotated[Filter, Query()]):
    f = to_filter(engine, params)
    if not f.status:
        f.status = list(KEPT)
    body = (piece.encode() for piece in render(lines(engine, f)))
    name = f"datagen-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}.json"
    return StreamingResponse(body, media_type="application/json", headers={"Content-Disposition": f'attachment; filename="{name}"'})
