"""The stub's OpenAI Files and Batch API, driven over real HTTP by the official openai client.

datagen's batch mode is tested against this stub, so the stub must behave like OpenAI's service:
the object shapes, the status timeline, shuffled output joined on custom_id, line errors, expiry,
validation failures, cancel, newest-first pagination and 404s.
"""

from __future__ import annotations

import json
import time

import httpx
import openai
import pytest

KEY = "sk-batch-test"
DONE = ("completed", "failed", "expired", "cancelled")


def chat_line(cid: str, url: str = "/v1/chat/completions") -> dict:
    return {"custom_id": cid, "method": "POST", "url": url,
            "body": {"model": "stub", "max_tokens": 512,
                     "messages": [{"role": "user", "content": "Come up with a series of tasks:\n1."}]}}


def completion_line(cid: str) -> dict:
    return {"custom_id": cid, "method": "POST", "url": "/v1/completions",
            "body": {"model": "stub", "max_tokens": 64, "prompt": "Is it a classification task?\nClassification:"}}


def client_for(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key=KEY, max_retries=0, timeout=10)


def upload(client: openai.OpenAI, lines: list[dict]) -> str:
    data = "".join(json.dumps(line) + "\n" for line in lines).encode()
    f = client.files.create(file=("requests.jsonl", data), purpose="batch")
    assert (f.object, f.purpose, f.bytes, f.filename) == ("file", "batch", len(data), "requests.jsonl")
    assert f.id.startswith("file-")
    return f.id


def submit(client: openai.OpenAI, lines: list[dict], endpoint: str = "/v1/chat/completions"):
    return client.batches.create(input_file_id=upload(client, lines), endpoint=endpoint, completion_window="24h",
                                 metadata={"run": "test"})


