"""The report card of a run (or two): the figures as JSON, and the page `datagen report` writes.

Both come from datagen.report, the code behind the CLI: the dashboard's Report page shows exactly the
file a user would keep or send.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import HTMLResponse

from api.deps import EngineDep
from api.schemas import REPORT_ERRORS, Text
from datagen.report import build, to_html

router = APIRouter(tags=["report"], responses=REPORT_ERRORS)
# The page's errors are JSON like every other route's, not HTML: say so, code by code.
HTML_ERRORS = {code: {"description": v["description"], "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
               for code, v in REPORT_ERRORS.items()}
RunName = Annotated[Text, Query(min_length=1, max_length=200, description="run name")]
VsName = Annotated[Text | None, Query(max_length=200, description="another run of the same language to compare against")]


@router.get("/report", summary="Every figure of a run's report card (and the comparison with --vs), as `datagen report --json` writes them")
def report_json(engine: EngineDep, run: RunName, vs: VsName = None) -> dict:
    return build(engine, run, vs or None)


@router.get("/report.html", response_class=HTMLResponse, responses=HTML_ERRORS, summary="The report as one self-contained HTML page, as `datagen report --out` writes it")
def report_html(engine: EngineDep, run: RunName, vs: VsName = None) -> HTMLResponse:
    return HTMLResponse(to_html(build(engine, run, vs or None)))
