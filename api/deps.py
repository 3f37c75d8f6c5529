"""Dependencies: the engine, the caller's identity, and filters turned into storage terms."""

from __future__ import annotations

import hmac
from dataclasses import fields
from typing import Annotated

from fastapi import Depends, Header, HTTPException, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.engine import Engine

from api.config import Settings
from api.schemas import Filter
from datagen import storage
from datagen.errors import NotFound
from datagen.review import Reviewer
from datagen.storage import queries
from datagen.storage.scores import ScoreRange


def get_engine(request: Request) -> Engine:
    return request.app.state.engine


def get_reviewer(request: Request) -> Reviewer:
    return request.app.state.reviewer


def invalid(loc: tuple, msg: str) -> RequestValidationError:
    """A 422 shaped like every other 422 (a list of {loc, msg, type}), as the schema says."""
    return RequestValidationError([{"loc": loc, "msg": msg, "type": "value_error"}])


# The OpenAPI schema declares one HTTP bearer scheme; auto_error=False so we choose the answers.
bearer = HTTPBearer(auto_error=False, description="DATAGEN_API_TOKEN (or the token `serve` printed)")
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


def _check_token(request: Request, credentials: HTTPAuthorizationCredentials | None) -> None:
    settings: Settings = request.app.state.settings
    if credentials is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "use 'Authorization: Bearer <token>'", headers={"WWW-Authenticate": "Bearer"})
    if not hmac.compare_digest(credentials.credentials.strip().encode(), settings.token.encode()):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "wrong token")


def require_token(request: Request, credentials: Credentials) -> None:
    """Every change needs the token."""
    _check_token(request, credentials)


def read_access(request: Request, credentials: Credentials) -> None:
    """Reads need the token too when the service listens beyond this machine."""
    if request.app.state.settings.protect_reads:
        _check_token(request, credentials)


# ASCII only: header values are bytes on the wire; the pattern is in the schema for clients.
ACTOR_PATTERN = r"^[A-Za-z0-9_.@+\- ]{0,64}$"


def reviewer(x_reviewer: Annotated[str | None, Header(pattern=ACTOR_PATTERN, description="who is reviewing (audit log; default `api`)")] = None) -> str:
    return (x_reviewer or "").strip() or "api"


def to_filter(engine: Engine, f: Filter, ids: list[int] | None = None) -> queries.SampleFilter:
    run = storage.get_run(engine, f.run) if f.run else None
    if f.run and run is None:
        raise NotFound(f"no run named {f.run!r}")
    # The fields both declarations name alike; q is trimmed below.
    same = f.model_dump(include=set(Filter.model_fields) & {x.name for x in fields(queries.SampleFilter)} - {"q"})
    key = score_key(f)
    ranges = [] if key is None or (f.by_min is None and f.by_max is None) else [
        ScoreRange(key.scorer, key.rubric, key.model, f.by_min, f.by_max)]
    return queries.SampleFilter(
        **same, run_id=run and run.id, is_classification=f.classification, q=(f.q or "").strip() or None, ids=list(ids) if ids else None,
        score_ranges=ranges,
    )


def score_key(f: Filter) -> ScoreRange | None:
    """The filter's `by` key as a ScoreRange without bounds (what sort=scored sorts by)."""
    if not f.by:
        return None
    from datagen.errors import InputError
    from datagen.scores.keys import parse_key

    try:
        k = parse_key(f.by)
    except InputError:
        # The schema cannot state the key's grammar in a way every client generator honours, so a key
        # that names no score is valid and matches nothing, like a reversed range.
        return ScoreRange(f.by, "", None)
    return ScoreRange(k.scorer, k.rubric, k.model)


EngineDep = Annotated[Engine, Depends(get_engine)]
ActorDep = Annotated[str, Depends(reviewer)]
ReviewerDep = Annotated[Reviewer, Depends(get_reviewer)]
