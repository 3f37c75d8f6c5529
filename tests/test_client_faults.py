"""Retries, Retry-After, timeouts, bad bodies and fatal errors against a real stub server.

The devserver cycles through its --faults list when --fault-rate is 1, so "500,truncated"
means: the first attempt gets a 500, the retry gets a (truncated) answer.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
import time

import pytest

from conftest import core_cli, core_free_port
from datagen.backends import FatalBackendError
from datagen.backends.openai_compat import OpenAIBackend
from datagen.client import LLMClient
from datagen.prompts import bootstrap_prompt, load_prompts, parse_task_list
from datagen.records import Prompt, Stage

EN = load_prompts("en")
PROMPT_TEXT, NEXT = bootstrap_prompt(EN, ["Write a poem about the sea.", "List three fruits."], 8)


def call(base_url: str, *, max_tries: int = 3, timeout: float = 20.0, api_key: str | None = None):
    """One generate() through LLMClient; returns the Generation and the logged attempts."""
    rows: list[dict] = []

    def log(prompt, gen, attempt, cost):
        rows.append({"t": time.monotonic(), "attempt": attempt, "error": gen.error, "finish": gen.finish_reason,
                     "latency": gen.latency_s, "tokens_out": gen.tokens_out})
        return len(rows)

    async def go():
        backend = OpenAIBackend("chat", "stub", base_url=base_url, timeout=timeout, api_key=api_key)
        # A tiny backoff base: any wait longer than a few ms comes from the server's Retry-After.
        client = LLMClient(backend, max_tries=max_tries, backoff_base=0.001, backoff_cap=0.01, log=log)
        try:
            return await client.generate(Prompt(stage=Stage.bootstrap, text=PROMPT_TEXT, max_tokens=400))
        finally:
            await client.aclose()

    return asyncio.run(go()), rows


def test_429_retry_after_is_honoured(stub_server):
    server = stub_server("--faults", "429,429,truncated", "--fault-rate", "1")
    gen, rows = call(server.base_url, max_tries=3)
    assert [r["attempt"] for r in rows] == [1, 2, 3]
    assert rows[0]["error"] == rows[1]["error"] == "rate limited (429)"
    assert gen.error is None and rows[2]["error"] is None
    # The stub sends Retry-After: 0.2; the backoff alone would wait at most 10 ms.
    for a, b in zip(rows, rows[1:]):
        assert b["t"] - a["t"] >= 0.19, rows
    assert server.stats()["injected"]["429"] == 2


def test_500_is_retried(stub_server):
    server = stub_server("--faults", "500,truncated", "--fault-rate", "1")
    gen, rows = call(server.base_url)
    assert gen.error is None and gen.text
    assert rows[0]["error"].startswith("HTTP 500") and rows[1]["error"] is None
    assert [r["attempt"] for r in rows] == [1, 2]


def test_timeout_is_retried(stub_server):
    server = stub_server("--faults", "timeout,truncated", "--fault-rate", "1", "--hang", "5")
    t0 = time.monotonic()
    gen, rows = call(server.base_url, timeout=1.0)
    assert gen.error is None and gen.text
    assert rows[0]["error"] == "timeout"
    assert rows[0]["latency"] < 10  # the client gave up on its own, it did not wait out the hang
    assert time.monotonic() - t0 < 15
    assert server.stats()["injected"]["timeout"] == 1


def test_malformed_body_is_retried(stub_server):
    server = stub_server("--faults", "malformed,truncated", "--fault-rate", "1")
    gen, rows = call(server.base_url)
    assert rows[0]["error"].startswith("bad response"), rows[0]
    assert gen.error is None and gen.text


def test_truncated_answer_drops_the_cut_item(stub_server):
    server = stub_server("--faults", "truncated", "--fault-rate", "1")
    gen, rows = call(server.base_url)
    assert gen.error is None and gen.finish_reason == "length"
    items = parse_task_list(gen.text, NEXT, truncated=True)
    # Every stub instruction ends with "."; the half-written last one must not get through.
    assert items and all(i.endswith(".") for i in items), items
    assert len(items) < len(parse_task_list(gen.text, NEXT, truncated=False)) or gen.text.rstrip().endswith(".")


def test_max_tries_bounded(stub_server):
    server = stub_server("--faults", "500", "--fault-rate", "1")
    gen, rows = call(server.base_url, max_tries=4)
    assert gen.error is not None and gen.error.startswith("gave up after 4 tries: HTTP 500")
    assert len(rows) == 4 and all(r["error"].startswith("HTTP 500") for r in rows)
    assert server.stats()["injected"]["500"] == 4


def test_wrong_api_key_is_fatal_one_line(stub_server):
    server = stub_server("--api-key", "right-key")

    async def check():
        backend = OpenAIBackend("chat", "stub", base_url=server.base_url, api_key="wrong-key")
        try:
            await backend.check()
        finally:
            await backend.aclose()

    with pytest.raises(FatalBackendError) as ei:
        asyncio.run(check())
    assert "authentication failed" in str(ei.value) and "\n" not in str(ei.value)
    # A bad key mid-run is not retried either.
    with pytest.raises(FatalBackendError):
        call(server.base_url, api_key="wrong-key")
    gen, _ = call(server.base_url, api_key="right-key")
    assert gen.error is None


def test_unreachable_server_fails_at_check():
    url = f"http://127.0.0.1:{core_free_port()}/v1"

    async def check():
        backend = OpenAIBackend("chat", "stub", base_url=url)
        try:
            await backend.check()
        finally:
            await backend.aclose()

    with pytest.raises(FatalBackendError, match="cannot reach") as ei:
        asyncio.run(check())
    assert "\n" not in str(ei.value)


def runs_row(db, run: str) -> str:
    proc = core_cli("runs", "--db", str(db))
    assert proc.returncode == 0, proc.stderr
    return next(line for line in proc.stdout.splitlines() if f" {run} " in line)


def test_generate_reaches_target_through_faults(stub_server, tmp_path):
    server = stub_server("--latency", "0.02", "--faults", "429,500,malformed,truncated", "--fault-rate", "0.3", "--seed", "7")
    db = tmp_path / "faults.db"
    proc = core_cli(
        "generate", "--api", "chat", "--model", "stub", "--base-url", server.base_url, "-n", "15",
        "--db", str(db), "--run", "faulty", "--no-progress", "--max-tries", "8", "--seed", "1",
    )
    assert proc.returncode == 0, proc.stderr
    assert "accepted=15" in proc.stdout

    con = sqlite3.connect(db)
    (kept,) = con.execute("select count(*) from sample where status='accepted'").fetchone()
    assert kept == 15
    n, errors, tin, tout = con.execute(
        "select count(*), count(error), sum(tokens_in), sum(tokens_out) from request"
    ).fetchone()
    by_kind = dict(con.execute(
        "select case when error like 'rate limited%' then '429' when error like 'HTTP 500%' then '500' "
        "when error like 'bad response%' then 'malformed' when error is null and finish_reason = 'length' "
        "then 'length' when error is null then 'ok' else 'other' end, count(*) from request group by 1"
    ).fetchall())
    retried = con.execute("select count(*) from request where attempt > 1").fetchone()[0]
    con.close()

    stats = server.stats()
    inj = stats["injected"]
    # Every attempt is a row, errors included. Requests still in flight when the target is
    # reached are cancelled and never logged, so the server may have seen a few more.
    server_attempts = stats["served"] + inj.get("429", 0) + inj.get("500", 0) + inj.get("malformed", 0)
    assert server_attempts - 16 <= n <= server_attempts
    # Each injected fault shows up as its own kind of row (a truncated answer is not an error).
    for kind, fault in (("429", "429"), ("500", "500"), ("malformed", "malformed"), ("length", "truncated")):
        assert inj.get(fault, 0) - 16 <= by_kind.get(kind, 0) <= inj.get(fault, 0), (by_kind, inj)
    assert by_kind.get("other", 0) == 0, by_kind
    assert errors == by_kind.get("429", 0) + by_kind.get("500", 0) + by_kind.get("malformed", 0)
    assert errors > 0 and retried > 0, by_kind

    row = runs_row(db, "faulty")
    assert re.search(rf"\b{n} \({errors} err\)", row), row
    assert f"{tin:,}/{tout:,}" in row, (row, tin, tout)
    assert "finished" in row and "15/15" in row
