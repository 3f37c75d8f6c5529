"""SQL functions that the dialects spell differently, declared once for every query that needs them."""

from __future__ import annotations

from sqlalchemy import Integer
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import GenericFunction


class least(GenericFunction):  # noqa: N801 - named as the SQL function
    """The smallest of its arguments: LEAST on Postgres (and MySQL), SQLite's multi-argument min()."""

    inherit_cache = True
    name = "least"


@compiles(least, "sqlite")
def _least_sqlite(element, compiler, **kw):
    return f"min({compiler.process(element.clauses, **kw)})"


class bin_of(GenericFunction):  # noqa: N801
    """floor(x) as an integer, for histogram bins of a non-negative number. CAST alone rounds on
    Postgres (0.98 * 20 -> 20) but truncates on SQLite, which has no floor() in every build."""

    type = Integer()
    inherit_cache = True
    name = "bin_of"


@compiles(bin_of)
def _bin_of(element, compiler, **kw):
    return f"CAST(floor({compiler.process(element.clauses, **kw)}) AS INTEGER)"


@compiles(bin_of, "sqlite")
def _bin_of_sqlite(element, compiler, **kw):
    return f"CAST({compiler.process(element.clauses, **kw)} AS INTEGER)"
