"""`datagen jobs ...` and `datagen worker`: thin shells over datagen.jobs.queue and datagen.jobs.worker."""

from __future__ import annotations

import json
from typing import List, Optional

import typer
from rich.console import Console
from rich.table import Table

from datagen.cli.options import DB, engine as _engine
from datagen.config import AGAIN_AFTER, DEFAULT_QUEUE

jobs_app = typer.Typer(no_args_is_help=True, help="The job queue: submit, list, show, cancel.")

def _when(t) -> str:
    return t.strftime("%Y-%m-%d %H:%M:%S") if t else "-"


@jobs_app.command("submit", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def submit(
    ctx: typer.Context,
    kind: str = typer.Argument(..., help="generate | export | dedup | score"),
    queue_name: str = typer.Option(DEFAULT_QUEUE, "--queue", help="Queue the job waits in."),
    db: Optional[str] = DB,
) -> None:
    """Queue a job: `datagen jobs submit generate -- --api chat -n 500 --run nightly`. Options are checked now."""
    from datagen.jobs import queue

    job = queue.submit(_engine(db), kind, list(ctx.args), queue=queue_name)
    print(f"job {job.id} queued ({job.kind}{', run ' + job.run_name if job.run_name else ''})")


@jobs_app.command("list")
def list_(
    state: Optional[str] = typer.Option(None, "--state", help="queued | running | succeeded | failed | cancelled | skipped"),
    queue_name: Optional[str] = typer.Option(None, "--queue"),
    limit: int = typer.Option(50, "--limit"),
    db: Optional[str] = DB,
) -> None:
    """Jobs, newest first."""
    from datagen.jobs import queue

    rows = queue.list_jobs(_engine(db), state=state, queue=queue_name, limit=limit)
    t = Table("id", "kind", "queue", "state", "run", "tries", "worker", "created", "tokens in/out", "cost $", "message")
    for j in rows:
        t.add_row(str(j.id), j.kind, j.queue, j.state, j.run_name or "-", str(j.attempts), j.claimed_by or "-",
                  _when(j.created_at), f"{j.tokens_in:,}/{j.tokens_out:,}", f"{j.cost:.4f}", (j.exit_message or "")[:60])
    Console(width=200).print(t)


@jobs_app.command("show")
def show(job_id: int = typer.Argument(...), db: Optional[str] = DB) -> None:
    """One job with its attempts (who ran it, when, how it ended)."""
    from datagen.jobs import queue

    job, attempts = queue.get(_engine(db), job_id)
    print(f"job {job.id}: {job.kind} {' '.join(json.loads(job.args))}")
    print(f"state={job.state} queue={job.queue} run={job.run_name or '-'} attempts={job.attempts} "
          f"tokens={job.tokens_in}/{job.tokens_out} cost=${job.cost:.4f}")
    print(f"created={_when(job.created_at)} started={_when(job.started_at)} finished={_when(job.finished_at)}")
    if job.exit_message:
        print(f"message: {job.exit_message}")
    t = Table("#", "worker", "state", "started", "finished", "exit", "tokens in/out", "cost $", "message")
    for a in attempts:
        t.add_row(str(a.n), a.worker, a.state, _when(a.started_at), _when(a.finished_at),
                  "-" if a.exit_code is None else str(a.exit_code), f"{a.tokens_in:,}/{a.tokens_out:,}", f"{a.cost:.4f}",
                  (a.exit_message or "")[:80])
    Console(width=200).print(t)


@jobs_app.command("cancel")
def cancel(job_id: int = typer.Argument(...), db: Optional[str] = DB) -> None:
    """Cancel a queued job now, or stop a running one within seconds."""
    from datagen.jobs import queue

    job = queue.cancel(_engine(db), job_id)
    if job.state == "running":
        print(f"job {job.id} cancel requested; its worker stops it within seconds")
    else:
        print(f"job {job.id} cancelled")


def worker(
    concurrency: int = typer.Option(1, "--concurrency", min=1, help="Jobs run at once by this worker."),
    queue_names: List[str] = typer.Option([DEFAULT_QUEUE], "--queue", help="Queue to take jobs from (repeatable)."),
    lease_ttl: Optional[float] = typer.Option(None, "--lease-ttl", min=1.0, help="Seconds a job stays claimed without a heartbeat [default: DATAGEN_LEASE_TTL or 30]."),
    poll: float = typer.Option(1.0, "--poll", min=0.05, help="Seconds between looks at an empty queue."),
    max_idle: Optional[float] = typer.Option(None, "--max-idle", help="Exit 0 after this many seconds with nothing to do."),
    again_after: float = typer.Option(AGAIN_AFTER, "--again-after", min=0.0, help="Seconds before a job that exited unfinished (75, e.g. a --no-wait batch round) is run again."),
    alive_file: Optional[str] = typer.Option(None, "--alive-file", help="Touched on every pass of the loop (container healthcheck: a hung worker stops touching it)."),
    db: Optional[str] = DB,
) -> None:
    """Claim and run queued jobs until SIGTERM (which drains: jobs in flight are handed back, exit 0)."""
    from datagen.jobs.worker import Worker
    from datagen.lease import LEASE_TTL
    from datagen.storage import resolve_url

    engine = _engine(db)
    w = Worker(engine, resolve_url(db), queues=queue_names, concurrency=concurrency, ttl=lease_ttl or LEASE_TTL, poll=poll,
               again_after=again_after, alive_file=alive_file)
    raise typer.Exit(w.run(max_idle=max_idle))
