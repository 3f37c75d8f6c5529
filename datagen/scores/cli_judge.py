"""`datagen score --scorer judge ...`: the judge's options as a CLI (a thin shell over score_judge).

The score command itself belongs to datagen/scores/ (IFD and the judge share it); this module holds the
judge's flags and the call, so the command only has to hand `--scorer judge` here.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Optional

import typer

from datagen.config import DRAINED, JudgeOptions

J = JudgeOptions.model_fields


def _opt(name: str, *flags: str):
    f = J[name]
    return typer.Option(f.default if f.default is not ... else None, *flags, help=f.description)


def judge_options(params: dict) -> JudgeOptions:
    """The judge's parsed CLI parameters as options, every value checked (a job's too, at submit)."""
    from datagen.cli import validated

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


def score(
    run: str = typer.Option(..., "--run", help=J["run"].description),
    scorer: str = typer.Option("judge", "--scorer", help="judge (ifd: see the scores module)"),
    api: str = _opt("api", "--api"),
    model: str = _opt("model", "--model"),
    base_url: Optional[str] = _opt("base_url", "--base-url"),
    rubric: str = _opt("rubric", "--rubric"),
    db: Optional[str] = typer.Option(None, "--db", help="SQLAlchemy URL or SQLite path [env: DATAGEN_DATABASE_URL; default: sqlite:///datagen.db]"),
    mode: str = _opt("mode", "--mode"),
    concurrency: int = _opt("concurrency", "--concurrency"),
    rpm: Optional[float] = _opt("rpm", "--rpm"),
    tpm: Optional[float] = _opt("tpm", "--tpm"),
    max_tries: int = _opt("max_tries", "--max-tries"),
    timeout: float = _opt("timeout", "--timeout"),
    context_window: int = _opt("context_window", "--context-window"),
    price_in: Optional[float] = _opt("price_in", "--price-in"),
    price_out: Optional[float] = _opt("price_out", "--price-out"),
    budget: Optional[float] = _opt("budget", "--budget"),
    limit: Optional[int] = _opt("limit", "--limit"),
    wait: bool = typer.Option(True, "--wait/--no-wait", help=J["wait"].description),
    poll_interval: float = _opt("poll_interval", "--poll-interval"),
    max_enqueued_tokens: Optional[int] = _opt("max_enqueued_tokens", "--max-enqueued-tokens"),
    batch_max_lines: int = _opt("batch_max_lines", "--batch-max-lines"),
    lease_wait: float = _opt("lease_wait", "--lease-wait"),
) -> None:
    """Score a run's kept samples with a judge model by a rubric (accuracy 0-5, complexity or quality 1-6, or a FILE).

    Resumable: run the same command again after any stop; a scored sample is never asked again.
    """
    from datagen.errors import InputError

    if scorer != "judge":
        raise InputError(f"unknown --scorer {scorer!r} here: this command scores with judge")
    params = dict(locals())
    run_judge(judge_options(params))
