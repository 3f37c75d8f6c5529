from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse

from api.deps import EngineDep, to_filter
from api.schemas import Filter
from datagen.export import clean_input
from datagen.storage import queries

router = APIRouter(tags=["export"])


@router.get(
    "/export",
    summary="The filtered set as alpaca JSON (streamed). Without a status filter: accepted and approved only.",
    response_class=StreamingResponse,
)
def export(engine: EngineDep, params: Annotated[Filter, Query()]):
    f = to_filter(engine, params)
    if not f.status:
        f.status = list(queries.KEPT_STATUSES)

    def body():
        first = True
        yield b"["
        for sample, instances in queries.iter_matching(engine, f):
            for inst in instances:
                rec = {"instruction": sample["instruction"].strip(), "input": clean_input(inst.input), "output": inst.output.strip()}
                yield (("\n  " if first else ",\n  ") + json.dumps(rec, ensure_ascii=False)).encode()
                first = False
        yield b"\n]\n"

    name = f"datagen-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}.json"
    return StreamingResponse(body(), media_type="application/json", headers={"Content-Disposition": f'attachment; filename="{name}"'})
