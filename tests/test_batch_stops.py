"""Batch mode's stops and ways out, against the stub's Files and Batch API over real HTTP with the
official client: a run of failures stops, per-invocation options stay this invocation's, the
enqueued-token limit says why it cannot go on, a batch the provider never saw is dropped, batches
can be cancelled or abandoned, a lowered target is kept, files are deleted after ingest."""

from __future__ import annotations

import asyncio
import json
import time
from types import SimpleNamespace

import openai
import pytest

from conftest import core_cli, core_one_line_error
from test_batch import check_run, gen_args, q
from test_postgres import core_pg_url  # noqa: F401  (fixture)

ENDED = ("completed", "expired", "cancelled", "failed")


def last_line(proc) -> str:
    """The error line, after the batch log lines on stderr."""
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.stderr.strip().splitlines()[-1]


def stub_batches_ended(server, timeout: float = 60) -> None:
    client = openai.OpenAI(base_url=server.base_url, api_key="x", max_retries=0)
    deadline = time.monotonic() + timeout
    while any(b.status not in ENDED for b in client.batches.list(limit=100)):
        assert time.monotonic() < deadline, "the stub's batches did not end"
        time.sleep(0.05)


# ----------------------------------------------------------------------- 6: every request fails

@pytest.mark.parametrize("fault", [("--line-error-every", "1"), ("--fail-batches", "1000")], ids=["every-line", "every-batch"])
def test_a_run_whose_every_request_fails_stops_in_one_line_and_resumes(stub_server, tmp_path, fault):
    from datagen.config import BATCH_MAX_FAILED_IN_A_ROW

    bad = stub_server("--batch-delay", "0.1", *fault)
    db = tmp_path / "s.db"
    stopped = core_cli(*gen_args(bad, db, "doomed", "--api", "chat", "-n", "4"))
    assert stopped.returncode == 1
    line = last_line(stopped)
    assert line.startswith(f"error: {BATCH_MAX_FAILED_IN_A_ROW} batches in a row ended without one good answer"), stopped.stderr
    assert "same --run to resume" in line
    assert bad.stats()["batches_created"] == BATCH_MAX_FAILED_IN_A_ROW  # stopped at the bound, not one more
    assert q(db, "select count(*) from batch where not ingested") == [(0,)]
    # Resumable: the run goes on from its stored options once the provider answers again.
    good = stub_server("--batch-delay", "0.1")
    done = core_cli("generate", "--run", "doomed", "--db", str(db), "--base-url", good.base_url, "--poll-interval", "0.1", "--no-progress")
    assert done.returncode == 0, done.stderr
    assert q(db, "select count(*) from sample where status = 'accepted'") == [(4,)]


# ----------------------------------------------------------------------- 7: per-invocation options

def test_per_call_options_come_from_this_invocation_and_run_options_from_the_db():
    from datagen.config import PER_CALL_OPTIONS, GenerateOptions, PipelineConfig
    from datagen.generate import _resumed

    assert set(PER_CALL_OPTIONS) == {"run", "db", "wait", "lease_wait", "poll_interval"}
    stored = GenerateOptions(mode="batch", api="chat", model="stub", base_url="http://127.0.0.1:9/v1", budget=1.5, wait=False,
                             lease_wait=30, poll_interval=0.1, keep_files=True, pipeline=PipelineConfig(target=7))
    run = SimpleNamespace(config=json.dumps(stored.model_dump(mode="json", exclude={"db"})))
    got = _resumed(GenerateOptions(run="r", db="sqlite:///x.db", wait=False, lease_wait=5, poll_interval=2), run)
    assert (got.run, got.db, got.wait, got.lease_wait, got.poll_interval) == ("r", "sqlite:///x.db", False, 5, 2)
    assert (got.mode, got.api, got.model, got.base_url, got.budget, got.keep_files, got.pipeline.target) == (
        "batch", "chat", "stub", "http://127.0.0.1:9/v1", 1.5, True, 7)
    # A per-call option left out is this call's default, never the value stored by the first call.
    got = _resumed(GenerateOptions(run="r"), run)
    assert (got.wait, got.lease_wait, got.poll_interval) == (True, 0.0, 30.0)
    # --mode online moves the run to the same server; another --api leaves model and server behind.
    got = _resumed(GenerateOptions(run="r", mode="online"), run)
    assert (got.mode, got.api, got.model, got.base_url, got.pipeline.target) == ("online", "chat", "stub", "http://127.0.0.1:9/v1", 7)
    got = _resumed(GenerateOptions(run="r", mode="online", api="local"), run)
    assert (got.api, got.model, got.base_url, got.pipeline.target) == ("local", None, None, 7)


