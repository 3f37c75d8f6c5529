"""Retries, Retry-After, timeouts, bad bodies and fatal errors against a real stub server.

The devserver cycles through its --faults list when --fault-rate is 1, so "500,truncated"
means: the first attempt gets a 500, the retry gets a (truncated) answer.
"""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
import time

import pytest

from conftest import core_cli, core_free_port, core_one_line_error
from datagen.backends import FatalBackendError
from datagen.backends.openai_compat import OpenAIBackend
from datagen.client import LLMClient
from datagen.prompts import bootstrap_prompt, load_prompts, parse_task_list
from datagen.records import Prompt, Stage

EN = load_prompts("en")
PROMPT_TEXT, NEXT = bootstrap_prompt(EN, ["Write a poem about the sea.", "List three fruits."], 8)


class ListLog:
    """The client's request ledger, kept in a list: one dict per HTTP request."""

    def __init__(self, rows: list[dict]):
        self.rows = rows

    def begin(self, prompts, attempt):
        self.rows.append({"t": time.monotonic(), "attempt": attempt, "prompts": len(prompts), "state": "sent"})
        return len(self.rows) - 1

    def end(self, row, prompts, gens, cost, state):
        g = gens[0]
        self.rows[row].update(state=state, error=g.error if len(gens) == 1 else None, finish=g.finish_reason,
                              latency=max(x.latency_s for x in gens), tokens_out=sum(x.tokens_out for x in gens))


def call(base_url: str, *, max_tries: int = 3, timeout: float = 20.0, api_key: str | None = None):
    """One generate() through LLMClient; returns the Generation and the logged attempts."""
    rows: list[dict] = []
    log = ListLog(rows)

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


# ---------------------------------------------------------------- outages, stalls, batching, queueing


def gen(server, db, run, *extra, timeout=180):
    return core_cli("generate", "--api", "chat", "--model", "stub", "--base-url", server.base_url, "--db", str(db),
                    "--run", run, "--no-progress", *extra, timeout=timeout)


def test_outage_leaves_candidates_pending_and_resume_finishes_them(stub_server, tmp_path):
    """The server dies mid-run: nothing is rejected for it, classify failures are not "no", a resume finishes all."""
    dying = stub_server("--latency", "0.02", "--faults", "500", "--fault-rate", "1", "--fault-after", "30")
    db = tmp_path / "outage.db"
    proc = gen(dying, db, "outage", "-n", "40", "--max-tries", "1", "--concurrency", "8")
    assert "model calls in a row failed" in core_one_line_error(proc)
    con = sqlite3.connect(db)
    # Before: "rejected / no_valid_instances (model call failed)", and a failed classify stored as "not classification".
    assert con.execute("select count(*) from sample where detail like '%model call failed%'").fetchone() == (0,)
    pending = dict(con.execute("select id, is_classification from sample where status = 'pending'").fetchall())
    con.close()
    assert None in pending.values(), "no candidate was waiting for its classify call when the server died"
    assert len(pending) > 5

    healthy = stub_server("--latency", "0.02")
    proc = gen(healthy, db, "outage", "-n", "40")
    assert proc.returncode == 0, proc.stderr
    con = sqlite3.connect(db)
    left = con.execute(f"select count(*) from sample where status = 'pending' and id in ({','.join(map(str, pending))})").fetchone()
    classified_again = con.execute(
        "select count(*) from request r join run on run.id = r.run_id where stage = 'classify' and r.id > "
        "(select max(id) from request where error is not null)"
    ).fetchone()[0]
    con.close()
    assert left == (0,), "the resumed run did not finish the candidates the outage left pending"
    assert classified_again > 0


