"""Shared fixtures for the generation-core tests: free ports, the stub server, the CLI.

Everything is real: the devserver runs as its own process on 127.0.0.1 and the CLI runs as
`python -m datagen.cli` from the repository root, so this checkout's package is the one tested.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def core_free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def core_env(**extra: str) -> dict[str, str]:
    """The environment for a child process: no real keys or URLs leak in from the caller."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "DATAGEN_"))}
    env["PYTHONPATH"] = str(REPO)
    env.update(extra)
    return env


class StubServer:
    def __init__(self, proc: subprocess.Popen, port: int):
        self.proc = proc
        self.port = port
        self.base_url = f"http://127.0.0.1:{port}/v1"

    def stats(self) -> dict:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/stats", timeout=10) as r:
            return json.loads(r.read())


@pytest.fixture
def stub_server():
    """Factory: stub_server("--latency", "0.05", ...) starts a devserver and returns it once it answers."""
    procs: list[subprocess.Popen] = []

    def start(*args: str) -> StubServer:
        port = core_free_port()
        proc = subprocess.Popen(
            [sys.executable, "-m", "datagen.devserver", "--port", str(port), *args],
            cwd=REPO, env=core_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        procs.append(proc)
        server = StubServer(proc, port)
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"devserver exited: {proc.stderr.read().decode()[-2000:]}")
            try:
                server.stats()
                return server
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("devserver did not start within 60 s")
                time.sleep(0.1)

    yield start
    for proc in procs:
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(3)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def core_cli(*args: str, timeout: float = 180, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run `python -m datagen.cli ARGS` in the repository root; text output captured."""
    return subprocess.run(
        [sys.executable, "-m", "datagen.cli", *args],
        cwd=REPO, env=env or core_env(), capture_output=True, text=True, timeout=timeout,
    )


def core_one_line_error(proc: subprocess.CompletedProcess) -> str:
    """Assert the user saw exactly one `error:` line on stderr and no traceback; return it."""
    assert proc.returncode != 0, f"expected failure, got rc=0\nstdout={proc.stdout}\nstderr={proc.stderr}"
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one stderr line, got {len(lines)}:\n{proc.stderr}"
    assert lines[0].startswith("error: "), lines[0]
    return lines[0]
