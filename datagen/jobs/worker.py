"""`datagen worker`: claim jobs, run each as a child `datagen KIND ARGS` process, heartbeat, finish.

Why child processes rather than library calls in the worker: a job that crashes, leaks or hangs
(a native model library, an OOM kill) takes down only itself; cancelling is a signal the child
already understands (SIGINT stops generate at once, SIGTERM drains it); and a job runs exactly
the CLI a user would type, options and validation included. The cost is a Python start per job
(about a second on a small machine). Children die with their worker (PR_SET_PDEATHSIG), so a
worker killed with -9 leaves no orphan generating its run.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.engine import Engine

from datagen.config import AGAIN_AFTER, DB_GONE, DRAINED, ENV, LEASE_TTL
from datagen.errors import StorageError, one_line
from datagen.jobs import queue
from datagen.liveness import HOST, pid_alive
from datagen.storage import jobs as store
from datagen.storage.models import Job, JobAttempt

CANCEL_GRACE = 5.0  # seconds a cancelled child gets to stop on SIGINT before SIGKILL


def _die_with_parent() -> None:
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:  # not Linux: an orphan is still stopped by the run lease and job lease rules
        pass


@dataclass
class Slot:
    job: Job
    attempt: JobAttempt
    proc: subprocess.Popen
    out: object
    err: object
    beat_at: float = field(default_factory=time.monotonic)
    cancelling_since: float | None = None
    lost: bool = False


def _signame(n: int) -> str:
    try:
        return signal.Signals(n).name
    except ValueError:
        return f"signal {n}"


def _last_line(f) -> str | None:
    f.seek(0)
    lines = [ln.strip() for ln in f.read().decode("utf-8", "replace").splitlines() if ln.strip()]
    return lines[-1][:500] if lines else None


class Worker:
    def __init__(self, engine: Engine, db_url: str, *, queues: list[str], concurrency: int = 1, ttl: float = LEASE_TTL,
                 poll: float = 1.0, again_after: float = AGAIN_AFTER, alive_file: str | None = None):
        self.engine, self.db_url, self.queues = engine, db_url, queues
        self.concurrency, self.ttl, self.poll, self.again_after = max(1, concurrency), ttl, poll, again_after
        self.name = f"{HOST}:{os.getpid()}"
        self.alive_file = alive_file  # touched on every pass of the loop: a hung loop stops touching it
        self.slots: dict[int, Slot] = {}
        self.stopping = False

    def log(self, msg: str) -> None:
        print(f"worker {self.name}: {msg}", file=sys.stderr, flush=True)

    # ------------------------------------------------------------ children

    def _start(self, job: Job, attempt: JobAttempt) -> None:
        args = json.loads(job.args)
        if job.kind == "generate":  # wait out a dead holder's run lease on another machine
            args += ["--no-progress", "--lease-wait", str(2 * self.ttl)]
        env = {**os.environ, ENV["database_url"]: self.db_url, ENV["lease_ttl"]: str(self.ttl)}
        out, err = tempfile.TemporaryFile(), tempfile.TemporaryFile()
        try:
            proc = subprocess.Popen([sys.executable, "-m", "datagen.cli", job.kind, *args], env=env, stdin=subprocess.DEVNULL,
                                    stdout=out, stderr=err, start_new_session=True, preexec_fn=_die_with_parent)
        except (OSError, ValueError) as exc:  # an argument exec refuses (a NUL stored before submit checked): the job fails, not the worker
            out.close()
            err.close()
            queue.finish(self.engine, job, attempt, attempt_state="failed", job_state="failed", message=f"cannot start: {one_line(exc)}")
            self.log(f"job {job.id} failed: cannot start: {one_line(exc)}")
            return
        self.slots[job.id] = Slot(job, attempt, proc, out, err)
        self.log(f"job {job.id} ({job.kind}) attempt {attempt.n} started, pid {proc.pid}")

    def _finish(self, slot: Slot, rc: int) -> None:
        again_in = None
        if slot.cancelling_since is not None:
            states = ("cancelled", "cancelled")
        elif slot.lost:
            states = ("lost", "running")
        elif rc == 0:
            states = ("succeeded", "succeeded")
        elif self.stopping and rc in (DRAINED, 130, -signal.SIGTERM, -signal.SIGINT):
            states = ("released", "queued")  # drained or stopped by us: another worker resumes it
        elif rc == DRAINED:  # unfinished by its own account (a --no-wait batch round): again later
            states, again_in = ("released", "queued"), self.again_after
        elif rc < 0 or rc == DB_GONE:
            # Killed by a signal we did not send (the OOM killer's -9), or its database went away for
            # longer than it waits: retried like a job whose worker died, within the same limit.
            retry = slot.job.attempts < queue.MAX_ATTEMPTS
            states, again_in = ("lost", "queued" if retry else "failed"), (self.poll if retry else None)
        else:
            states = ("failed", "failed")
        msg = _last_line(slot.out) if rc == 0 else (_last_line(slot.err) or f"exit status {rc}")
        if rc < 0:
            msg = f"killed by {_signame(-rc)}" + (" (out of memory?)" if rc == -signal.SIGKILL else "")
        if states[0] == "cancelled":
            msg = "cancelled"
        elif states[0] == "lost":
            msg = (f"{msg}; again in {again_in:g} s (attempt {slot.job.attempts} of {queue.MAX_ATTEMPTS})" if again_in is not None
                   else f"{msg}; lost {slot.job.attempts} times, not retried")
        elif again_in is not None and states[0] != "lost":
            msg = f"unfinished, again in {again_in:g} s ({msg})"
        elif states[0] == "released":
            msg = f"released by a stopping worker ({msg})"
        if not slot.lost:  # a database error here leaves the slot as it was: the next tick tries again
            queue.finish(self.engine, slot.job, slot.attempt, attempt_state=states[0], job_state=states[1], exit_code=rc,
                         message=msg, again_in=again_in)
        slot.out.close()
        slot.err.close()
        self.log(f"job {slot.job.id} {states[0]}: {msg}")

    def _tend(self, slot: Slot) -> bool:
        """Heartbeat and watch one child; True once it has exited and been recorded."""
        rc = slot.proc.poll()
        if rc is not None:
            self._finish(slot, rc)
            return True
        now = time.monotonic()
        if now - slot.beat_at >= min(self.ttl / 3, 1.0):
            slot.beat_at = now
            verdict = queue.heartbeat(self.engine, slot.job, slot.attempt, self.ttl)
            if verdict is None and not slot.lost:  # our lease ran out and another worker has the job
                slot.lost = True
                self.log(f"job {slot.job.id}: lease lost to another worker; stopping the child")
                slot.proc.kill()
            elif verdict and slot.cancelling_since is None:
                slot.cancelling_since = now
                slot.proc.send_signal(signal.SIGINT)
        if slot.cancelling_since is not None and now - slot.cancelling_since > CANCEL_GRACE:
            slot.proc.kill()
        return False

    # ------------------------------------------------------------ loop

    def _expire_dead_neighbours(self) -> None:
        """Jobs held by a vanished worker on this host need not wait for their lease to run out."""
        for job in store.running_jobs(self.engine):
            host, _, pid = (job.claimed_by or "").rpartition(":")
            if host == HOST and pid.isdigit() and int(pid) != os.getpid() and not pid_alive(int(pid)):
                store.expire_job_lease(self.engine, job.id, job.attempt_id)

    def _on_signal(self, signum, _frame) -> None:
        if not self.stopping:
            self.stopping = True
            self.log(f"{signal.Signals(signum).name}: draining {len(self.slots)} job(s)")
            for slot in self.slots.values():
                slot.proc.send_signal(signal.SIGTERM)  # generate drains; export and dedup just stop

    def run(self, max_idle: float | None = None) -> int:
        """Process jobs until SIGTERM/SIGINT (or `max_idle` seconds without work); 0 after a clean drain."""
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        self.log(f"queues {','.join(self.queues)}, concurrency {self.concurrency}, lease {self.ttl:g}s")
        idle_since = time.monotonic()
        while True:
            claimed = False
            if self.slots:  # holding jobs is not idle, even through a database outage
                idle_since = time.monotonic()
            if self.alive_file:  # the container healthcheck looks at its age
                Path(self.alive_file).touch()
            try:
                for job_id in [j for j, s in self.slots.items() if self._tend(s)]:
                    del self.slots[job_id]
                if self.stopping and not self.slots:
                    return 0
                if not self.stopping and len(self.slots) < self.concurrency:
                    self._expire_dead_neighbours()
                    while len(self.slots) < self.concurrency:
                        got = queue.claim(self.engine, self.name, self.queues, self.ttl)
                        if got is None:
                            break
                        claimed = True
                        self._start(*got)
            except StorageError as exc:  # the database is away: keep the children, try again (leases cover the gap)
                self.log(f"database unavailable ({one_line(exc)}); retrying")
                time.sleep(self.poll)
                continue
            if self.slots or claimed:
                idle_since = time.monotonic()
            elif max_idle is not None and time.monotonic() - idle_since > max_idle:
                return 0
            if not claimed:
                time.sleep(self.poll if not self.slots else min(self.poll, 0.2))
