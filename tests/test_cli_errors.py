"""Bad input on the command line: a non-zero exit and one `error:` line, never a traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import core_cli, core_env, core_free_port, core_one_line_error
from datagen import storage


def generate(*extra: str, env=None, process=False):
    return core_cli("generate", "--api", "chat", "--model", "stub", "-n", "2", "--no-progress", *extra, env=env, process=process)


@pytest.fixture
def core_closed_url():
    return f"http://127.0.0.1:{core_free_port()}/v1"


def test_bad_db_url(core_closed_url):
    err = core_one_line_error(generate("--base-url", core_closed_url, "--db", "notadb://x"))
    assert "notadb://x" in err
    assert "notadb://x" in core_one_line_error(core_cli("runs", "--db", "notadb://x"))


def test_db_directory_missing(tmp_path, core_closed_url):
    db = tmp_path / "no" / "such" / "dir" / "x.db"
    assert "does not exist" in core_one_line_error(generate("--base-url", core_closed_url, "--db", str(db)))
    assert not (tmp_path / "no").exists()


def test_export_unknown_run_and_missing_db(tmp_path):
    db = tmp_path / "x.db"
    storage.connect(str(db))
    storage.dispose_all()
    out = tmp_path / "o.json"
    assert "no run named 'ghost'" in core_one_line_error(core_cli("export", "--db", str(db), "--out", str(out), "--run", "ghost"))
    assert "no database" in core_one_line_error(core_cli("export", "--db", str(tmp_path / "none.db"), "--out", str(out)))
    assert not out.exists() and not (tmp_path / "none.db").exists()


def test_unreachable_server(tmp_path, core_closed_url):
    err = core_one_line_error(generate("--base-url", core_closed_url, "--db", str(tmp_path / "x.db")))
    assert "cannot reach" in err and core_closed_url in err


def test_bad_base_url(tmp_path):
    assert "bad base URL 'notaurl'" in core_one_line_error(generate("--base-url", "notaurl", "--db", str(tmp_path / "x.db")))


def test_wrong_api_key(stub_server, tmp_path):
    server = stub_server("--api-key", "the-right-key")
    env = core_env(OPENAI_API_KEY="a-wrong-key")
    err = core_one_line_error(generate("--base-url", server.base_url, "--db", str(tmp_path / "x.db"), env=env))
    assert "authentication failed" in err
    assert "a-wrong-key" not in err


def test_unknown_lang(tmp_path, core_closed_url):
    assert "--lang 'xx'" in core_one_line_error(generate("--base-url", core_closed_url, "--lang", "xx", "--db", str(tmp_path / "x.db")))


def test_broken_prompt_file(tmp_path, core_closed_url):
    bad = tmp_path / "p.toml"
    bad.write_text("[bootstrap\n", encoding="utf-8")
    err = core_one_line_error(generate("--base-url", core_closed_url, "--prompts", str(bad), "--db", str(tmp_path / "x.db")))
    assert "not valid TOML" in err


@pytest.mark.parametrize(
    "args, needle",
    [
        (["-n", "0"], "--num-instructions 0"),
        (["-n", "-5"], "--num-instructions -5"),
        (["--threshold", "7"], "--threshold 7.0"),
        (["--concurrency", "0"], "--concurrency 0"),
        (["--max-tries", "0"], "--max-tries 0"),
        (["--api", "gpt"], "--api 'gpt'"),
    ],
)
def test_bad_generate_options_are_refused_before_anything_is_written(tmp_path, core_closed_url, args, needle):
    db = tmp_path / "x.db"
    err = core_one_line_error(core_cli("generate", "--base-url", core_closed_url, "--db", str(db), "--no-progress", *args))
    assert needle in err
    assert not db.exists()  # no run row, no database


def serve_cli(*args: str, env=None, timeout: float = 60):
    """`datagen serve` as the entry point runs it (api.cli composes the core CLI and serve)."""
    import subprocess
    import sys

    from conftest import REPO

    return subprocess.run([sys.executable, "-m", "api.cli", "serve", "--port", str(core_free_port()), *args],
                          cwd=REPO, env=env or core_env(), capture_output=True, text=True, timeout=timeout)


def test_serve_refuses_a_missing_database_a_bad_url_and_a_missing_directory(tmp_path):
    assert "no database at" in core_one_line_error(serve_cli("--db", str(tmp_path / "typo.db")))
    assert not (tmp_path / "typo.db").exists()
    assert "notadb://x" in core_one_line_error(serve_cli("--db", "notadb://x"))
    assert "does not exist" in core_one_line_error(serve_cli("--db", str(tmp_path / "no" / "dir" / "x.db")))
    # The environment variable is read the same way: a typo there is refused too.
    assert "no database at" in core_one_line_error(serve_cli(env=core_env(DATAGEN_DATABASE_URL=str(tmp_path / "env-typo.db"))))
    assert not (tmp_path / "env-typo.db").exists()


def test_serve_on_a_dead_postgres_is_one_line():
    err = core_one_line_error(serve_cli("--db", f"postgresql+psycopg://u:secretpw@127.0.0.1:{core_free_port()}/x"))
    assert "127.0.0.1" in err and "secretpw" not in err


def test_read_only_database_names_the_file(stub_server, tmp_path):
    import os
    import subprocess

    db = tmp_path / "ro.db"
    storage.connect(str(db))
    storage.dispose_all()
    # chmod does not stop root; the immutable flag does.
    lock = ["chattr", "+i", str(db)] if os.geteuid() == 0 else ["chmod", "444", str(db)]
    subprocess.run(lock, check=True)
    try:
        server = stub_server()
        line = core_one_line_error(generate("--base-url", server.base_url, "--db", str(db)))
    finally:
        if os.geteuid() == 0:
            subprocess.run(["chattr", "-i", str(db)], check=True)
    assert str(db) in line and "readonly" in line, line  # before: the raw sqlite message, no path


def test_a_crash_inside_generate_is_one_line_and_the_run_resumes(stub_server, tmp_path):
    """Issue 19: a bug mid-run (here a ValueError injected into the classify step, as the tokenizer
    race raised one) is one line naming the resume command, the traceback kept in a file, and the
    same command without the fault finishes the run."""
    from conftest import REPO

    server = stub_server()
    inject = tmp_path / "inject"
    inject.mkdir()
    (inject / "sitecustomize.py").write_text(
        "import datagen.pipeline as p\n"
        "def boom(self, c, gen):\n"
        "    raise ValueError('Unable to create tensor (injected)')\n"
        "p.Pipeline.take_classify = boom\n"
    )
    db = str(tmp_path / "crash.db")
    args = ("--base-url", server.base_url, "--db", db, "--run", "c1")
    env = core_env(PYTHONPATH=f"{inject}:{REPO}", DATAGEN_CACHE=str(tmp_path / "cache"))
    err = core_one_line_error(generate(*args, env=env, process=True))  # the fault is injected at start
    assert "run 'c1' failed (ValueError: Unable to create tensor (injected))" in err
    assert "datagen generate --run c1" in err
    log = err.split("traceback in ")[1].rstrip(")")
    assert "take_classify" in open(log).read() or "boom" in open(log).read()
    engine = storage.connect(db)
    assert storage.get_run(engine, "c1").state == "failed"
    storage.dispose_all()
    done = generate(*args)
    assert done.returncode == 0, done.stderr
    assert "accepted=2" in done.stdout


@pytest.mark.parametrize("args", [["db", "upgrade"], ["runs"], ["generate", "--api", "chat", "--model", "m", "-n", "1"]])
def test_an_empty_db_option_is_refused_not_the_default(tmp_path, args):
    """Issue 19.20: `--db ''` exited 0 and created ./datagen.db."""
    proc = subprocess.run([sys.executable, "-m", "datagen.cli", *args, "--db", ""], cwd=tmp_path, env=core_env(),
                          capture_output=True, text=True, timeout=120)
    assert "empty database URL" in core_one_line_error(proc)
    assert list(tmp_path.iterdir()) == []


def test_jobs_submit_refuses_an_argument_no_worker_could_pass_on(tmp_path):
    """Issue 19.4: a job whose argument holds a NUL killed every worker that claimed it (exec refuses NUL).
    argv cannot carry a NUL; its cousin can: a byte that is not UTF-8 arrives as a lone surrogate, which
    Postgres cannot store either. Both are refused at submit, and nothing is queued."""
    from datagen.errors import InputError
    from datagen.jobs import queue

    url = f"sqlite:///{tmp_path / 'q.db'}"
    proc = subprocess.run([sys.executable, "-m", "datagen.cli", "jobs", "submit", "export", "--db", url, "--", "--run", b"x\xffy"],
                          cwd=tmp_path, env=core_env(), capture_output=True, text=True, timeout=120)
    assert "NUL character or an unpaired surrogate" in core_one_line_error(proc)
    with pytest.raises(InputError, match="NUL"):  # the API's 422
        queue.submit(storage.connect(url), "export", ["--run", "x\x00y"])
    assert queue.list_jobs(storage.connect(url)) == []


def test_a_stored_job_no_process_can_start_fails_alone_and_the_worker_carries_on(tmp_path):
    """Issue 19.4, the other side: a job stored before submit checked (a NUL in an argument) failed every worker
    that claimed it. Now the job fails with the reason and the worker goes on to the next one."""
    import json

    from datagen.jobs import queue
    from datagen.jobs.worker import Worker
    from datagen.storage import jobs as store
    from datagen.storage.models import Job

    url = f"sqlite:///{tmp_path / 'q.db'}"
    engine = storage.connect(url)
    bad = store.insert_job(engine, Job(kind="dedup", args=json.dumps(["x\x00y.txt"]), queue="default"))
    good = queue.submit(engine, "dedup", [str(tmp_path / "none.txt")])
    assert Worker(engine, url, queues=["default"], poll=0.05).run(max_idle=2) == 0
    job, attempts = queue.get(engine, bad.id)
    assert job.state == "failed" and "cannot start" in job.exit_message and "null" in job.exit_message, job.exit_message
    assert queue.get(engine, good.id)[0].state == "failed"  # claimed and run (no such file): the worker lived on


def test_an_in_process_call_keeps_the_time_limit_a_process_gets(stub_server, tmp_path):
    """The suite runs most commands in its own process (conftest.IN_PROCESS). A hung call there must
    fail its test at core_cli's timeout, as subprocess.run would, and leave the next call working."""
    import time

    silent = stub_server("--faults", "timeout", "--fault-rate", "1", "--hang", "3600")
    db = str(tmp_path / "hung.db")
    t0 = time.monotonic()
    with pytest.raises(subprocess.TimeoutExpired):
        core_cli("generate", "--api", "chat", "--model", "stub", "--base-url", silent.base_url, "--db", db, "--run", "hung",
                 "-n", "1", "--timeout", "600", "--stall-timeout", "600", "--no-progress", timeout=2)
    assert time.monotonic() - t0 < 30
    after = core_cli("runs", "--db", db)
    assert after.returncode == 0 and "hung" in after.stdout, after.stderr
