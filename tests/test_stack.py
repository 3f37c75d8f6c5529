"""The compose stack without Docker: the services' commands, read from docker-compose.yml, run as
real processes against a real PostgreSQL and the fault-injecting OpenAI stub.

migrate runs once; then `serve`, two workers and one scheduler. A schedule firing every minute
(the scheduler's clock runs 30x faster: same code, sooner instants) queues a generate job; the
worker running it is killed with SIGKILL mid-job; the other worker takes the job over when the
lease is found dead, and the run ends with exactly its target, nothing stored twice, and the
Jobs API showing both attempts.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from conftest import REPO, TOKEN, core_env, core_free_port, core_wait_for
from test_postgres import core_pg_url  # noqa: F401  (fixture)

COMPOSE = REPO / "docker-compose.yml"
TARGET = 60
_VAR = re.compile(r"\$\{(\w+)(?::?([-?])([^}]*))?\}")


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's ${VAR}, ${VAR:-default} and ${VAR:?error} against `env`."""

    def sub(m: re.Match) -> str:
        name, op, arg = m.group(1), m.group(2), m.group(3) or ""
        if env.get(name):
            return env[name]
        if op == "?":
            raise AssertionError(f"compose needs {name}: {arg}")
        return arg

    return _VAR.sub(sub, text)


def compose_command(service: str, env: dict[str, str]) -> list[str]:
    spec = yaml.safe_load(COMPOSE.read_text("utf-8"))["services"][service]
    return [sys.executable, "-m", "api.cli", *(interpolate(str(a), env) for a in spec["command"])]


def test_compose_services_are_complete():
    spec = yaml.safe_load(COMPOSE.read_text("utf-8"))
    services = spec["services"]
    assert set(services) == {"db", "migrate", "api", "worker", "scheduler"}
    for name in ("db", "api", "worker", "scheduler"):
        assert services[name].get("healthcheck"), f"{name} has no healthcheck"
        assert services[name].get("restart") == "unless-stopped", name
    assert services["migrate"]["restart"] == "no" and services["migrate"]["command"] == ["db", "upgrade"]
    for name in ("api", "worker", "scheduler"):
        assert services[name]["depends_on"] == {"migrate": {"condition": "service_completed_successfully"}}
    assert services["scheduler"]["deploy"]["replicas"] == 1 and "deploy" not in services["worker"]
    # Secrets come from the environment, never from the file.
    for name, svc in services.items():
        for key, value in (svc.get("environment") or {}).items():
            if re.search(r"(?i)password|token|key", key):
                assert re.fullmatch(r"\$\{\w+:[?-][^}]*\}", str(value)), f"{name}.{key} is not taken from the environment"
    assert "${POSTGRES_PASSWORD:?" in services["worker"]["environment"]["DATAGEN_DATABASE_URL"]


