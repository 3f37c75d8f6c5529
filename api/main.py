"""The FastAPI app: /api for data, / for the review dashboard, /docs for the schema."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from fastapi import Depends, FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from api.config import Settings
from datagen import config
from api.deps import read_access
from api.schemas import Error
from api.routes import export, jobs, report, runs, samples, schedules, stats
from api.security import BodyLimit, HostCheck, SecurityHeaders, document_open_reads, install_log_scrubbing
from datagen import storage
from datagen.errors import DatagenError
from datagen.review import Reviewer

STATIC = Path(__file__).parent / "static"
log = logging.getLogger("api")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings.from_env()
    engine = storage.connect(settings.db_url, create=False)  # reviewing never creates a database
    app = FastAPI(
        title="datagen review API",
        version="1",
        description="Curate generated instruction data: filter, search, review, edit, export.",
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.reviewer = Reviewer(engine)

    api_deps = [Depends(read_access)]
    for module in (runs, samples, stats, export, schedules, jobs, report):
        app.include_router(module.router, prefix="/api", dependencies=api_deps)

    @app.get("/api/health", tags=["meta"], summary="Up, and the database answers (503 with one line when it does not)",
             responses={503: {"model": Error, "description": "the database cannot be reached"}})
    def health():
        storage.ping(engine)
        return {"ok": True, "database": engine.dialect.name, "reads_need_token": settings.protect_reads}

    @app.exception_handler(DatagenError)
    async def _user_error(_req: Request, exc: DatagenError):
        # One table for every user-facing error: each class carries its status; anything else is a bug (500).
        return JSONResponse(exc.body(), status_code=exc.http_status)

    @app.exception_handler(StarletteHTTPException)
    async def _http(req: Request, exc: StarletteHTTPException):
        if exc.status_code == 405:  # Starlette lists the first matching route's methods only
            methods = {m for r in app.router.routes if r.matches(req.scope)[0] != Match.NONE for m in getattr(r, "methods", ())}
            exc.headers = {**(exc.headers or {}), "Allow": ", ".join(sorted(methods))}
        return await http_exception_handler(req, exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_req: Request, exc: RequestValidationError):
        # Echo where and what, never the submitted value (it may be huge, or a secret).
        errors = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")} for e in exc.errors()]
        return JSONResponse({"detail": errors}, status_code=422)

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    def dashboard():
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.get("/report", include_in_schema=False)
    def report_page():
        return FileResponse(STATIC / "report.html", media_type="text/html")

    @app.get("/jobs", include_in_schema=False)
    def jobs_page():
        return FileResponse(STATIC / "jobs.html", media_type="text/html")

    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    if not settings.protect_reads:  # with a read token, a rebinding page cannot read anything
        app.add_middleware(HostCheck, allowed=settings.allowed_hosts)
        document_open_reads(app)
    app.add_middleware(SecurityHeaders)
    install_log_scrubbing()
    return app


def serve(*, host: str = config.SERVE_HOST, port: int = config.SERVE_PORT, db: str | None = None, allowed_hosts: tuple[str, ...] = ()) -> None:
    """Run the service with uvicorn; refuses a non-loopback address without DATAGEN_API_TOKEN.

    Errors (a bad URL, a missing database, a dead server, a bad host name) are DatagenErrors: the CLI prints one line.
    """
    import uvicorn

    settings = Settings.from_env(db_url=db, host=host, port=port, allowed_hosts=allowed_hosts)
    app = create_app(settings)
    if settings.token_generated:
        print(f"No DATAGEN_API_TOKEN set; this session's token (paste it into the page): {settings.token}", file=sys.stderr)
    print(f"datagen review: http://{host}:{port}/  (API docs at /docs)", file=sys.stderr)
    uvicorn.run(app, host=host, port=port, log_level="info", server_header=False)
