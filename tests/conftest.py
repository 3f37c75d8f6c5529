"""Shared fixtures: free ports, the stub server and the CLI (core tests); a review database (API tests).

Everything is real: the devserver runs as its own process on 127.0.0.1 and the CLI runs as
`python -m datagen.cli` from the repository root, so this checkout's package is the one tested.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Under pytest-xdist (make test runs one worker per core and one more) each worker's models get an
# equal share of the cores, at least one: two llama.cpp or torch processes each taking every core of
# the 2-core VM spun against each other (the Ray and llama.cpp server tests took 1.5x as long as
# alone). Children get it through core_env.
WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
THREADS = str(max(1, (os.cpu_count() or 1) // WORKERS))
if WORKERS > 1:
    os.environ.setdefault("OMP_NUM_THREADS", THREADS)
    os.environ.setdefault("DATAGEN_THREADS", THREADS)


def core_wait_for(cond, timeout: float = 90, step: float = 0.1):
    """Poll `cond` until it returns something truthy (returned), failing after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = cond()
        if got:
            return got
        time.sleep(step)
    raise AssertionError(f"condition not met in {timeout} s")


def core_free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def core_env(**extra: str) -> dict[str, str]:
    """The environment for a child process: no real keys or URLs leak in from the caller."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "DATAGEN_"))}
    env["PYTHONPATH"] = str(REPO)
    if WORKERS > 1:
        env["DATAGEN_THREADS"] = THREADS
    env.update(extra)
    return env


def core_ctrl_c_able() -> None:
    """Popen's preexec_fn for a child that must stop on SIGINT: a child of a background job (the suite
    started with `&`) inherits SIGINT ignored, where a terminal's Ctrl-C needs the default."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


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
            [sys.executable, str(REPO / "scripts" / "devserver.py"), "--port", str(port), *args],
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


# Commands run in this process, through the same App (its one-line errors and exit codes), which
# saves a Python start (1.5-4 s on a loaded 2-core machine) per call. Tests of process behaviour
# (signals, kill -9, two processes racing) start `python -m datagen.cli` themselves.
IN_PROCESS = {"export", "runs", "batches", "dedup", "seeds", "db", "jobs", "schedule", "generate", "score", "select", "report"}
# ... unless an option brings in a library that reads its settings from the environment at import
# (huggingface_hub: HF_ENDPOINT, HF_HUB_OFFLINE).
NEEDS_PROCESS = {"--push-to-hub"}


class _OutOfTime(BaseException):
    """Raised by SIGALRM in an in-process call; a BaseException, so no `except Exception` swallows it."""


def _out_of_time(signum, frame):
    raise _OutOfTime


