"""`datagen schedule ...` and `datagen scheduler`: thin shells over datagen.jobs.schedules / scheduler."""

from __future__ import annotations

import logging
import shlex
from pathlib import Path
from typing import List, Optional

import typer

from datagen.cli.options import DB, engine as _engine
from datagen.config import DEFAULT_QUEUE, DEFAULT_TICK

schedule_app = typer.Typer(no_args_is_help=True, help="Cron schedules that submit jobs (run by `datagen scheduler`).")


def _line(sch) -> str:
    from datagen.jobs.schedules import local_time

    nxt = "paused" if sch.paused else local_time(sch.next_fire_at, sch.tz)
    return f"{sch.name}  cron='{sch.cron}' tz={sch.tz} next={nxt} misfire={sch.misfire} overlap={sch.overlap}"


@schedule_app.command("add")
def add(
    name: str = typer.Argument(..., help="Schedule name."),
    job: Optional[List[str]] = typer.Argument(None, help="After --: the job, e.g. generate --api chat -n 100 --run nightly"),
    cron: str = typer.Option(..., "--cron", help="Five cron fields, read in --tz, e.g. '0 2 * * *'."),
    tz: str = typer.Option("UTC", "--tz", help="IANA time zone, e.g. Asia/Shanghai."),
    misfire: str = typer.Option("skip", "--misfire", help="Slots missed while no scheduler ran: skip | run_once | catch_up:N"),
    overlap: str = typer.Option("skip", "--overlap", help="When the previous job still runs: skip | queue | replace"),
    queue: str = typer.Option(DEFAULT_QUEUE, "--queue", help="Job queue the jobs go to."),
    db: Optional[str] = DB,
) -> None:
    """Add a schedule; bad cron, zone or job options are refused now, not when it fires."""
    from datagen.jobs import schedules

    sch = schedules.create(_engine(db), name, cron=cron, tz=tz, job=list(job or []), misfire=misfire, overlap=overlap, queue=queue)
    print(f"added {_line(sch)}")


@schedule_app.command("list")
def list_(db: Optional[str] = DB) -> None:
    """Schedules with their next fire time in their own zone and their latest job (skipped ones with the reason)."""
    from datagen.jobs import queue
    from datagen.storage import schedules as store

    engine = _engine(db)
    for sch in store.list_schedules(engine):
        last = queue.list_jobs(engine, schedule_id=sch.id, limit=1)
        seen = f"  last: job {last[0].id} {last[0].state}" + (f" ({last[0].exit_message})" if last[0].exit_message else "") if last else ""
        print(f"{_line(sch)}  job: {sch.kind} {shlex.join(store.args_of(sch))}{seen}")


@schedule_app.command("pause")
def pause(name: str = typer.Argument(...), db: Optional[str] = DB) -> None:
    """Stop firing until resume."""
    from datagen.jobs import schedules

    print(f"paused {_line(schedules.pause(_engine(db), name))}")


@schedule_app.command("resume")
def resume(name: str = typer.Argument(...), db: Optional[str] = DB) -> None:
    """Resume; slots that fell in the pause are not run."""
    from datagen.jobs import schedules

    print(f"resumed {_line(schedules.resume(_engine(db), name))}")


@schedule_app.command("run-now")
def run_now(name: str = typer.Argument(...), db: Optional[str] = DB) -> None:
    """Queue the schedule's job now, outside its slots."""
    from datagen.jobs import schedules

    job = schedules.run_now(_engine(db), name)
    print(f"queued job {job.id}")


@schedule_app.command("remove")
def remove(name: str = typer.Argument(...), db: Optional[str] = DB) -> None:
    """Remove a schedule; the jobs it submitted stay in the history."""
    from datagen.jobs import schedules

    schedules.remove(_engine(db), name)
    print(f"removed {name}")


def scheduler_command(
    db: Optional[str] = DB,
    tick: float = typer.Option(DEFAULT_TICK, "--tick", min=0.05, help="Seconds between looks at the schedules."),
    alive_file: Optional[Path] = typer.Option(None, "--alive-file", help="Touched after every tick (container healthcheck)."),
    clock_speed: float = typer.Option(1.0, "--clock-speed", min=1.0, hidden=True, help="Tests only: run the clock this many times faster."),
) -> None:
    """Fire due schedules into the job queue until SIGTERM. One is enough; a second never double-fires."""
    from datagen.jobs import scheduler

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    engine = _engine(db)
    print(f"scheduler: ticking every {tick:g}s", flush=True)
    scheduler.run(engine, tick_s=tick, clock=scheduler.Clock(clock_speed), alive_file=alive_file)
