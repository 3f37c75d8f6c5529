"""Service settings: where the database is, who may change data, how big a request may be."""

from __future__ import annotations

import ipaddress
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
    host: str = "127.0.0.1"
    port: int = 8000
    token: str = ""
    token_generated: bool = False
    # Reads are open on loopback (your own machine); anywhere else every /api call needs the token.
    protect_reads: bool = False
    max_body_bytes: int = 1 << 20

    @classmethod
    def from_env(cls, *, db_url: str | None = None, host: str = "127.0.0.1", port: int = 8000, token: str | None = None) -> Settings:
        token = token if token is not None else (config.env("api_token") or "")
        generated = False
        if not token:
            if not is_loopback(host):
                raise ConfigError(f"refusing to listen on {host} without a token: set {TOKEN_ENV}")
            # On your own machine a fresh token is made up and shown once, like Jupyter does.
            token, generated = secrets.token_urlsafe(24), True
        if len(token) < 16:
            raise ConfigError(f"{TOKEN_ENV} is too short: use at least 16 characters")
        return cls(db_url=db_url, host=host, port=port, token=token, token_generated=generated, protect_reads=not is_loopback(host))


class ConfigError(InputError):
    pass