def test_resume_by_name_with_no_wait_runs_one_round(stub_server, tmp_path):
    """The README's example: `generate --run NAME --no-wait` (options read back from the database)."""
    server = stub_server("--batch-delay", "3")
    db = tmp_path / "w.db"
    first = core_cli(*gen_args(server, db, "nightly", "--api", "chat", "-n", "6", "--no-wait"))
    assert first.returncode == 75, first.stderr
    again = core_cli("generate", "--run", "nightly", "--db", str(db), "--no-wait", "--no-progress")
    assert again.returncode == 75, again.stderr  # one round, not a wait for the target
    assert "stopped at" in again.stderr


# ----------------------------------------------------------------------- 8: --max-enqueued-tokens

def test_a_line_larger_than_max_enqueued_tokens_fails_in_one_line(stub_server, tmp_path):
    server = stub_server("--batch-delay", "0.1")
    proc = core_cli(*gen_args(server, tmp_path / "t.db", "big", "--api", "chat", "-n", "3", "--max-enqueued-tokens", "50"))
    line = core_one_line_error(proc)
    assert "more than --max-enqueued-tokens 50" in line and "raise the limit" in line
    assert server.stats()["batches_created"] == 0


@pytest.fixture(params=["sqlite", "postgres"])
def any_db(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'any.db'}"
    else:
        yield request.getfixturevalue("core_pg_url")
    from datagen import storage

    storage.dispose_all()


def test_storage_of_the_ways_out(any_db):
    """Enqueued tokens count only batches the provider runs for a live run; a never-seen batch is
    dropped with its lines; an abandoned one keeps its lines as errors; on SQLite and Postgres."""
    from datagen import storage
    from datagen.batch.manage import abandon
    from datagen.storage import Batch
    from datagen.storage import batches as store

    engine = storage.connect(any_db)
    live, _ = storage.open_run(engine, "live", lang="en", api="chat", model="m", target=5, config={"mode": "batch"})
    dead, _ = storage.open_run(engine, "dead", lang="en", api="chat", model="m", target=5, config={"mode": "batch"})
    storage.set_run_state(engine, dead.id, "failed")

    def batch(run, key, tokens, provider_id, status, n=2):
        ids = store.queue_requests(engine, run.id, "m", [store.Line(stage="bootstrap", prompt=f"{key}{i}", body="{}") for i in range(n)])
        b = store.add_batch(engine, Batch(run_id=run.id, key=key, endpoint="/v1/chat/completions", model="m", stage="bootstrap",
                                          tokens_est=tokens), ids)
        store.set_batch(engine, b.id, provider_id=provider_id, status=status)
        return b.id

    batch(live, "flying", 500, "batch_a", "in_progress")
    unsent = batch(live, "unsent", 700, None, "submitting")  # the provider never saw it
    batch(dead, "orphan", 1000, "batch_c", "in_progress")  # a failed run's: nobody polls it
    batch(live, "over", 300, "batch_d", "completed")
    assert store.enqueued_tokens(engine, "m") == 500
    assert store.enqueued_tokens(engine, "other") == 0

    assert store.drop_batch(engine, unsent) == 2
    assert store.get_batch(engine, unsent) is None
    assert {b.key for b in store.list_batches(engine, live.id)} == {"flying", "over"}

    said: list[str] = []
    flying = store.list_batches(engine, live.id, open_only=True)[0]
    abandon(engine, flying.id, said.append)
    b = store.get_batch(engine, flying.id)
    assert (b.status, b.ingested, b.completed, b.failed) == ("abandoned", True, 0, 2)
    assert {r.error for r in store.batch_lines(engine, b.id)} == {"no result: batch abandoned by the user"}
    assert store.last_error(engine, live.id) == "no result: batch abandoned by the user"
    assert said and "abandoned" in said[0]
    with pytest.raises(Exception, match="nothing to abandon"):
        abandon(engine, flying.id, said.append)


