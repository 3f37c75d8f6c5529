"""Live progress for a generation run: a rich table on a terminal, a line every few seconds otherwise."""

from __future__ import annotations

import asyncio
import sys
import time

from rich.console import Console
from rich.live import Live
from rich.table import Table

from datagen.client import LLMClient
from datagen.pipeline import Progress


def _table(run: str, p: Progress, client: LLMClient) -> Table:
    c = client.counters
    elapsed = max(1e-6, time.monotonic() - p.started)
    t = Table(title=f"datagen run {run}", show_header=False, box=None)
    t.add_column(style="bold")
    t.add_column()
    t.add_row("accepted", f"{p.accepted}/{p.target}  ({p.in_progress} in progress)")
    rejected = sum(p.rejected.values())
    t.add_row("rejected", f"{rejected}  " + ", ".join(f"{k}={v}" for k, v in p.rejected.most_common(6)))
    t.add_row("requests", f"{c.requests}  ({c.requests / elapsed:.2f}/s, {c.errors} errors, {c.retries} retries, {c.rate_limited} rate-limited)")
    t.add_row("tokens", f"in {c.tokens_in:,}  out {c.tokens_out:,}  ({c.tokens_out / elapsed:.1f} out/s)")
    t.add_row("cost", f"${c.cost:.4f}")
    return t


def line(run: str, p: Progress, client: LLMClient) -> str:
    c = client.counters
    elapsed = max(1e-6, time.monotonic() - p.started)
    return (
        f"run={run} accepted={p.accepted}/{p.target} rejected={sum(p.rejected.values())} "
        f"requests={c.requests} errors={c.errors} tokens_out={c.tokens_out} cost=${c.cost:.4f} elapsed={elapsed:.0f}s"
    )


async def show(run: str, p: Progress, client: LLMClient, work: asyncio.Task, console: Console | None = None):
    """Render progress until `work` finishes; return its result."""
    console = console or Console(stderr=True)
    if console.is_terminal:
        with Live(_table(run, p, client), console=console, refresh_per_second=4, transient=False) as live:
            while not work.done():
                await asyncio.wait({work}, timeout=0.25)
                live.update(_table(run, p, client))
    else:
        last = 0.0
        while not work.done():
            await asyncio.wait({work}, timeout=1.0)
            if time.monotonic() - last >= 10:
                print(line(run, p, client), file=sys.stderr, flush=True)
                last = time.monotonic()
    return work.result()
