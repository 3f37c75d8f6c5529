from __future__ import annotations

import itertools
import json
from datetime import datetime, timezone
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse

from api.deps import EngineDep, to_filter
from api.schemas import READ_ERRORS, Filter
from datagen.export import clean_input
from datagen.storage import queries

router = APIRouter(tags=["export"], responses=READ_ERRORS)


@router.get(
    "/export",
    summary="The filtered set as alpaca JSON (streamed). Without a status filter: accepted and approved only.",
    response_class=StreamingResponse,
)
def export(engine: EngineDep, params: Annotated[Filter, Query()]):
    f = to_filter(engine, params)
    if not f.status:
        f.status = list(queries.KEPT_STATUSES)

    # The first chunk is read before the 200 goes out, so a query that fails is an error status.
    # A failure later aborts the connection: the chunked body never ends, so no client can take
    # the cut file for a whole one (curl exits 18, fetch() rejects, the JSON has no closing `]`).
    rows = queries.iter_matching(engine, f)
    head = next(rows, None)

    def body():
        first = True
        yield b"["
        for sample, instances in itertools.chain([head] if head else [], rows):
            for inst in instances:
                rec = {"instruction": sample["instruction"].strip(), "input": clean_input(inst.input), "output": inst.output.strip()}
                yield (("\n  " if first else ",\n  ") + json.dumps(rec, ensure_ascii=False)).encode()
                first = False
        yield b"\n]\n"

    name = f"datagen-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}.json"
    return StreamingResponse(body(), media_type="application/json", headers={"Content-Disposition": f'attachment; filename="{name}"'})
