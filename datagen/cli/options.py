"""What every CLI module shares: the App class, --db, and options built from config.py's declarations.

The command modules import from here and never from datagen.cli (the package registers them)."""

from __future__ import annotations

import inspect
import sys
from typing import Any, Callable, Optional

import typer

from datagen.config import DB_PARAM, Param
from datagen.errors import DatagenError, one_line


class App(typer.Typer):
    """The one place a user-facing error becomes one line on stderr and an exit code; a bug keeps its traceback."""

    def __call__(self, *args, **kwargs):
        from datagen import config

        try:
            return super().__call__(*args, **kwargs)
        except Exception as exc:
            if config.env("debug"):
                raise
            bug = exc.__cause__ if isinstance(exc, DatagenError) else exc
            line = one_line(exc) if isinstance(exc, DatagenError) else f"internal error: {type(exc).__name__}: {one_line(exc)}"
            if bug is not None and not isinstance(bug, DatagenError):  # a bug: keep its traceback for the report
                line += f" (traceback in {crash_report(bug)})"
            print(f"error: {line}", file=sys.stderr)
            raise SystemExit(getattr(exc, "exit_code", 1)) from None


def crash_report(exc: BaseException) -> str:
    """Write the traceback beside the cache (temp file, then rename) and return its path."""
    import os
    import tempfile
    import time
    import traceback

    from datagen import config

    folder = config.cache_dir() / "crashes"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".crash-", suffix=".log")
        with os.fdopen(fd, "w") as f:
            f.write("".join(traceback.format_exception(exc)))
        path = folder / f"crash-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
        os.replace(tmp, path)
        return str(path)
    except OSError as err:
        return f"<not written: {err}>"


def typer_param(p: Param) -> tuple[Any, Any]:
    """(annotation, typer.Option/Argument) for one declared parameter."""
    if p.type is list:  # a repeatable option
        return list[str], typer.Option(list(p.default or []), *p.decls, help=p.help)
    ann = p.type if p.type is bool or p.required else Optional[p.type]
    if not p.flags:
        return ann, typer.Argument(... if p.required else p.default, help=p.help)
    return ann, typer.Option(... if p.required else p.default, *p.decls, help=p.help)


def declared(*params: Param) -> Callable:
    """Give a command taking **kwargs the signature of its declared parameters (typer reads the signature)."""

    def wrap(fn: Callable) -> Callable:
        sig, ann = [], {}
        if "ctx" in inspect.signature(fn).parameters:  # the command reads its typer.Context (which options were given)
            ann["ctx"] = typer.Context
            sig.append(inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context))
        for p in params:
            ann[p.name], default = typer_param(p)
            sig.append(inspect.Parameter(p.name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=ann[p.name]))
        fn.__signature__ = inspect.Signature(sig)  # type: ignore[attr-defined]
        fn.__annotations__ = {**ann, "return": None}
        return fn

    return wrap


DB = typer_param(DB_PARAM)[1]


def engine(db: str | None):
    """The database a command works on (created and upgraded when missing)."""
    from datagen import storage

    return storage.connect(db)
