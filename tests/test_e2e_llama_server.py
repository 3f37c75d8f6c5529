"""End to end against a real OpenAI-compatible server: llama-cpp-python serving the SmolLM2 GGUF.

Both API modes go through the real HTTP server and the real model; the run must store rows,
log every request, and export a valid alpaca file.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from conftest import THREADS, core_free_port

from datagen.backends.local import builtin_gguf

ROOT = Path(__file__).resolve().parents[1]



@pytest.fixture(scope="module")
def llama_server(tmp_path_factory):
    port = core_free_port()
    log = tmp_path_factory.mktemp("llama") / "server.log"
    cmd = [
        sys.executable, "-m", "llama_cpp.server",
        "--model", str(builtin_gguf()), "--model_alias", "smollm2",
        "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "4096", "--n_threads", THREADS,
    ]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"llama_cpp.server exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"{base}/models", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("llama_cpp.server did not start in 120 s")
    yield base
    proc.terminate()
    proc.wait(timeout=30)


def _datagen(*args: str, env_extra: dict | None = None, timeout: float = 900) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    env.update(env_extra or {})
    return subprocess.run(
        [sys.executable, "-m", "datagen.cli", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.parametrize("api", ["chat", "completion"])
def test_generate_and_export_through_llama_cpp_server(llama_server, tmp_path, api):
    db = tmp_path / "e2e.db"
    r = _datagen(
        "generate", "--api", api, "--model", "smollm2", "--base-url", llama_server,
        "-n", "2", "--run", f"e2e-{api}", "--db", str(db), "--concurrency", "2",
        "--max-tokens", "256", "--context-window", "4096", "--seed", "7", "--no-progress",
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"run=e2e-{api} accepted=2" in r.stdout

    con = sqlite3.connect(db)
    stages = dict(con.execute("select stage, count(*) from request where error is null group by stage").fetchall())
    assert stages.get("bootstrap", 0) >= 1 and stages.get("classify", 0) >= 2 and stages.get("instances", 0) >= 2
    # Real token accounting came back from the server for every successful call.
    assert con.execute("select min(tokens_in) from request where error is null").fetchone()[0] > 0
    kept = con.execute("select id, instruction from sample where status='accepted'").fetchall()
    assert len(kept) == 2
    for sid, _ in kept:
        assert con.execute("select count(*) from instance where sample_id=?", (sid,)).fetchone()[0] >= 1

    out = tmp_path / "alpaca.json"
    r = _datagen("export", "--db", str(db), "--out", str(out), "--run", f"e2e-{api}")
    assert r.returncode == 0, r.stderr
    data = json.loads(out.read_text())
    assert data and all(set(d) == {"instruction", "input", "output"} for d in data)
    assert {d["instruction"] for d in data} == {k[1].strip() for k in kept}
    assert all(d["output"].strip() for d in data)



def test_prompts_per_request_falls_back_against_llama_cpp_server(llama_server):
    """The server answers a list of prompts with HTTP 500: one warning, then one prompt per request."""
    import asyncio

    from datagen.backends.openai_compat import OpenAIBackend
    from datagen.client import LLMClient
    from datagen.records import Prompt, Stage

    warnings: list[str] = []
    rows: list[int] = []  # prompts per HTTP request, from the client's ledger

    class Ledger:
        def begin(self, prompts, attempt):
            rows.append(len(prompts))
            return len(rows) - 1

        def end(self, row, prompts, gens, cost, state):
            pass

    async def go():
        backend = OpenAIBackend("completion", "smollm2", base_url=llama_server, prompts_per_request=4)
        client = LLMClient(backend, concurrency=2, warn=warnings.append, log=Ledger())
        try:
            asks = [f"Is {w} a colour? Answer yes or no.\nAnswer:" for w in ("red", "tea")]
            gens = await asyncio.gather(*(client.generate(Prompt(stage=Stage.classify, text=t, max_tokens=4, temperature=0.0)) for t in asks))
            return gens, backend.max_batch
        finally:
            await client.aclose()

    gens, max_batch = asyncio.run(go())
    assert all(g.error is None for g in gens), gens
    assert len(warnings) == 1 and "one prompt per request" in warnings[0], warnings
    assert max_batch == 1 and rows == [2, 1, 1], rows
