"""What a job may be: a datagen command and its arguments, checked at submit by the command's own
declarations (datagen/config.py), the ones the CLI builds its options from; the CLI is not loaded."""

from __future__ import annotations

from typing import Any

from datagen.config import JOB_PARAMS, Param, check_combination, generate_options
from datagen.errors import InputError
from datagen.storage.models import unstorable

# `score` takes its options from its own command (datagen/scores/cli.py), parsed without the rest of the CLI.
KINDS = (*JOB_PARAMS, "score")
# The worker supplies these: the queue's database (from its environment, so no password lands in
# a job row or a process list) and a non-interactive display.
WORKER_OWNED = {"--db": "jobs run on the queue's database", "--progress": "jobs never draw a live display",
                "--no-progress": "jobs never draw a live display", "--lease-wait": "the worker sets it"}




def _click_param(p: Param) -> Any:
    import click

    kind = {int: click.INT, float: click.FLOAT, bool: click.BOOL}.get(p.type, click.STRING)
    default = {"required": True} if p.required else {"default": p.default}
    if not p.flags:
        return click.Argument([p.name], type=kind, **default)
    if p.type is list:  # a repeatable option
        return click.Option([p.name, *p.decls], type=click.STRING, multiple=True, **default)
    return click.Option([p.name, *p.decls], type=kind, **default)


def command(kind: str) -> Any:
    """A click command with the parameters `datagen KIND` declares (parsing only: it runs nothing)."""
    import click

    if kind not in KINDS:
        raise InputError(f"unknown job kind {kind!r}: use one of {', '.join(KINDS)}")
    if kind not in JOB_PARAMS:
        import typer

        from datagen.scores import cli as scores_cli

        one = typer.Typer()
        one.command(kind)(getattr(scores_cli, kind))
        return typer.main.get_command(one)
    return click.Command(kind, params=[_click_param(p) for p in JOB_PARAMS[kind]], add_help_option=False)


def validate(kind: str, args: list[str]) -> dict:
    """Parse `args` exactly as `datagen KIND` would; the parsed options, or InputError with one line."""
    cmd = command(kind)
    for a in args:  # the worker passes them to exec(), which refuses NUL; Postgres would refuse the row
        if unstorable(a):
            raise InputError(f"{kind} job: an argument holds a NUL character or an unpaired surrogate: {a[:60]!r}")
    if "--help" in args:
        raise InputError(f"{kind} job: --help is not a job")
    for a in args:
        flag = a.split("=", 1)[0]
        if flag in WORKER_OWNED:
            raise InputError(f"{kind} job: {flag} is not allowed ({WORKER_OWNED[flag]})")
    try:
        ctx = cmd.make_context(f"datagen {kind}", list(args), resilient_parsing=False)
    except Exception as exc:  # click's UsageError and friends, or Exit for --help
        if hasattr(exc, "format_message"):
            raise InputError(f"{kind} job: {exc.format_message().splitlines()[0]}") from None
        if type(exc).__name__ == "Exit":
            raise InputError(f"{kind} job: --help is not a job") from None
        raise
    params = dict(ctx.params)
    if kind == "generate":  # values too, by the same declarations the command checks them with
        try:
            # The API as named: the worker's environment (a key, a base URL) picks it when it is not.
            opts = generate_options(params)
            check_combination(opts, opts.api)
        except InputError as exc:
            raise InputError(f"generate job: {exc}") from None
    if kind == "score" and params.get("scorer") == "judge":
        from datagen.scores.cli_judge import judge_options

        try:
            judge_options(params)
        except InputError as exc:
            raise InputError(f"score job: {exc}") from None
    return params