# ----------------------------------------------------------------------- 9: a way out of batch mode

def test_a_batch_the_provider_never_saw_is_dropped_when_the_run_goes_online(stub_server, tmp_path):
    # The upload passes, then every create and lookup gets a 500: the run fails before any batch exists.
    broken = stub_server("--route-faults", "--faults", "500", "--fault-rate", "1", "--fault-after", "1")
    db = tmp_path / "u.db"
    failed = core_cli(*gen_args(broken, db, "early", "--api", "chat", "-n", "3", "--max-tries", "1"))
    assert failed.returncode == 1 and "Traceback" not in failed.stderr, failed.stderr
    assert q(db, "select status, provider_id from batch") == [("submitting", None)]
    assert broken.stats()["batches_created"] == 0
    # Online on a backend with no Batch API to ask (the local model): nothing can tell whether the
    # provider saw the batch, so it stays, and the line says what to do.
    unknown = core_cli("generate", "--run", "early", "--mode", "online", "--api", "local", "--db", str(db), "-n", "3", "--no-progress")
    assert "has batches in flight" in core_one_line_error(unknown)
    assert q(db, "select status, provider_id from batch") == [("submitting", None)]
    healthy = stub_server()  # the run's API and model come back from the run; only the server is new
    online = core_cli("generate", "--run", "early", "--mode", "online", "--base-url", healthy.base_url, "--db", str(db), "--no-progress")
    assert online.returncode == 0, online.stderr
    assert "dropped; the provider never saw it" in online.stderr
    assert q(db, "select count(*) from batch") == [(0,)]
    assert q(db, "select count(*) from request where state = 'sent'") == [(0,)]


def test_a_submitting_batch_the_provider_has_keeps_the_run_in_batch_mode(stub_server, tmp_path):
    from datagen import storage
    from datagen.storage import Batch
    from datagen.storage import batches as store

    server = stub_server("--batch-delay", "0.2")
    db = tmp_path / "seen.db"
    engine = storage.connect(f"sqlite:///{db}")
    run, _ = storage.open_run(engine, "seen", lang="en", api="chat", model="stub", target=3, config={"mode": "batch"})
    ids = store.queue_requests(engine, run.id, "stub", [store.Line(stage="bootstrap", prompt="p", body='{"model": "stub", "messages": []}')])
    b = store.add_batch(engine, Batch(run_id=run.id, key="k-seen", endpoint="/v1/chat/completions", model="stub", stage="bootstrap"), ids)
    storage.dispose_all()
    client = openai.OpenAI(base_url=server.base_url, api_key="x", max_retries=0)
    data = f'{{"custom_id": "{ids[0]}", "method": "POST", "url": "/v1/chat/completions", "body": {{"model": "stub", "messages": [{{"role": "user", "content": "hi"}}]}}}}\n'
    made = client.batches.create(input_file_id=client.files.create(file=("in.jsonl", data.encode()), purpose="batch").id,
                                 endpoint="/v1/chat/completions", completion_window="24h", metadata={"datagen_key": "k-seen"})
    online = core_cli("generate", "--run", "seen", "--mode", "online", "--api", "chat", "--model", "stub", "--base-url",
                      server.base_url, "--db", str(db), "-n", "3", "--no-progress")
    assert "has batches in flight" in core_one_line_error(online)
    assert q(db, "select provider_id from batch where id = ?", b.id) == [(made.id,)]


