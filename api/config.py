"""Service settings: where the database is, who may change data, how big a request may be."""

from __future__ import annotations

import ipaddress
import re
import secrets
from dataclasses import dataclass

from datagen import config
from datagen.errors import InputError

TOKEN_ENV = config.ENV["api_token"]
LOOPBACK_NAMES = {"localhost", "ip6-localhost", "ip6-loopback"}


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass
class Settings:
    db_url: str | None = None
    host: str = config.SERVE_HOST
    port: int = config.SERVE_PORT
    token: str = ""
    token_generated: bool = False
    # Reads are open on loopback (your own machine); anywhere else every /api call needs the token.
    protect_reads: bool = False
    max_body_bytes: int = 1 << 20
    allowed_hosts: tuple[str, ...] = ()  # Host names accepted besides loopback ones (lower case)

    @classmethod
    def from_env(
        cls, *, db_url: str | None = None, host: str = config.SERVE_HOST, port: int = config.SERVE_PORT, token: str | None = None, allowed_hosts: tuple[str, ...] = ()
    ) -> Settings:
        token = token if token is not None else (config.env("api_token") or "")
        # Host names, besides loopback ones, that a browser may use to reach a server whose reads
        # need no token (the environment's list plus --allowed-host). Anything else is DNS rebinding.
        names = [*(config.env("allowed_hosts") or "").split(","), *allowed_hosts]
        allowed = tuple(dict.fromkeys(n.strip().lower().rstrip(".") for n in names if n.strip()))
        for name in allowed:
            if not re.fullmatch(r"[a-z0-9]([a-z0-9.\-]*[a-z0-9])?|\[[0-9a-f:.]+\]", name):
                raise InputError(f"allowed host {name!r} is not a host name (no scheme, port or path)")
        generated = False
        if not token:
            if not is_loopback(host):
                raise InputError(f"refusing to listen on {host} without a token: set {TOKEN_ENV}")
            # On your own machine a fresh token is made up and shown once, like Jupyter does.
            token, generated = secrets.token_urlsafe(24), True
        if len(token) < 16:
            raise InputError(f"{TOKEN_ENV} is too short: use at least 16 characters")
        return cls(
            db_url=db_url, host=host, port=port, token=token, token_generated=generated, protect_reads=not is_loopback(host), allowed_hosts=allowed
        )


