"""What a job may be: a datagen command and its arguments, checked at submit by the command's own
declarations (datagen/config.py), the ones the CLI builds its options from; the CLI is not loaded."""

from __future__ import annotations

from typing import Any

from datagen.config import JOB_PARAMS, Param, check_combination, generate_options
from datagen.errors import InputError

KINDS = tuple(JOB_PARAMS)
# The worker supplies these: the queue's database (from its environment, so no password lands in
# a job row or a process list) and a non-interactive display.
WORKER_OWNED = {"--db": "jobs run on the queue's database", "--progress": "jobs never draw a live display",
                "--no-progress": "jobs never draw a live display", "--lease-wait": "the worker sets it"}


class JobError(InputError):
    """A job refused at submit."""


def _click_param(p: Param) -> Any:
    import click

    kind = {int: click.INT, float: click.FLOAT, bool: click.BOOL}.get(p.type, click.STRING)
    default = {"required": True} if p.required else {"default": p.default}
    if not p.flags:
        return click.Argument([p.name], type=kind, **default)
    return click.Option([p.name, *p.decls], type=kind, **default)


def command(kind: str) -> Any:
    """A click command with the parameters `datagen KIND` declares (parsing only: it runs nothing)."""
    import click

    if kind not in KINDS:
        raise JobError(f"unknown job kind {kind!r}: use one of {', '.join(KINDS)}")
    return click.Command(kind, params=[_click_param(p) for p in JOB_PARAMS[kind]], add_help_option=False)


def validate(kind: str, args: list[str]) -> dict:
    """Parse `args` exactly as `datagen KIND` would; the parsed options, or JobError with one line."""
    cmd = command(kind)
    if "--help" in args:
        raise JobError(f"{kind} job: --help is not a job")
    for a in args:
        flag = a.split("=", 1)[0]
        if flag in WORKER_OWNED:
            raise JobError(f"{kind} job: {flag} is not allowed ({WORKER_OWNED[flag]})")
    import click

    try:
        ctx = cmd.make_context(f"datagen {kind}", list(args), resilient_parsing=False)
    except click.ClickException as exc:
        raise JobError(f"{kind} job: {exc.format_message().splitlines()[0]}") from None
    params = dict(ctx.params)
    if kind == "generate":  # values too, by the same declarations the command checks them with
        try:
            # The API as named: the worker's environment (a key, a base URL) picks it when it is not.
            opts = generate_options(params)
            check_combination(opts, opts.api)
        except InputError as exc:
            raise JobError(f"generate job: {exc}") from None
    return params