def test_batches_cancel_and_abandon(stub_server, tmp_path):
    server = stub_server("--batch-delay", "30")  # still running when cancelled, however slow the machine
    db = tmp_path / "c.db"
    first = core_cli(*gen_args(server, db, "slow", "--api", "chat", "-n", "20", "--no-wait", "--batch-max-lines", "2"))
    assert first.returncode == 75, first.stderr
    ids = [i for (i,) in q(db, "select id from batch order by id")]
    assert len(ids) >= 2
    refused = core_cli("generate", "--run", "slow", "--mode", "online", "--db", str(db), "--no-progress")
    assert "datagen batches cancel ID" in core_one_line_error(refused)

    cancel = core_cli("batches", "cancel", str(ids[0]), "--db", str(db))
    assert cancel.returncode == 0, cancel.stderr
    assert f"batch {ids[0]}: cancelled" in cancel.stdout
    ((status, ingested, done, failed, total),) = q(db, "select status, ingested, completed, failed, requests from batch where id = ?", ids[0])
    assert (status, ingested, done + failed) == ("cancelled", 1, total)
    assert q(db, "select count(*) from request where batch_id = ? and state = 'answered'", ids[0]) == [(total,)]
    for rest in ids[1:]:
        abandoned = core_cli("batches", "abandon", str(rest), "--db", str(db))
        assert abandoned.returncode == 0 and f"batch {rest}: abandoned" in abandoned.stdout, abandoned.stderr
    assert {s for (s,) in q(db, "select status from batch where id != ?", ids[0])} == {"abandoned"}
    again = core_cli("batches", "cancel", str(ids[0]), "--db", str(db))
    assert "nothing to cancel" in core_one_line_error(again)
    assert "no batch 999" in core_one_line_error(core_cli("batches", "abandon", "999", "--db", str(db)))
    listing = core_cli("batches", "--db", str(db), "--run", "slow")
    assert listing.returncode == 0 and "abandoned" in listing.stdout and "cancelled" in listing.stdout

    # Nothing in flight any more: online mode may take the run.
    online = core_cli("generate", "--run", "slow", "--mode", "online", "--api", "chat", "--model", "stub", "--base-url", server.base_url,
                      "--db", str(db), "-n", "2", "--no-progress")
    assert online.returncode == 0, online.stderr


# ----------------------------------------------------------------------- 10: a lowered target

def test_a_target_lowered_on_resume_is_not_overshot(stub_server, tmp_path):
    server = stub_server("--batch-delay", "0.3")
    db = tmp_path / "l.db"
    deadline = time.monotonic() + 240
    # Rounds of a 30-instruction run until instance requests for many candidates are out.
    while not (db.exists() and q(db, "select 1 from batch where stage = 'instances'")):
        assert time.monotonic() < deadline
        r = core_cli(*gen_args(server, db, "shrink", "--api", "chat", "-n", "30", "--no-wait"))
        assert r.returncode == 75, r.stderr
        stub_batches_ended(server)
    waiting = q(db, "select sum(requests) from batch where stage = 'instances' and not ingested")[0][0]
    assert waiting > 4
    done = core_cli("generate", "--run", "shrink", "-n", "4", "--db", str(db), "--poll-interval", "0.1", "--no-progress")
    assert done.returncode == 0, done.stderr
    assert q(db, "select count(*) from sample where status = 'accepted'") == [(4,)]
    assert q(db, "select target, state from run") == [(4, "finished")]
    # The answers past the target are kept, untaken, for a resume with a higher target.
    assert q(db, "select count(*) from request where stage = 'instances' and state = 'answered' and error is null")[0][0] > 0


# ----------------------------------------------------------------------- 11: counts, reasons, adoption, files

