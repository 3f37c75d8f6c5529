"""The `datagen` command line: a thin shell over the library; each command parses options and calls one function.

Every command and sub-app is registered here, and only here. The command modules import what they
share from datagen.cli.options (never from this package), so any of them imports on its own.
`serve` is added by api/cli.py (the installed `datagen`), so the core never knows the API.
"""

from __future__ import annotations

from datagen.batch.cli import batches_app
from datagen.cli import data, db, generate, jobs, schedule
from datagen.cli.options import App
from datagen.report.cli import report
from datagen.scores import cli as scores_cli

app = App(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False, help="Self-instruct data: generate, curate, export.")
app.command()(generate.generate)
app.command()(data.export)
app.command()(generate.runs)
app.add_typer(batches_app, name="batches")
app.command()(data.dedup)
app.add_typer(data.seeds_app, name="seeds")
app.add_typer(db.db_app, name="db")
app.add_typer(jobs.jobs_app, name="jobs")
app.command("worker")(jobs.worker)
app.add_typer(schedule.schedule_app, name="schedule")
app.command("scheduler")(schedule.scheduler_command)
app.command("report")(report)
app.command("score")(scores_cli.score)
app.command("select")(scores_cli.select)
app.command("selections")(scores_cli.selections)


def main() -> None:
    app()
