"""`datagen score --scorer judge ...`: the judge's flags and the call (a thin shell over score_judge).

The score command itself is datagen/scores/cli.py (IFD and the judge share it); it hands `--scorer judge`
here, and a `score` job is checked at submit by the same judge_options.
"""

from __future__ import annotations

import asyncio
import sys

import typer

from datagen.config import DRAINED, JudgeOptions

J = JudgeOptions.model_fields


def opt(name: str, *flags: str):
    """A typer option whose default and help come from JudgeOptions (the score command's judge flags)."""
    f = J[name]
    return typer.Option(f.default if f.default is not ... else None, *flags, help=f.description)


def judge_options(params: dict) -> JudgeOptions:
    """The judge's parsed CLI parameters as options, every value checked (a job's too, at submit)."""
    from datagen.config import validated

    p = {k: v for k, v in params.items() if k in J and v is not None}
    return validated(JudgeOptions, **p)


def run_judge(opts: JudgeOptions) -> None:
    """Score, print the report line; exit 75 when the session stopped with samples left (SIGTERM, --no-wait)."""
    from datagen.scores.judge import score_judge

    try:
        report = asyncio.run(score_judge(opts))
    except KeyboardInterrupt:
        print(f"error: interrupted; run the same command to go on scoring run {opts.run}", file=sys.stderr)
        raise typer.Exit(130) from None
    print(report.line())
    if report.errors:
        print("unusable answers: " + ", ".join(f"{k}={v}" for k, v in sorted(report.errors.items())), file=sys.stderr)
    if report.gave_up:
        print(f"{report.gave_up} samples stay unscored after {opts.max_tries} unusable answers each (raise --max-tries to ask again)",
              file=sys.stderr)
    if report.remaining and (report.stopped or (opts.mode == "batch" and not opts.wait)):
        print(f"{report.remaining} samples left; run the same command to go on", file=sys.stderr)
        raise typer.Exit(DRAINED)
