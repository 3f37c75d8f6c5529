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
        try:
            return super().__call__(*args, **kwargs)
        except DatagenError as exc:
            print(f"error: {one_line(exc)}", file=sys.stderr)
            raise SystemExit(1) from None


def typer_param(p: Param) -> tuple[Any, Any]:
    """(annotation, typer.Option/Argument) for one declared parameter."""
    ann = p.type if p.type is bool or p.required else Optional[p.type]
    if not p.flags:
        return ann, typer.Argument(... if p.required else p.default, help=p.help)
    return ann, typer.Option(... if p.required else p.default, *p.decls, help=p.help)


def declared(*params: Param) -> Callable:
    """Give a command taking **kwargs the signature of its declared parameters (typer reads the signature)."""

    def wrap(fn: Callable) -> Callable:
        sig, ann = [], {}
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
