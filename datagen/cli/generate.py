"""`datagen generate`, `export`, `runs`, `batches`: thin shells over the library."""

from __future__ import annotations

import sys
import time
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from datagen.cli.options import DB, declared
from datagen.config import DRAINED, GENERATE_PARAMS, generate_options


@declared(*GENERATE_PARAMS)
def generate(**params) -> None:
    """Generate instructions, classify them, write instances, filter, store. Resumable by --run name.

    One process generates a run at a time. SIGTERM drains (in-flight candidates finish) and exits 75.
    --mode batch goes through the Batch API at half price; `generate --run NAME` picks it up later.
    """
    # Every value is checked here, before the database or a model is touched.
    opts = generate_options(params)
    progress, run = params["progress"], params["run"]
    import asyncio

    from datagen.generate import generate as run_generate
    from datagen import progress as live

    async def watch(name, prog, client, task):
        if progress:
            await live.show(name, prog, client, task)

    t0 = time.monotonic()
    try:
        name, prog = asyncio.run(run_generate(opts, on_start=watch))
    except KeyboardInterrupt:
        print(f"error: interrupted; resume with --run {run or '<name shown above>'}", file=sys.stderr)
        raise typer.Exit(130) from None
    secs = time.monotonic() - t0
    rejected = sum(prog.rejected.values())
    print(
        f"run={name} accepted={prog.accepted} rejected={rejected} seconds={secs:.1f} "
        f"per_minute={prog.accepted * 60 / max(secs, 1e-6):.1f}"
    )
    if prog.accepted < prog.target:  # drained by SIGTERM: resumable, not finished
        print(f"stopped at {prog.accepted}/{prog.target}; resume with --run {name}", file=sys.stderr)
        raise typer.Exit(DRAINED)


def runs(db: Optional[str] = DB) -> None:
    """List runs with counts, acceptance rate, rejection reasons, tokens and cost."""
    from datagen import storage

    engine = storage.connect(db, create=False)
    rows = storage.list_runs(engine)
    est = storage.batch_costs(engine, [r.id for r, _ in rows])
    t = Table("run", "lang", "api/model", "state", "kept/target", "rejected", "accept %", "top reasons", "requests", "tokens in/out", "cost $", "batch est $")
    for r, st in rows:
        t.add_row(
            r.name, r.lang, f"{r.api}/{r.model}", r.state, f"{st.kept}/{r.target}",
            str(st.by_status.get("rejected", 0)), f"{100 * st.acceptance:.1f}",
            ", ".join(f"{k}={v}" for k, v in st.by_reason.most_common(3)),
            f"{st.requests} ({st.errors} err)", f"{st.tokens_in:,}/{st.tokens_out:,}", f"{st.cost:.4f}",
            # estimated at submit (answers at max_tokens) and, of that, what is still in flight
            f"{est[r.id][0]:.4f} ({est[r.id][1]:.4f} open)" if r.id in est else "",
        )
    Console(width=200).print(t)


def batches(
    run: Optional[str] = typer.Option(None, "--run", help="Only this run."),
    db: Optional[str] = DB,
) -> None:
    """List batch-mode batches: provider id, endpoint, status, request counts, estimated and actual cost."""
    from datagen import storage

    engine = storage.connect(db, create=False)
    run_id = storage.run_id_of(engine, run)
    t = Table("id", "run", "stage", "provider id", "endpoint", "status", "done/failed/total", "est $", "cost $", "created")
    for b, name in storage.batches_with_runs(engine, run_id):
        t.add_row(
            str(b.id), name, b.stage, b.provider_id or "-", b.endpoint,
            b.status + ("" if b.ingested or b.status != "completed" else " (not ingested)"),
            f"{b.completed}/{b.failed}/{b.requests}", f"{b.cost_est:.4f}", f"{b.cost:.4f}" if b.ingested else "-",
            b.created_at.strftime("%Y-%m-%d %H:%M:%S"),
        )
    Console(width=200).print(t)