def test_server_that_never_answers_stops_the_run_at_the_stall_timeout(stub_server, tmp_path):
    """Accepts connections, never answers: used to hold a run for ~an hour (30 failures x 5 tries x 120 s)."""
    server = stub_server("--latency", "0.02", "--faults", "timeout", "--fault-rate", "1", "--fault-after", "20", "--hang", "600")
    db = tmp_path / "stall.db"
    t0 = time.monotonic()
    proc = gen(server, db, "stall", "-n", "40", "--stall-timeout", "2", "--concurrency", "4")
    took = time.monotonic() - t0
    line = core_one_line_error(proc)
    assert "no model call succeeded" in line and "--run" in line, line
    assert took < 30, took
    con = sqlite3.connect(db)
    assert con.execute("select count(*) from sample where status = 'pending'").fetchone()[0] > 0  # kept for the resume
    assert con.execute("select count(*) from sample where status = 'rejected' and reason = 'no_valid_instances'").fetchone() == (0,)
    con.close()


def ledger_counts(db) -> tuple[int, int, int]:
    con = sqlite3.connect(db)
    try:
        return con.execute("select count(*), coalesce(sum(prompts > 1), 0), count(error) from request").fetchone()
    finally:
        con.close()


def test_prompts_per_request_falls_back_on_a_single_prompt_server(stub_server, tmp_path):
    """llama.cpp's server answers a list of prompts with 500: it was retried 150 times, then a generic error."""
    server = stub_server("--latency", "0.02", "--single-prompt")
    db = tmp_path / "single.db"
    proc = core_cli("generate", "--api", "completion", "--model", "stub", "--base-url", server.base_url, "--db", str(db),
                    "--run", "single", "--no-progress", "-n", "8", "--prompts-per-request", "4", "--max-tries", "5")
    assert proc.returncode == 0, proc.stderr
    warnings = [ln for ln in proc.stderr.splitlines() if ln.startswith("warning:")]
    assert len(warnings) == 1 and "one prompt per request" in warnings[0], proc.stderr
    rows, multi, errors = ledger_counts(db)
    stats = server.stats()
    assert rows == stats["received"]  # one ledger row per HTTP request
    assert 1 <= multi == errors <= 4  # only the first batched request(s), sent before the first refusal came back


def test_ledger_has_one_row_per_batched_request(stub_server, tmp_path):
    server = stub_server("--latency", "0.05")
    db = tmp_path / "batch.db"
    proc = core_cli("generate", "--api", "completion", "--model", "stub", "--base-url", server.base_url, "--db", str(db),
                    "--run", "batch", "--no-progress", "-n", "10", "--prompts-per-request", "4")
    assert proc.returncode == 0, proc.stderr
    rows, multi, errors = ledger_counts(db)
    assert rows == server.stats()["received"] and multi > 0 and errors == 0, (rows, multi, server.stats())
    con = sqlite3.connect(db)
    prompts, response = con.execute("select prompt, response from request where prompts > 1 limit 1").fetchone()
    con.close()
    assert len(json.loads(prompts)) == len(json.loads(response)) > 1


def test_one_slot_server_gets_fewer_requests_in_flight_instead_of_timeouts(stub_server, tmp_path):
    """A one-slot server queues what it cannot serve; at --concurrency 16 the last waits 16 services.

    The timeout is meant for the model's work: a request near it means our own requests queue at the
    server, so the client halves its in-flight requests rather than letting them time out and retry.
    """
    server = stub_server("--latency", "0.1", "--slots", "1")
    db = tmp_path / "slot.db"
    proc = gen(server, db, "slot", "-n", "30", "--concurrency", "16", "--timeout", "1", "--max-tries", "3")
    assert proc.returncode == 0, proc.stderr
    assert "requests in flight instead of 16" in proc.stderr
    con = sqlite3.connect(db)
    timeouts = con.execute("select count(*) from request where error = 'timeout'").fetchone()[0]
    n = con.execute("select count(*) from request").fetchone()[0]
    con.close()
    print(f"one-slot server: {n} requests, {timeouts} timeouts")
    # Idle, one round of 16 times out before the halving; a loaded machine inflates the stub's
    # latency and may need a second halving. The old client failed the run outright here.
    assert timeouts < n / 4, (timeouts, n)
