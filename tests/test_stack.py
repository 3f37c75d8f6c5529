"""The compose stack without Docker: the services' commands, read from docker-compose.yml, run as
real processes against a real PostgreSQL and the fault-injecting OpenAI stub.

migrate runs once; then `serve`, two workers and one scheduler. A schedule firing every minute
(the scheduler's clock runs 30x faster: same code, sooner instants) queues a generate job; the
worker running it is killed with SIGKILL mid-job; the other worker takes the job over when the
lease is found dead, and the run ends with exactly its target, nothing stored twice, and the
Jobs API showing both attempts.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from conftest import REPO, TOKEN, core_env, core_free_port
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
    return [sys.executable, "-m", "datagen.cli", *(interpolate(str(a), env) for a in spec["command"])]


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
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = fn()
        if got:
            return got
        time.sleep(every)
    pytest.fail(f"timed out waiting for {what}\n{stack.logs()}")
