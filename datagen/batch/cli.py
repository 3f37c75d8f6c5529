"""`datagen batches`: list a run's provider batches; `cancel` and `abandon` one that cannot finish."""

from __future__ import annotations

import asyncio
import sys
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

DB = typer.Option(None, "--db", help="SQLAlchemy URL or SQLite path [env: DATAGEN_DATABASE_URL; default: sqlite:///datagen.db]")

batches_app = typer.Typer(help="Batch-mode batches: list them (the default), cancel or abandon one.")


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@batches_app.callback(invoke_without_command=True)
def batches(
    ctx: typer.Context,
    run: Optional[str] = typer.Option(None, "--run", help="Only this run."),
    db: Optional[str] = DB,
) -> None:
    """List batch-mode batches: provider id, endpoint, status, request counts, estimated and actual cost, why one failed."""
    if ctx.invoked_subcommand is not None:
        return
    from datagen import storage
    from datagen.batch.run import first_error

    engine = storage.connect(db, create=False)
    run_id = storage.run_id_of(engine, run)
    t = Table("id", "run", "stage", "provider id", "endpoint", "status", "done/failed/total", "est $", "cost $", "created", "reason")
    for b, name in storage.batches_with_runs(engine, run_id):
        t.add_row(
            str(b.id), escape(name), b.stage, escape(b.provider_id or "-"), escape(b.endpoint),
            escape(b.status) + ("" if b.ingested or b.status != "completed" else " (not ingested)"),
            f"{b.completed}/{b.failed}/{b.requests}", f"{b.cost_est:.4f}", f"{b.cost:.4f}" if b.ingested else "-",
            b.created_at.strftime("%Y-%m-%d %H:%M:%S"), escape(first_error(b.errors)),  # the provider's words: text only
        )
    Console(width=240).print(t)


@batches_app.command("cancel")
def cancel_command(
    batch_id: int = typer.Argument(..., help="The batch's id (first column of `datagen batches`)."),
    wait: float = typer.Option(60.0, "--wait", min=0.0, help="Seconds to wait for the provider to end it, then store what it finished."),
    db: Optional[str] = DB,
) -> None:
    """Cancel a batch at the provider and store the lines it finished; one the provider never saw is dropped."""
    from datagen import storage
    from datagen.batch.manage import cancel

    status = asyncio.run(cancel(storage.connect(db, create=False), batch_id, _say, wait=wait))
    print(f"batch {batch_id}: {status}")


@batches_app.command("abandon")
def abandon_command(
    batch_id: int = typer.Argument(..., help="The batch's id (first column of `datagen batches`)."),
    db: Optional[str] = DB,
) -> None:
    """Stop tracking a batch the provider refuses for good, without asking it; its lines are asked again on resume."""
    from datagen import storage
    from datagen.batch.manage import abandon

    abandon(storage.connect(db, create=False), batch_id, _say)
    print(f"batch {batch_id}: abandoned")