def test_expired_lines_count_as_failed_and_files_are_deleted_after_ingest(stub_server, tmp_path):
    server = stub_server("--batch-delay", "0.3", "--expire-batches", "1", "--expire-after", "1")
    db = tmp_path / "tidy.db"
    done = core_cli(*gen_args(server, db, "tidy", "--api", "chat", "-n", "10"))  # two lines in the first batch
    assert done.returncode == 0, done.stderr
    ((total, completed, failed),) = q(db, "select requests, completed, failed from batch where status = 'expired'")
    assert (completed, failed) == (1, total - 1)
    assert f"1/{total - 1}/{total}" in core_cli("batches", "--db", str(db)).stdout
    files = {f for row in q(db, "select input_file_id, output_file_id, error_file_id from batch") for f in row if f}
    assert server.stats()["files_deleted"] == len(files) > 0
    client = openai.OpenAI(base_url=server.base_url, api_key="x", max_retries=0)
    for f in files:
        with pytest.raises(openai.NotFoundError):
            client.files.retrieve(f)
    # --keep-files keeps them.
    kept = core_cli(*gen_args(server, db, "keep", "--api", "chat", "-n", "3", "--keep-files"))
    assert kept.returncode == 0, kept.stderr
    assert server.stats()["files_deleted"] == len(files)
    run_id = q(db, "select id from run where name = 'keep'")[0][0]
    for (f,) in q(db, "select input_file_id from batch where run_id = ?", run_id):
        assert client.files.retrieve(f).id == f


def test_batches_shows_why_a_batch_failed(stub_server, tmp_path):
    server = stub_server("--batch-delay", "0.2", "--fail-batches", "1")
    db = tmp_path / "why.db"
    done = core_cli(*gen_args(server, db, "why", "--api", "chat", "-n", "3"))
    assert done.returncode == 0, done.stderr
    listing = core_cli("batches", "--db", str(db))
    assert "invalid_request: stub: injected validation failure" in listing.stdout, listing.stdout


def test_a_batch_found_after_a_lost_create_answer_is_logged_adopted(stub_server, tmp_path):
    # Route requests: the upload passes, the first create acts and its answer is lost (a 2 s hang against a
    # 1 s timeout), the lookup that follows finds it; then one request in eight hangs.
    server = stub_server("--batch-delay", "0.2", "--route-faults", "--faults", "timeout" + ",none" * 7, "--fault-rate", "1",
                         "--fault-after", "1", "--hang", "2")
    db = tmp_path / "adopt.db"
    done = core_cli(*gen_args(server, db, "adopt", "--api", "chat", "-n", "3", "--timeout", "1", "--max-tries", "8"), timeout=300)
    assert done.returncode == 0, done.stderr
    first = next(ln for ln in done.stderr.splitlines() if ln.startswith("batch 1: "))
    assert " adopted as batch_" in first, done.stderr
    stats = check_run(db, server, 3)
    assert stats["batches_created"] == q(db, "select count(*) from batch")[0][0]


def test_input_files_split_at_the_providers_byte_limit(stub_server, tmp_path, monkeypatch):
    """OpenAI's 200 MB per input file, lowered to a few kB (the limit is the provider's declared constant)."""
    from datagen import storage
    from datagen.batch.openai_batches import OpenAIBatches
    from datagen.config import GenerateOptions, PipelineConfig
    from datagen.generate import generate

    limit = 4000
    monkeypatch.setattr(OpenAIBatches, "max_bytes", limit)
    server = stub_server("--batch-delay", "0.2")
    db = tmp_path / "split.db"
    opts = GenerateOptions(mode="batch", api="chat", model="stub", base_url=server.base_url, db=f"sqlite:///{db}", run="split",
                           poll_interval=0.1, keep_files=True, price_in=3.0, price_out=7.0, pipeline=PipelineConfig(target=5))
    try:
        _, progress = asyncio.run(generate(opts))
    finally:
        storage.dispose_all()
    assert progress.accepted == 5
    check_run(db, server, 5)
    client = openai.OpenAI(base_url=server.base_url, api_key="x", max_retries=0)
    rows = q(db, "select stage, requests, input_file_id from batch")
    sizes = [client.files.retrieve(f).bytes for _, _, f in rows]
    assert max(sizes) <= limit
    assert max(n for _, n, _ in rows) >= 2  # files are filled, not one line each
    assert sum(1 for stage, _, _ in rows if stage == "classify") >= 2  # a round's classify lines split over files
