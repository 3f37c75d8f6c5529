"""Dependencies: the engine, the caller's identity, and filters turned into storage terms."""

from __future__ import annotations

import hmac
import re
from typing import Annotated

from fastapi import Depends, Header, HTTPException, Request, status
from sqlalchemy.engine import Engine

from api.config import Settings
from api.schemas import Filter
from datagen import storage
from datagen.review import Reviewer
from datagen.storage import queries


def get_engine(request: Request) -> Engine:
    return request.app.state.engine


def get_reviewer(request: Request) -> Reviewer:
    return request.app.state.reviewer


def _check_token(request: Request, authorization: str | None) -> None:
    settings: Settings = request.app.state.settings
    if not authorization:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "a bearer token is required", headers={"WWW-Authenticate": "Bearer"})
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "use 'Authorization: Bearer <token>'", headers={"WWW-Authenticate": "Bearer"})
    if not hmac.compare_digest(token.strip().encode(), settings.token.encode()):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "wrong token")


def require_token(request: Request, authorization: Annotated[str | None, Header()] = None) -> None:
    """Every change needs the token."""
    _check_token(request, authorization)


def read_access(request: Request, authorization: Annotated[str | None, Header()] = None) -> None:
    """Reads need the token too when the service listens beyond this machine."""
    if request.app.state.settings.protect_reads:
        _check_token(request, authorization)


_ACTOR = re.compile(r"^[\w.@+\- ]{1,64}$")


def reviewer(x_reviewer: Annotated[str | None, Header(description="who is reviewing (audit log)")] = None) -> str:
    name = (x_reviewer or "").strip() or "api"
    if not _ACTOR.match(name):
        raise HTTPException(422, "X-Reviewer: 1-64 letters, digits, spaces or . @ + - _")
    return name


def to_filter(engine: Engine, f: Filter) -> queries.SampleFilter:
    run = storage.get_run(engine, f.run) if f.run else None
    if f.run and run is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no run named {f.run!r}")
    same = f.model_dump(include={"lang", "status", "reason", "score_min", "score_max", "len_min", "len_max"})
    return queries.SampleFilter(**same, run_id=run and run.id, is_classification=f.classification, q=(f.q or "").strip() or None)


EngineDep = Annotated[Engine, Depends(get_engine)]
ActorDep = Annotated[str, Depends(reviewer)]
ReviewerDep = Annotated[Reviewer, Depends(get_reviewer)]