def _cli_in_process(args: tuple[str, ...], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    import contextlib
    import io
    import threading
    import traceback

    from datagen import storage
    from datagen.cli import app

    out, err, saved, cwd = io.StringIO(), io.StringIO(), dict(os.environ), os.getcwd()
    code = 0
    os.environ.clear()
    os.environ.update(env)
    os.chdir(REPO)
    # The same limit as a process gets (subprocess.run's timeout): a hang fails this test, not the suite.
    timed = threading.current_thread() is threading.main_thread()
    if timed:
        previous = signal.signal(signal.SIGALRM, _out_of_time)
        signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                app(list(args), prog_name="datagen")
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            except Exception:  # a bug: the traceback a process would print
                traceback.print_exc()
                code = 1
    except _OutOfTime:
        raise subprocess.TimeoutExpired(["datagen", *args], timeout, out.getvalue(), err.getvalue()) from None
    finally:
        if timed:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
        os.chdir(cwd)
        os.environ.clear()
        os.environ.update(saved)
        storage.dispose_all()  # the next call opens (and checks) its database afresh, as a new process would
    return subprocess.CompletedProcess(["datagen", *args], code, out.getvalue(), err.getvalue())


def core_cli(*args: str, timeout: float = 180, env: dict[str, str] | None = None, process: bool = False) -> subprocess.CompletedProcess:
    """`datagen ARGS` with text output captured: in this process for IN_PROCESS commands, else (or
    with `process=True`, e.g. for code injected through PYTHONPATH) `python -m datagen.cli ARGS` in
    the repository root."""
    if not process and args and args[0] in IN_PROCESS and not NEEDS_PROCESS & set(args):
        return _cli_in_process(args, env or core_env(), timeout)
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


# ---------------------------------------------------------------- Postgres

def pg_bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if not found:
        pytest.fail("PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin: apt-get install -y postgresql")
    return Path(found[-1]).parent


@contextmanager
def pg_cluster():
    """A throwaway cluster: its URL (no database part), the cluster stopped and removed after."""
    bindir = pg_bin()
    # initdb refuses root, so as root the cluster belongs to `postgres`, in a directory it can reach
    # (pytest's tmp_path sits under a root-only 0700 directory).
    as_root = os.geteuid() == 0
    base = Path(tempfile.mkdtemp(prefix="datagen-pg-"))
    if as_root:
        shutil.chown(base, "postgres", "postgres")
    prefix = ["runuser", "-u", "postgres", "--"] if as_root else []
    data, port = base / "data", core_free_port()

    def pg(*args: str, timeout: float = 120) -> None:
        proc = subprocess.run([*prefix, *args], capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(args[:2])} failed: {proc.stdout[-1500:]}{proc.stderr[-1500:]}")

    pg(str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync", "--locale=C")
    # A server clock zone other than UTC, as many servers have: stored times must still be UTC.
    opts = f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c timezone=Asia/Shanghai"
    pg(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(base / "log"), "-o", opts, "-w", "-t", "60", "start")
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}"
    finally:
        subprocess.run([*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"], capture_output=True, timeout=60)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def core_pg_cluster():
    """One throwaway cluster for the session (initdb and start take seconds); each test gets its own database in it."""
    with pg_cluster() as url:
        yield url


# ---------------------------------------------------------------- API and dashboard tests

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

ARTIFACTS = ROOT / "tests" / "artifacts"
TOKEN = "test-token-0123456789abcdef"

EN = [
    ("Write a poem about the sea at night.", "accepted", None, None, False),
    ("Write a short poem about the sea at dawn.", "rejected", "similar", 0.78, False),
    ("Classify the sentiment of the following review as positive or negative.", "accepted", None, 0.21, True),
    ("Summarize the article in three sentences.", "accepted", None, 0.33, False),
    ("Draw a picture of a cat.", "rejected", "blacklist", None, False),
    ("Hi", "rejected", "too_short", None, False),
    ("Explain why the sky is blue <script>alert('xss')</script> <img src=x onerror=alert(1)>", "accepted", None, 0.12, False),
    ("Translate the sentence into French: I like apples.", "accepted", None, 0.18, False),
    ("Give three tips for staying healthy.", "accepted", None, 0.25, False),
    ("Give three tips for staying healthy in winter.", "rejected", "similar", 0.86, False),
    ("List five fruits that are red.", "accepted", None, 0.3, True),
    ("Describe the water cycle in simple terms.", "pending", None, 0.2, None),
]
ZH = [
    ("请写一首关于秋天的诗。", "accepted", None, 0.1, False),
    ("写一首关于秋天的短诗。", "rejected", "similar", 0.8, False),
    ("把下面的句子翻译成英文。", "accepted", None, 0.15, False),
    ("判断这条评论的情感是正面还是负面。", "accepted", None, 0.2, True),
]


def build_db(path: Path | str) -> str:
    """The review test data in a SQLite file at `path`, or in the database at a URL."""
    from datagen import storage
    from datagen.records import Candidate, Instance, Status

    url = path if isinstance(path, str) else f"sqlite:///{path}"
    engine = storage.connect(url)
    run, _ = storage.open_run(engine, "demo-en", lang="en", api="openai", model="m", target=100, config={"api_key": "sk-shouldnotleak1234567890", "temperature": 0.7})
    run_zh, _ = storage.open_run(engine, "demo-zh", lang="zh", api="openai", model="m", target=100, config={})
    from datagen.records import Generation

    req = storage.log_request(engine, run.id, "bootstrap", "m", "Come up with tasks. key=sk-abcdefghijklmnopqrstuvwx", Generation(text="1. Write a poem about the sea at night."))
    for rid, lang, rows in ((run.id, "en", EN), (run_zh.id, "zh", ZH)):
        for i, (text, st, reason, score, cls) in enumerate(rows):
            c = Candidate(
                instruction=text,
                lang=lang,
                request_id=req if rid == run.id else None,
                is_classification=cls,
                status=Status(st),
                reason=reason,
                detail=None if reason is None else f"detail for {reason}",
                nearest=(rows[i - 1][0] if reason == "similar" else None),
                nearest_score=score,
                instances=[Instance(input="" if i % 2 else "some input", output=f"output {i}")],
            )
            storage.add_sample(engine, rid, c)
    return url


@pytest.fixture()
def db_url(tmp_path):
    from datagen import storage

    url = build_db(tmp_path / "review.db")
    yield url
    storage.dispose_all()


@pytest.fixture()
def app(db_url):
    from api.config import Settings
    from api.main import create_app

    return create_app(Settings(db_url=db_url, token=TOKEN, allowed_hosts=("testserver",)))


@pytest.fixture()
def client(app):
    from fastapi.testclient import TestClient

    with TestClient(app) as c:
        yield c


AUTH = {"Authorization": f"Bearer {TOKEN}", "X-Reviewer": "alice"}
os.environ.setdefault("DATAGEN_TEST", "1")
