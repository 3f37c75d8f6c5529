"""The FastAPI app: /api for data, / for the review dashboard, /docs for the schema."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from api.config import ConfigError, Settings
from api.deps import read_access
from api.routes import export, jobs, runs, samples, schedules, stats
from api.security import BodyLimit, SecurityHeaders, install_log_scrubbing
from api.services import NeighbourCache
from datagen import storage
from datagen.errors import DatagenError
from datagen.storage import queries
from datagen.storage.schedules import ScheduleExists, ScheduleNotFound

STATIC = Path(__file__).parent / "static"
log = logging.getLogger("api")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings.from_env()
    engine = storage.connect(settings.db_url)
    app = FastAPI(
        title="datagen review API",
        version="1",
        description="Curate generated instruction data: filter, search, review, edit, export.",
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.neighbours = NeighbourCache(engine)

    api_deps = [Depends(read_access)]
    for module in (runs, samples, stats, export, schedules, jobs):
        app.include_router(module.router, prefix="/api", dependencies=api_deps)

    @app.get("/api/health", tags=["meta"])
    def health():
        return {"ok": True, "database": engine.dialect.name, "reads_need_token": settings.protect_reads}

    @app.exception_handler(queries.NotFound)
    async def _not_found(_req: Request, exc: queries.NotFound):
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @app.exception_handler(queries.Conflict)
    async def _conflict(_req: Request, exc: queries.Conflict):
        return JSONResponse({"detail": str(exc)}, status_code=409)

    @app.exception_handler(queries.QueryError)
    async def _bad_query(_req: Request, exc: queries.QueryError):
        return JSONResponse({"detail": str(exc)}, status_code=422)

    @app.exception_handler(ScheduleNotFound)
    async def _no_schedule(_req: Request, exc: ScheduleNotFound):
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @app.exception_handler(ScheduleExists)
    async def _schedule_exists(_req: Request, exc: ScheduleExists):
        return JSONResponse({"detail": str(exc)}, status_code=409)

    @app.exception_handler(DatagenError)
    async def _refused(_req: Request, exc: DatagenError):  # bad cron, zone, job options, ...
        return JSONResponse({"detail": str(exc)}, status_code=422)

    @app.exception_handler(storage.StorageError)
    async def _storage(_req: Request, exc: storage.StorageError):
        return JSONResponse({"detail": str(exc)}, status_code=503)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_req: Request, exc: RequestValidationError):
        # Echo where and what, never the submitted value (it may be huge, or a secret).
        errors = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")} for e in exc.errors()]
        return JSONResponse({"detail": errors}, status_code=422)

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    def dashboard():
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.get("/jobs", include_in_schema=False)
    def jobs_page():
        return FileResponse(STATIC / "jobs.html", media_type="text/html")

    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(SecurityHeaders)
    install_log_scrubbing()
    return app


def serve(*, host: str = "127.0.0.1", port: int = 8000, db: str | None = None) -> None:
    """Run the service with uvicorn; refuses a non-loopback address without DATAGEN_API_TOKEN."""
    import uvicorn

    try:
        settings = Settings.from_env(db_url=db, host=host, port=port)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    app = create_app(settings)
    if settings.token_generated:
        print(f"No DATAGEN_API_TOKEN set; this session's token (paste it into the page): {settings.token}", file=sys.stderr)
    print(f"datagen review: http://{host}:{port}/  (API docs at /docs)", file=sys.stderr)
    uvicorn.run(app, host=host, port=port, log_level="info", server_header=False)
