"""The root of every error a user should see as one line (bad input, unreachable server, ...).

Anything else is a bug and keeps its traceback. Each class carries its HTTP status, so the CLI
and the API each have one handler for all of them.
"""

from __future__ import annotations


class DatagenError(Exception):
    """A problem worth one clear line to the user and a non-zero exit."""

    http_status = 400

    def body(self) -> dict:
        """The API's JSON answer."""
        return {"detail": str(self)}


class InputError(DatagenError):
    """Bad input: an option, a file, a URL, a query."""

    http_status = 422

    def body(self) -> dict:
        # Shaped like every other 422 (a list of {loc, msg, type}), as the OpenAPI schema says.
        return {"detail": [{"loc": ["query"], "msg": str(self), "type": "value_error"}]}


class NotFound(DatagenError):
    http_status = 404


class Conflict(DatagenError):
    """The change would break a rule of the data (a duplicate, a filter generation applies)."""

    http_status = 409


class Unavailable(DatagenError):
    """A database or model server that cannot be reached or used."""

    http_status = 503


class Crashed(DatagenError):
    """A bug inside a command (not the user's input): one line for the user; its cause keeps the traceback."""

    http_status = 500


def one_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [exc.__class__.__name__])[0]
