"""`datagen generate`, `runs`: thin shells over the library (`batches` is datagen/batch/cli.py)."""

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
def generate(ctx: typer.Context, **params) -> None:
    """Generate instructions, classify them, write instances, filter, store. Resumable by --run name.

    One process generates a run at a time. SIGTERM drains (in-flight candidates finish) and exits 75.
    --mode batch goes through the Batch API at half price; `generate --run NAME` picks it up later.
    """
    # Every value is checked here, before the database or a model is touched.
    opts = generate_options(params)
    progress, run = params["progress"], params["run"]
    # `generate --run NAME` and nothing else reads as a resume: a NAME that is no run is refused.
    given = {k for k in ctx.params if getattr(ctx.get_parameter_source(k), "name", "") not in ("DEFAULT", "DEFAULT_MAP")}
    resume_only = run is not None and not given - {"run", "db", "progress", "lease_wait", "wait"}
    import asyncio

    from datagen.generate import generate as run_generate
    from datagen import progress as live

    async def watch(name, prog, client, task):
        if progress:
            await live.show(name, prog, client, task)

    t0 = time.monotonic()
    try:
        name, prog = asyncio.run(run_generate(opts, on_start=watch, resume_only=resume_only))
    except KeyboardInterrupt:
        print(f"error: interrupted; resume with --run {run or '<name shown above>'}", file=sys.stderr)
        raise typer.Exit(130) from None
    secs = time.monotonic() - t0
    rejected = sum(prog.rejected.values())
    print(
        f"run={name} accepted={prog.accepted} rejected={rejected} seconds={secs:.1f} "
        f"per_minute={prog.accepted * 60 / max(secs, 1e-6):.1f}"
    )
    if prog.note:
        print(prog.note)
    if prog.accepted < prog.target:  # drained by SIGTERM: resumable, not finished
        print(f"stopped at {prog.accepted}/{prog.target}; resume with --run {name}", file=sys.stderr)
        raise typer.Exit(DRAINED)


def runs(db: Optional[str] = DB) -> None:
    """List runs with counts, acceptance rate, rejection reasons, tokens and cost."""
    from datagen.storage.overview import list_run_lines  # SQLite without SQLAlchemy: a fast start

    t = Table("run", "lang", "api/model", "state", "kept/target", "rejected", "accept %", "top reasons", "requests", "tokens in/out", "cost $", "batch est $")
    for r in list_run_lines(db):
        st = r.stats
        t.add_row(
            r.name, r.lang, f"{r.api}/{r.model}", r.state, f"{st.kept}/{r.target}",
            str(st.by_status.get("rejected", 0)), f"{100 * st.acceptance:.1f}",
            ", ".join(f"{k}={v}" for k, v in st.by_reason.most_common(3)),
            f"{st.requests} ({st.errors} err" + (f", {st.lost} lost" if st.lost else "") + ")",
            f"{st.tokens_in:,}/{st.tokens_out:,}",
            # a request cut off by kill -9 may have been served and billed: its cost is not known
            f"{st.cost:.4f}" + (f" + unknown ({st.lost} lost)" if st.lost else ""),
            # estimated at submit (answers at max_tokens) and, of that, what is still in flight
            f"{r.batch_est[0]:.4f} ({r.batch_est[1]:.4f} open)" if r.batch_est else "",
        )
    Console(width=200).print(t)
