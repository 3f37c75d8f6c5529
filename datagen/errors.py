"""Every error a user should see as one line (bad input, unreachable server, ...), in one module.

Anything else is a bug and keeps its traceback. Each class carries its HTTP status, so the CLI
(one line on stderr, exit 1) and the API (JSON with that status) each have one handler for all of
them. A class exists only where a caller tells it apart from its parent; raise the parent otherwise.

    DatagenError            400  the root: what the CLI and the API handlers catch
    ├── InputError          422  bad input: an option, a file, a URL, a query, a job or a schedule
    ├── NotFound            404  no such run, sample, job or schedule
    ├── Conflict            409  breaks a rule of the data, or the state of a job, schedule or run
    │   └── RuleViolation   409  an edit or approval the run's filters reject (the body carries the findings)
    ├── Unavailable         503  a database or model server that cannot be reached or used
    │   ├── StorageError         the database: workers and schedulers wait and try again
    │   │   └── DatabaseGone         the server went away (restart, failover): a run waits for it, then exits DB_GONE
    │   └── FatalBackendError    the model server: nothing will work (bad key, unknown model), the run stops
    ├── BackendError             one failed model call; `retryable` ones are tried again
    │   └── BatchRefused         the server takes one prompt per request: send them one by one
    ├── BudgetSpent              --budget leaves no room for the next request: the run stops, resumable
    ├── LeaseHeld                another live process holds the run (or the run's scoring): the judge names it
    ├── Crashed             500  a bug inside a command: one line for the user, the traceback kept in a file
    └── TrainError               `datagen-train` refused or failed (its CLI's one handler)
"""

from __future__ import annotations

from datagen.config import DB_GONE


class DatagenError(Exception):
    """A problem worth one clear line to the user and a non-zero exit."""

    http_status = 400

    def body(self) -> dict:
        """The API's JSON answer."""
        return {"detail": str(self)}


class InputError(DatagenError):
    """Bad input: an option, a file, a URL, a query, a job's arguments, a schedule."""

    http_status = 422

    def body(self) -> dict:
        # Shaped like every other 422 (a list of {loc, msg, type}), as the OpenAPI schema says.
        return {"detail": [{"loc": ["query"], "msg": str(self), "type": "value_error"}]}


class NotFound(DatagenError):
    http_status = 404


class Conflict(DatagenError):
    """The change would break a rule of the data (a duplicate, a filter generation applies) or a state."""

    http_status = 409


class RuleViolation(Conflict):
    """A change that would keep a sample generation would have rejected."""

    def __init__(self, findings: dict, hint: str = ""):
        super().__init__("generation would reject this sample: " + "; ".join(findings["reasons"]) + hint)
        self.findings = findings

    def body(self) -> dict:
        return {"detail": str(self), "findings": self.findings}


class Unavailable(DatagenError):
    """A database or model server that cannot be reached or used."""

    http_status = 503


class StorageError(Unavailable):
    """The database is down, locked, read-only, full, or at a schema this datagen does not know."""


class DatabaseGone(StorageError):
    """The database server went away (a restart, a failover, the network): worth waiting for."""

    exit_code = DB_GONE  # a job worker hands the job back to the queue


class FatalBackendError(Unavailable):
    """Nothing will work (bad key, unknown model, unreachable server): stop the run."""


class BackendError(DatagenError):
    """One failed attempt. `retryable` failures are tried again; others fail the prompt."""

    def __init__(self, message: str, *, retryable: bool, retry_after: float | None = None):
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after


class BatchRefused(BackendError):
    """The server refused a request carrying several prompts (llama.cpp's server takes one): send them one by one."""

    def __init__(self, message: str):
        super().__init__(message, retryable=True)


class BudgetSpent(DatagenError):
    """The run's --budget leaves no room for the next request (or batch)."""


class TrainError(DatagenError):
    """A training run refused or failed."""


class LeaseHeld(DatagenError):
    """Another live process holds the lease this command needs."""


class Crashed(DatagenError):
    """A bug inside a command (not the user's input): one line for the user; its cause keeps the traceback."""

    http_status = 500


def one_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [exc.__class__.__name__])[0]
