"""RPM/TPM limits shared through the database by every process on one API key and base URL.

Two workers (or a worker and a hand-started run) on one key must not double the request rate, so
each request books its start time on a time line kept in the `rate_limit` table (a generic cell
rate algorithm: one atomic UPDATE per request, no polling) and sleeps until then. Hosts need
clocks in step (NTP). The limiters have aiolimiter's `acquire(amount)` shape, so LLMClient takes
either kind.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from urllib.parse import urlsplit

from sqlalchemy.engine import Engine

from datagen.config import env
from datagen.storage import ratelimits

DEFAULT_BASE_URL = "https://api.openai.com/v1"  # what the openai client uses without one
HORIZON = 1.0  # seconds ahead a caller may book: short, so waiting processes take turns


LOOPBACK = {"localhost", "127.0.0.1", "::1", "0:0:0:0:0:0:0:1"}
DEFAULT_PORTS = {"http": 80, "https": 443}


def server_of(base_url: str | None) -> str:
    """The server a base URL names, spelled one way: scheme and host in lower case, the loopback
    names as 127.0.0.1, no default port, no trailing slash (two spellings are one server's limit)."""
    u = urlsplit((base_url or DEFAULT_BASE_URL).strip())
    scheme, host = u.scheme.lower(), (u.hostname or "").lower()
    if host in LOOPBACK:
        host = "127.0.0.1"
    try:
        port = u.port
    except ValueError:  # not a URL a client could use; keep it as given
        return (base_url or "").strip().rstrip("/")
    port_part = f":{port}" if port and port != DEFAULT_PORTS.get(scheme) else ""
    host = f"[{host}]" if ":" in host else host
    return f"{scheme}://{host}{port_part}{u.path.rstrip('/')}"


def limit_key(kind: str, base_url: str | None, api_key: str | None) -> str:
    """One limit per (server, API key); the key only ever enters a hash."""
    ident = f"{server_of(base_url)}\0{api_key or ''}"
    return f"{kind}:{hashlib.sha256(ident.encode('utf-8')).hexdigest()[:24]}"


class SharedLimiter:
    def __init__(self, engine: Engine, key: str, per_minute: float, burst_seconds: float):
        self.engine, self.key = engine, key
        self.unit = 60.0 / per_minute  # seconds of the time line one request (or token) uses
        self.burst = burst_seconds

    async def acquire(self, amount: float = 1) -> None:
        cost = amount * self.unit
        while True:
            booked, at = await asyncio.to_thread(
                ratelimits.reserve, self.engine, self.key, cost, self.burst, time.time(), max(HORIZON, cost))
            wait = at - time.time()
            if wait > 0:
                await asyncio.sleep(wait)
            if booked:
                return


def shared_limiters(engine: Engine, base_url: str | None, rpm: float | None, tpm: float | None):
    """(rpm limiter, tpm limiter) for LLMClient; None where no limit is set.

    Bursts match the per-process limiters: one second's requests, a minute's tokens.
    """
    api_key = env("openai_api_key")
    base_url = base_url or env("openai_base_url")
    r = SharedLimiter(engine, limit_key("rpm", base_url, api_key), rpm, (max(1.0, rpm / 60) - 1) * 60 / rpm) if rpm else None
    t = SharedLimiter(engine, limit_key("tpm", base_url, api_key), tpm, 60.0) if tpm else None
    return r, t