class Stack:
    """The services' processes; each one's output goes to a log file shown when a check fails."""

    def __init__(self, tmp: Path, env: dict[str, str]):
        self.tmp, self.env, self.procs = tmp, env, {}

    def start(self, name: str, argv: list[str]) -> subprocess.Popen:
        log = open(self.tmp / f"{name}.log", "w")
        proc = subprocess.Popen(argv, cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        self.procs[name] = proc
        return proc

    def logs(self) -> str:
        return "\n".join(f"--- {n}\n{(self.tmp / f'{n}.log').read_text()[-3000:]}" for n in self.procs)

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def wait_for(what: str, fn, timeout: float, stack: Stack, every: float = 0.25):
    try:
        return core_wait_for(fn, timeout, every)
    except AssertionError:
        pytest.fail(f"timed out waiting for {what}\n{stack.logs()}")


def test_stack_runs_a_scheduled_job_through_a_worker_kill(core_pg_url, stub_server, tmp_path):  # noqa: F811
    server = stub_server("--latency", "0.3", "--faults", "500,malformed", "--fault-rate", "0.05")
    env = core_env(DATAGEN_DATABASE_URL=core_pg_url, DATAGEN_API_TOKEN=TOKEN, OPENAI_BASE_URL=server.base_url,
                   OPENAI_API_KEY="sk-stack-test-not-a-real-key", POSTGRES_PASSWORD="not-used-outside-compose")
    stack = Stack(tmp_path, env)
    port = core_free_port()

    ALIVE = "/tmp/scheduler.alive"  # the compose file's path; only it moves (the checkout may itself be under /tmp)
    WORKER_ALIVE = "/tmp/worker.alive"

    def cmd(service: str) -> list[str]:
        argv = compose_command(service, env)
        # Two substitutions, both for running outside a container: a free port for the API, and
        # the scheduler's healthcheck file in the test's directory instead of the container's /tmp.
        argv = [str(port) if prev == "--port" else a for prev, a in zip([None, *argv], argv)]
        return [a.replace(ALIVE, f"{tmp_path}/scheduler.alive").replace(WORKER_ALIVE, f"{tmp_path}/{service}.alive") for a in argv]

    migrate = subprocess.run(cmd("migrate"), cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
    assert migrate.returncode == 0, migrate.stderr
    try:
        stack.start("api", cmd("api"))
        workers = [stack.start(f"worker{i}", cmd("worker")) for i in (1, 2)]
        base, hdr = f"http://127.0.0.1:{port}", {"Authorization": f"Bearer {TOKEN}"}
        http = httpx.Client(base_url=base, headers=hdr, timeout=30)

        def up():
            try:
                return http.get("/api/health").status_code == 200
            except httpx.HTTPError:
                return False

        wait_for("the API", up, 90, stack)
        job = ["generate", "--api", "chat", "--model", "stub", "-n", str(TARGET), "--run", "stack", "--concurrency", "2"]
        r = http.post("/api/schedules", json={"name": "every-minute", "cron": "* * * * *", "tz": "Asia/Shanghai", "job": job})
        assert r.status_code == 201, r.text
        # The scheduler as compose runs it, on a clock 30x fast: a slot every 2 s, same code.
        scheduler = stack.start("scheduler", [*cmd("scheduler"), "--tick", "0.5", "--clock-speed", "30"])

        def jobs(**params):
            return http.get("/api/jobs", params={"schedule": "every-minute", **params}).json()

        def running_with_progress():
            run = [j for j in jobs(state="running") if (j["progress"] or {}).get("accepted", 0) >= 10]
            return run and run[0]

        first = wait_for("the scheduled job to accept 10 samples", running_with_progress, 120, stack, every=0.1)
        pid = int(first["worker"].rpartition(":")[2])
        victim = next(w for w in workers if w.pid == pid)
        killed_at = time.time()
        victim.send_signal(signal.SIGKILL)  # mid-job: no drain, no release; its child dies with it
        victim.wait(10)
        assert first["progress"]["accepted"] < TARGET

        # While the job runs, every slot is recorded as skipped (overlap=skip) with its reason.
        skipped = wait_for("a skipped slot", lambda: jobs(state="skipped"), 60, stack)
        assert f"job {first['id']} of this schedule is still running" in skipped[0]["message"]

        def finished():
            j = http.get(f"/api/jobs/{first['id']}").json()
            return j["state"] not in ("queued", "running") and j

        done = wait_for("the job to finish on the other worker", finished, 150, stack)
        assert http.post("/api/schedules/every-minute/pause").json()["paused"] is True
        assert done["state"] == "succeeded", (done, stack.logs())
        survivor = next(w for w in workers if w is not victim)
        states = [(a["state"], int(a["worker"].rpartition(":")[2])) for a in done["attempts"]]
        assert states == [("lost", victim.pid), ("succeeded", survivor.pid)], states
        assert done["progress"] == {**done["progress"], "accepted": TARGET, "target": TARGET}
        assert f"accepted={TARGET}" in done["message"]
        from datetime import datetime

        reclaim = datetime.fromisoformat(done["attempts"][1]["started_at"]).timestamp() - killed_at
        print(f"\nstack: killed at {first['progress']['accepted']}/{TARGET} accepted; re-claimed {reclaim:.1f} s after SIGKILL; "
              f"{len(skipped)} slot(s) skipped while it ran")
        # The scheduler's healthcheck, as compose runs it, passes.
        check = yaml.safe_load(COMPOSE.read_text("utf-8"))["services"]["scheduler"]["healthcheck"]["test"][1:]
        assert subprocess.run([sys.executable if a == "python" else a.replace(ALIVE, f"{tmp_path}/scheduler.alive") for a in check]).returncode == 0
    finally:
        stack.stop()
    assert survivor.returncode == 0 and scheduler.returncode == 0, stack.logs()  # SIGTERM: a clean drain

    import psycopg

    with psycopg.connect(core_pg_url.replace("postgresql+psycopg", "postgresql")) as con:
        (accepted,) = con.execute("select count(*) from sample s join run r on r.id = s.run_id where r.name = 'stack' and s.status = 'accepted'").fetchone()
        (dup_samples,) = con.execute(
            "select count(*) from (select instruction_hash from sample where status in ('pending','accepted','approved') "
            "group by run_id, instruction_hash having count(*) > 1) d").fetchone()
        (requests, distinct, answered) = con.execute(
            "select count(*), count(distinct (prompt_hash, response, attempt, state)), count(*) filter (where state not in ('sent', 'lost')) from request").fetchone()
        (orphans,) = con.execute(
            "select count(*) from sample s left join request q on q.id = s.request_id where s.request_id is not null and q.id is null").fetchone()
    assert accepted == TARGET and dup_samples == 0 and orphans == 0
    assert requests == distinct  # no request stored twice
    seen = server.stats()
    # Each row is written before its request is sent: what the stub received is all in the ledger,
    # and rows `lost` (marked on resume) or still `sent` are the ones in flight when the worker died.
    assert requests >= seen["received"]
    assert answered <= seen["served"] + seen["rate_limited"] + sum(seen["injected"].values())
