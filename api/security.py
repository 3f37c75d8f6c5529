"""Secrets never leave the process; untrusted text never runs; requests stay small."""

from __future__ import annotations

import json
import logging
import re
from urllib.parse import unquote_plus

from api.config import is_loopback
from datagen.report.render import CSP as REPORT_HTML_CSP
from datagen.report.render import STYLE_HASH

# Things that look like credentials, wherever they appear in text we send or log.
_SECRET_PATTERNS = [
    re.compile(r"\bsk-(?:proj-|ant-)?[A-Za-z0-9_\-]{16,}"),  # OpenAI / Anthropic style keys
    re.compile(r"\b(?:hf|ghp|gho|ghs|github_pat|xox[abp]|glpat)_[A-Za-z0-9_\-]{16,}"),
    re.compile(r"\bAKIA[0-9A-Z]{16}\b"),
    re.compile(r"\bAIza[0-9A-Za-z_\-]{30,}"),
    re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._~+/=\-]{12,}"),
    re.compile(r"(?i)\b((?:api[_-]?key|access[_-]?token|secret|password|passwd|authorization)[\"']?\s*[:=]\s*[\"']?)[^\s\"',}]{6,}"),
]
# Names of fields and query parameters whose values are secrets (config keys, ?token=...).
_SENSITIVE_KEY = re.compile(r"(?i)(api[_-]?key|^key$|token|secret|passw(?:or)?d|^pwd$|^auth$|authori[sz]ation|credential|session|signature|^sig$)")
MASK = "***"


def scrub_text(text: str | None) -> str | None:
    if not text:
        return text
    for pat in _SECRET_PATTERNS:
        text = pat.sub(lambda m: (m.group(1) if m.lastindex else "") + MASK, text)
    return text


def scrub_obj(obj):
    """Mask values under sensitive-looking keys and any key-shaped string, recursively."""
    if isinstance(obj, dict):
        return {k: (MASK if _SENSITIVE_KEY.search(str(k)) and v not in (None, "") else scrub_obj(v)) for k, v in obj.items()}
    if isinstance(obj, list):
        return [scrub_obj(v) for v in obj]
    if isinstance(obj, str):
        return scrub_text(obj)
    return obj


def scrub_config(raw: str | None) -> dict:
    try:
        data = json.loads(raw or "{}")
    except ValueError:
        return {"unparsed": scrub_text(raw)}
    return scrub_obj(data if isinstance(data, dict) else {"value": data})


def scrub_query(target: str) -> str:
    """A request target with the values of credential-named query parameters masked."""
    path, sep, query = target.partition("?")
    if not sep:
        return scrub_text(target)
    pairs = []
    for pair in query.split("&"):  # one by one: a pattern over the whole string would eat its neighbours
        name, eq, _value = pair.partition("=")
        pairs.append(f"{name}={MASK}" if eq and _SENSITIVE_KEY.search(unquote_plus(name)) else scrub_text(pair))
    return scrub_text(path) + "?" + "&".join(pairs)


class ScrubFilter(logging.Filter):
    """A logging filter that masks key-shaped strings in every record that passes."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if record.name == "uvicorn.access" and isinstance(args, tuple) and len(args) == 5:
            # uvicorn's access formatter unpacks (client, method, target, version, status): keep the shape.
            record.args = (args[0], args[1], scrub_query(str(args[2])), args[3], args[4])
            return True
        try:
            msg = record.getMessage()
        except Exception:  # noqa: BLE001 - a broken record is logged as is
            return True
        clean = scrub_text(msg)
        if clean != msg:
            record.msg, record.args = clean, ()
        return True


def install_log_scrubbing() -> None:
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "fastapi", "api"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, ScrubFilter) for f in logger.filters):
            logger.addFilter(ScrubFilter())


def document_open_reads(app) -> None:
    """On loopback, reads need no token: say so in the schema (`security: [{}, bearer]` on GETs)."""
    build = app.openapi

    def openapi():
        if app.openapi_schema is None:
            for ops in build()["paths"].values():
                op = ops.get("get")
                if op and op.get("security"):
                    op["security"] = [{}, *op["security"]]
        return app.openapi_schema

    app.openapi = openapi


# Generated text is untrusted: the page builds the DOM with textContent only, and this policy
# forbids inline scripts, inline handlers, eval and every origin but our own.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "font-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'; object-src 'none'"
)
# FastAPI's /docs and /redoc load their assets from jsDelivr; they show no generated text.
DOCS_CSP = (
    "default-src 'none'; script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
    "style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; img-src 'self' data: https://fastapi.tiangolo.com; "
    "connect-src 'self'; worker-src blob:; frame-ancestors 'none'; base-uri 'none'"
)
DOCS_PATHS = ("/docs", "/redoc")
# The Report page shows the report (datagen/report/render.py) in a sandboxed srcdoc frame, which
# inherits this policy: the report's one stylesheet is allowed by its hash, nothing else is added.
REPORT_CSP = CSP.replace("style-src 'self'", f"style-src 'self' '{STYLE_HASH}'")


class SecurityHeaders:
    """ASGI middleware: CSP and friends on every response."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"]
        csp = DOCS_CSP if path.startswith(DOCS_PATHS) else REPORT_CSP if path == "/report" else REPORT_HTML_CSP if path == "/api/report.html" else CSP

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [
                    (b"content-security-policy", csp.encode()),
                    (b"x-content-type-options", b"nosniff"),
                    (b"x-frame-options", b"DENY"),
                    (b"referrer-policy", b"no-referrer"),
                    (b"cross-origin-opener-policy", b"same-origin"),
                ]
                if scope["path"].startswith("/api/"):
                    headers.append((b"cache-control", b"no-store"))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


def host_name(header: str) -> str:
    """The name part of a Host header: 'Example.COM.:80' -> 'example.com', '[::1]:8000' -> '[::1]'."""
    value = header.strip().lower()
    if value.startswith("["):
        return value[: value.find("]") + 1] or value
    return value.rsplit(":", 1)[0].rstrip(".") if value.count(":") <= 1 else value


class HostCheck:
    """ASGI middleware against DNS rebinding: while reads need no token, only loopback names
    and the configured ones may reach the service. A page on attacker.example whose name the
    attacker re-points at 127.0.0.1 would otherwise read /api same-origin."""

    def __init__(self, app, allowed: tuple[str, ...]):
        self.app, self.allowed = app, set(allowed)

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            header = next((v for k, v in scope.get("headers", []) if k == b"host"), None)
            if header is not None:
                name = host_name(header.decode("latin-1"))
                if not (is_loopback(name) or name in self.allowed):
                    detail = f"Host {name[:100]!r} is not served here: add it with `datagen serve --allowed-host NAME` or DATAGEN_ALLOWED_HOSTS"
                    return await _json_error(send, 421, detail)
        await self.app(scope, receive, send)


class BodyLimit:
    """ASGI middleware: refuse request bodies over `max_bytes` with 413, declared or streamed."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    return await _json_error(send, 400, "bad Content-Length")
                if declared > self.max_bytes:
                    return await _json_error(send, 413, f"request body over {self.max_bytes} bytes")
        seen = 0
        started = refused = False

        async def counting_receive():
            nonlocal seen, refused
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    if not started and not refused:
                        refused = True
                        await _json_error(send, 413, f"request body over {self.max_bytes} bytes")
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message):
            nonlocal started
            if refused:
                return  # we already answered 413; drop whatever the app says after the disconnect
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        await self.app(scope, counting_receive, guarded_send)


async def _json_error(send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
