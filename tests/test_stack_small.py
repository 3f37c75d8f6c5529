"""Smaller service-stack defects: one rate limit per server however its URL is spelled, no wrong
"queueing" warning from a silent server."""

from __future__ import annotations

import time

import pytest

from conftest import core_cli, core_one_line_error

from datagen.ratelimit import limit_key


def test_the_shared_rate_limit_is_one_per_server_however_its_url_is_spelled():
    same = ["http://localhost:8000/v1", "http://127.0.0.1:8000/v1/", "HTTP://LocalHost:8000/v1", "http://[::1]:8000/v1"]
    assert len({limit_key("rpm", u, "sk-a") for u in same}) == 1  # was 2 keys: 240 requests/min for a 120 limit
    assert limit_key("rpm", "https://api.openai.com:443/v1/", "k") == limit_key("rpm", None, "k")
    assert limit_key("rpm", "http://x:80/v1", "k") == limit_key("rpm", "http://x/v1", "k")
    # Different servers, ports, paths or keys stay apart.
    assert len({limit_key("rpm", u, "k") for u in ("http://127.0.0.1:8000/v1", "http://127.0.0.1:8001/v1",
                                                   "http://127.0.0.1:8000/v2", "http://10.0.0.1:8000/v1")}) == 4
    assert limit_key("rpm", same[0], "sk-a") != limit_key("rpm", same[0], "sk-b")


def test_a_silent_server_stops_at_the_stall_without_a_queueing_warning(stub_server, tmp_path):
    """Requests time out because nothing answers at all: the "server is queueing" warning was wrong
    (it halved the requests in flight too); the stall rule's one line is what the user sees."""
    server = stub_server("--latency", "0.02", "--faults", "timeout", "--fault-rate", "1", "--hang", "600")
    t0 = time.monotonic()
    proc = core_cli("generate", "--api", "chat", "--model", "stub", "--base-url", server.base_url, "--db", str(tmp_path / "s.db"),
                    "--run", "silent", "--no-progress", "-n", "5", "--timeout", "1", "--stall-timeout", "4", "--concurrency", "4")
    line = core_one_line_error(proc)  # one stderr line: no warning before it
    assert "no model call succeeded" in line, line
    assert time.monotonic() - t0 < 60


@pytest.mark.parametrize("text", [
    "Based on the examples above, write 8 new tasks that cover different areas.",  # the request inside a sentence
    "Write 10 new tasks with numbered sentences",
    "Now write eight new tasks for the assistant.",  # number words are numbers
    "2:\n1. ...",  # list scaffolding only: the template's "$next." written back
])
def test_prompt_echo_paraphrases_are_caught(text):
    from datagen.filters import InstructionFilter
    from datagen.prompts import instruction_lines, load_prompts

    got = InstructionFilter("en", echo_lines=instruction_lines(load_prompts("en"))).check(text)
    assert got is not None and got[0] == "prompt_echo", got


def test_zh_prompt_echo_paraphrase_is_caught_and_tasks_are_not():
    from datagen.filters import InstructionFilter
    from datagen.prompts import instruction_lines, load_prompts

    zh = InstructionFilter("zh", echo_lines=instruction_lines(load_prompts("zh")))
    assert zh.check("好的，我再写5条新任务：")[0] == "prompt_echo"
    assert zh.check("从第三条开始介绍这本书的内容。") is None


def test_the_worker_healthcheck_sees_a_hung_loop(tmp_path):
    """The worker's compose healthcheck reads the age of a file its loop touches on every pass:
    a worker stuck inside its loop (here: stopped) stops touching it and turns unhealthy."""
    import os
    import signal
    import subprocess
    import sys

    import yaml

    from conftest import REPO, core_env

    alive = tmp_path / "worker.alive"
    spec = yaml.safe_load((REPO / "docker-compose.yml").read_text("utf-8"))["services"]["worker"]
    assert spec["command"][-2:] == ["--alive-file", "/tmp/worker.alive"]
    check = [sys.executable if a == "python" else a.replace("/tmp/worker.alive", str(alive)) for a in spec["healthcheck"]["test"][1:]]
    w = subprocess.Popen([sys.executable, "-m", "datagen.cli", "worker", "--db", str(tmp_path / "w.db"), "--poll", "0.1",
                          "--alive-file", str(alive)], cwd=REPO, env=core_env(), stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not alive.exists():
            assert time.monotonic() < deadline and w.poll() is None
            time.sleep(0.1)
        first = alive.stat().st_mtime
        while alive.stat().st_mtime == first:  # touched again and again
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert subprocess.run(check).returncode == 0
        w.send_signal(signal.SIGSTOP)  # hung: the loop no longer runs
        time.sleep(0.3)
        frozen = alive.stat().st_mtime
        time.sleep(1.0)
        assert alive.stat().st_mtime == frozen
        os.utime(alive, (frozen - 120, frozen - 120))  # as it looks after two minutes of that
        assert subprocess.run(check).returncode == 1
        w.send_signal(signal.SIGCONT)
    finally:
        w.send_signal(signal.SIGTERM)
        w.wait(30)