def wait(client: openai.OpenAI, batch_id: str, timeout: float = 15):
    """Poll until the batch is final; returns it and the statuses seen, in order."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while True:
        b = client.batches.retrieve(batch_id)
        if not seen or seen[-1] != b.status:
            seen.append(b.status)
        if b.status in DONE:
            return b, seen
        assert time.monotonic() < deadline, f"batch still {b.status} after {timeout} s"
        time.sleep(0.02)


def records(client: openai.OpenAI, file_id: str | None) -> list[dict]:
    if file_id is None:
        return []
    return [json.loads(line) for line in client.files.content(file_id).text.splitlines()]


def test_batch_completes_with_sync_shaped_bodies_joined_on_custom_id(stub_server):
    server = stub_server("--api-key", KEY, "--batch-delay", "0.6")
    client = client_for(server)
    chat = [chat_line(f"chat-{i}") for i in range(20)]
    comp = [completion_line(f"comp-{i}") for i in range(3)]
    b_chat = submit(client, chat)
    assert (b_chat.object, b_chat.status, b_chat.endpoint, b_chat.completion_window) == (
        "batch", "validating", "/v1/chat/completions", "24h")
    assert b_chat.metadata == {"run": "test"} and b_chat.output_file_id is None
    b_comp = submit(client, comp, "/v1/completions")
    assert client.files.delete(b_comp.input_file_id).deleted  # the batch read its input on create
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(b_comp.input_file_id)

    b_chat, seen = wait(client, b_chat.id)
    assert seen[-1] == "completed"
    order = ["validating", "in_progress", "finalizing", "completed"]
    assert [order.index(s) for s in seen] == sorted(order.index(s) for s in seen), seen  # never goes back
    assert "in_progress" in seen  # 0.36 s of in_progress against 20 ms polls
    assert b_chat.request_counts.model_dump() == {"total": 20, "completed": 20, "failed": 0}
    assert b_chat.error_file_id is None and b_chat.errors is None
    assert b_chat.created_at <= b_chat.in_progress_at <= b_chat.finalizing_at <= b_chat.completed_at
    out = records(client, b_chat.output_file_id)
    assert [r["custom_id"] for r in out] != [line["custom_id"] for line in chat]  # shuffled: join, never zip
    assert sorted(r["custom_id"] for r in out) == sorted(line["custom_id"] for line in chat)

    sync = httpx.post(f"{server.base_url}/chat/completions", json=chat[0]["body"],
                      headers={"authorization": f"Bearer {KEY}"}).json()
    for r in out:
        assert r["id"].startswith("batch_req_") and r["error"] is None
        assert r["response"]["status_code"] == 200 and r["response"]["request_id"]
        body = r["response"]["body"]
        assert body.keys() == sync.keys() and body["object"] == "chat.completion"
        assert body["choices"][0].keys() == sync["choices"][0].keys()
        assert "\n2. " in body["choices"][0]["message"]["content"]  # a real self-instruct answer
        assert body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"] + body["usage"]["completion_tokens"]

    b_comp, _ = wait(client, b_comp.id)
    assert b_comp.status == "completed"
    comp_out = records(client, b_comp.output_file_id)
    assert {r["custom_id"] for r in comp_out} == {f"comp-{i}" for i in range(3)}
    for r in comp_out:
        assert r["response"]["body"]["object"] == "text_completion"
        assert r["response"]["body"]["choices"][0]["text"].strip() in ("Yes", "No")

    stats = server.stats()
    assert stats["served"] == 1  # batch lines are not synchronous requests
    assert (stats["files_uploaded"], stats["batches_created"], stats["batch_lines"]) == (2, 2, 23)
    assert stats["custom_ids"] == {line["custom_id"]: 1 for line in chat + comp}
    assert stats["batch_lines_answered"] == 23
    usage = [r["response"]["body"]["usage"] for r in out + comp_out]
    assert stats["batch_usage"] == {"prompt_tokens": sum(u["prompt_tokens"] for u in usage),
                                    "completion_tokens": sum(u["completion_tokens"] for u in usage)}
    assert b_chat.usage.output_tokens == sum(r["response"]["body"]["usage"]["completion_tokens"] for r in out) > 0
    assert b_chat.usage.total_tokens == b_chat.usage.input_tokens + b_chat.usage.output_tokens

    with pytest.raises(openai.ConflictError):  # a finished batch cannot be cancelled
        client.batches.cancel(b_chat.id)
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=server.base_url, api_key="wrong", max_retries=0).batches.retrieve(b_chat.id)


def test_batch_line_errors_go_to_the_error_file(stub_server):
    server = stub_server("--batch-delay", "0.3", "--line-error-every", "3")
    client = openai.OpenAI(base_url=server.base_url, api_key="any", max_retries=0)
    b, _ = wait(client, submit(client, [chat_line(f"c{i}") for i in range(1, 8)]).id)
    assert b.status == "completed"
    assert b.request_counts.model_dump() == {"total": 7, "completed": 5, "failed": 2}
    errs = records(client, b.error_file_id)
    assert sorted(r["custom_id"] for r in errs) == ["c3", "c6"]  # lines are processed in file order
    for r in errs:
        assert r["error"] is None and r["response"]["status_code"] == 400
        assert r["response"]["body"]["error"]["message"] == "stub: injected line error"
    out = records(client, b.output_file_id)
    assert len(out) == 5
    stats = server.stats()
    assert stats["batch_lines_answered"] == 5
    assert stats["batch_usage"]["completion_tokens"] == sum(
        r["response"]["body"]["usage"]["completion_tokens"] for r in out)


def test_batch_expiry_keeps_finished_lines_and_resubmission_is_counted(stub_server):
    server = stub_server("--batch-delay", "0.3", "--expire-batches", "1", "--expire-after", "2")
    client = openai.OpenAI(base_url=server.base_url, api_key="any", max_retries=0)
    lines = [chat_line(f"e{i}") for i in range(5)]
    b, _ = wait(client, submit(client, lines).id)
    assert b.status == "expired" and b.expired_at and b.completed_at is None
    assert b.request_counts.model_dump() == {"total": 5, "completed": 2, "failed": 0}
    done = {r["custom_id"] for r in records(client, b.output_file_id)}
    assert done == {"e0", "e1"}
    errs = records(client, b.error_file_id)
    assert sorted(r["custom_id"] for r in errs) == ["e2", "e3", "e4"]
    for r in errs:
        assert r["response"] is None and r["error"]["code"] == "batch_expired"

    again, _ = wait(client, submit(client, [x for x in lines if x["custom_id"] not in done]).id)
    assert again.status == "completed" and again.request_counts.completed == 3  # only the first batch expires
    stats = server.stats()
    assert stats["custom_ids"] == {"e0": 1, "e1": 1, "e2": 2, "e3": 2, "e4": 2}
    assert stats["custom_ids_answered"] == {f"e{i}": 1 for i in range(5)}
    assert stats["batch_lines"] == 8 and stats["batch_lines_answered"] == 5


def test_batch_validation_failures_and_bad_requests(stub_server):
    server = stub_server("--batch-delay", "0.3", "--fail-batches", "1")
    client = openai.OpenAI(base_url=server.base_url, api_key="any", max_retries=0)
    good = [chat_line("g1"), chat_line("g2")]
    injected, _ = wait(client, submit(client, good).id)  # --fail-batches 1: the first batch created fails
    assert injected.status == "failed" and injected.failed_at and len(injected.errors.data) == 1

    bad_url, _ = wait(client, submit(client, [chat_line("b1"), chat_line("b2", url="/v1/completions")]).id)
    assert bad_url.status == "failed" and bad_url.in_progress_at is None
    (err,) = bad_url.errors.data
    assert (err.code, err.line, err.param) == ("mismatched_endpoint", 2, "url")
    assert bad_url.output_file_id is None and bad_url.error_file_id is None
    dup, _ = wait(client, submit(client, [chat_line("d"), chat_line("d")]).id)
    assert dup.status == "failed" and dup.errors.data[0].code == "duplicate_custom_id"
    no_model = chat_line("m")
    del no_model["body"]["model"]
    missing, _ = wait(client, submit(client, [no_model]).id)
    assert missing.status == "failed" and missing.errors.data[0].param == "body.model"

    too_many = client.batches.create(input_file_id=client.files.create(file=("big.jsonl", b"{}\n" * 50_001),
                                                                        purpose="batch").id,
                                      endpoint="/v1/chat/completions", completion_window="24h")
    too_many, _ = wait(client, too_many.id)
    assert too_many.status == "failed" and too_many.errors.data[0].code == "too_many_requests"

    ok, _ = wait(client, submit(client, good).id)
    assert ok.status == "completed" and ok.request_counts.completed == 2

    fid = upload(client, good)
    for kwargs in ({"input_file_id": "file-nope", "endpoint": "/v1/chat/completions"},
                   {"input_file_id": fid, "endpoint": "/v1/embeddings"}):
        with pytest.raises(openai.BadRequestError):
            client.batches.create(completion_window="24h", **kwargs)
    with pytest.raises(openai.BadRequestError):
        client.batches.create(input_file_id=fid, endpoint="/v1/chat/completions", completion_window="1h")
    for call in (lambda: client.batches.retrieve("batch_nope"), lambda: client.batches.cancel("batch_nope"),
                 lambda: client.files.retrieve("file-nope"), lambda: client.files.content("file-nope")):
        with pytest.raises(openai.NotFoundError) as e:
            call()
        assert e.value.body["message"] and e.value.body["type"] == "invalid_request_error"
    assert server.stats()["batches_created"] == 6  # the refused creates made nothing


def test_batch_cancel_keeps_done_lines(stub_server):
    server = stub_server("--batch-delay", "2")
    client = openai.OpenAI(base_url=server.base_url, api_key="any", max_retries=0)
    b = submit(client, [chat_line(f"x{i}") for i in range(40)])
    while (b := client.batches.retrieve(b.id)).request_counts.completed < 5:
        time.sleep(0.02)
    cancelling = client.batches.cancel(b.id)
    assert cancelling.status == "cancelling" and cancelling.cancelling_at
    assert client.batches.cancel(b.id).status == "cancelling"  # asking twice is harmless
    b, seen = wait(client, b.id)
    assert seen == ["cancelling", "cancelled"] and b.cancelled_at
    done = b.request_counts.completed
    assert 5 <= done < 40
    out, errs = records(client, b.output_file_id), records(client, b.error_file_id)
    assert len(out) == done and len(errs) == 40 - done
    assert {r["custom_id"] for r in out + errs} == {f"x{i}" for i in range(40)}
    assert {r["error"]["code"] for r in errs} == {"batch_cancelled"}
    assert server.stats()["batch_lines_answered"] == done

    early = submit(client, [chat_line("v1"), chat_line("v2")])
    assert client.batches.cancel(early.id).status == "cancelling"  # still validating
    early, _ = wait(client, early.id)
    assert early.status == "cancelled" and early.in_progress_at is None and early.output_file_id is None
    assert sorted((r["custom_id"], r["error"]["code"]) for r in records(client, early.error_file_id)) == [
        ("v1", "batch_cancelled"), ("v2", "batch_cancelled")]


def test_batch_list_is_newest_first_with_after(stub_server):
    server = stub_server("--batch-delay", "0.1")
    client = openai.OpenAI(base_url=server.base_url, api_key="any", max_retries=0)
    ids = [submit(client, [chat_line("l")]).id for _ in range(5)]
    page = client.batches.list(limit=2)
    assert [b.id for b in page.data] == [ids[4], ids[3]] and page.has_more
    raw = httpx.get(f"{server.base_url}/batches", params={"limit": 2, "after": ids[3]}).json()
    assert (raw["object"], [b["id"] for b in raw["data"]]) == ("list", [ids[2], ids[1]])
    assert (raw["first_id"], raw["last_id"], raw["has_more"]) == (ids[2], ids[1], True)
    assert [b.id for b in client.batches.list(limit=2)] == ids[::-1]  # the client pages through with after
    last = httpx.get(f"{server.base_url}/batches", params={"limit": 2, "after": ids[1]}).json()
    assert [b["id"] for b in last["data"]] == [ids[0]] and last["has_more"] is False


def test_route_faults_hit_batch_routes_and_a_lost_create_answer_still_creates(stub_server):
    server = stub_server("--faults", "500,timeout", "--fault-rate", "1", "--route-faults", "--fault-after", "1",
                         "--hang", "2", "--batch-delay", "0.1")
    client = openai.OpenAI(base_url=server.base_url, api_key="any", max_retries=0, timeout=0.5)
    fid = upload(client, [chat_line("r1")])  # the first route request passes (--fault-after 1)
    with pytest.raises(openai.InternalServerError):
        client.batches.create(input_file_id=fid, endpoint="/v1/chat/completions", completion_window="24h")
    assert server.stats()["batches_created"] == 0  # a 500 acts on nothing
    with pytest.raises(openai.APITimeoutError):
        client.batches.create(input_file_id=fid, endpoint="/v1/chat/completions", completion_window="24h")
    stats = server.stats()
    assert stats["batches_created"] == 1 and stats["custom_ids"] == {"r1": 1}  # created; only the answer was lost
    assert stats["injected"] == {"500": 1, "timeout": 1} and stats["received"] == 0  # no model request counted
