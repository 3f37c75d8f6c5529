"""The review API against a real SQLite file through FastAPI's TestClient."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select
from sqlmodel import Session

from conftest import AUTH, TOKEN


def _ids(resp):
    assert resp.status_code == 200, resp.text
    return [s["id"] for s in resp.json()["items"]]


def _engine(db_url):
    from datagen import storage

    return storage.connect(db_url)


def _sample(db_url, sid):
    from datagen.storage import Sample

    with Session(_engine(db_url)) as s:
        return s.get(Sample, sid)


def _audit(db_url, sid):
    from datagen.storage import Audit

    with Session(_engine(db_url)) as s:
        return list(s.execute(select(Audit).where(Audit.sample_id == sid).order_by(Audit.id)).scalars())


# --- reads ---------------------------------------------------------------------------------------


def test_runs_with_stats_and_no_secrets(client):
    r = client.get("/api/runs")
    assert r.status_code == 200
    runs = {x["name"]: x for x in r.json()}
    assert runs["demo-en"]["by_status"]["accepted"] == 7
    assert runs["demo-en"]["by_reason"]["similar"] == 2
    assert runs["demo-en"]["config"]["api_key"] == "***"
    assert "sk-shouldnotleak" not in r.text


def test_filters_narrow_the_list(client):
    assert len(_ids(client.get("/api/samples?limit=500"))) == 16
    assert len(_ids(client.get("/api/samples?run=demo-zh"))) == 4
    assert len(_ids(client.get("/api/samples?lang=zh&status=accepted"))) == 3
    rejected = client.get("/api/samples?status=rejected").json()["items"]
    assert {s["reason"] for s in rejected} == {"similar", "blacklist", "too_short"}
    assert all(s["reason"] == "similar" for s in client.get("/api/samples?reason=similar").json()["items"])
    two = client.get("/api/samples?status=accepted&status=rejected").json()["items"]
    assert {s["status"] for s in two} == {"accepted", "rejected"}
    cls = client.get("/api/samples?classification=true").json()["items"]
    assert cls and all(s["is_classification"] for s in cls)
    high = client.get("/api/samples?score_min=0.7&score_max=1").json()["items"]
    assert high and all(s["nearest_score"] >= 0.7 for s in high)
    short = client.get("/api/samples?len_max=12").json()["items"]
    assert short and all(s["length"] <= 12 for s in short)
    assert client.get("/api/samples/count?status=accepted").json() == {"count": 10, "capped": False, "reviewed": 0}


def test_the_filter_fields_are_served_from_their_one_declaration(client):
    """The dashboard builds its filter queries from these (keys and how to convert each value)."""
    types = client.get("/api/filters").json()
    assert types == {"run": "string", "lang": "string", "status": "array", "classification": "boolean", "reason": "string",
                     "score_min": "number", "score_max": "number", "len_min": "integer", "len_max": "integer", "q": "string",
                     "by": "string", "by_min": "number", "by_max": "number"}


def test_search_english_chinese_short_terms_and_syntax(client):
    texts = [s["instruction"] for s in client.get("/api/samples?q=poem").json()["items"]]
    assert texts and all("poem" in t.lower() for t in texts)
    assert len(client.get("/api/samples?q=POEM%20dawn").json()["items"]) == 1  # words ANDed, case-insensitive
    # Search pages by keyset too, in both directions, on the FTS5 path and the LIKE path.
    for q in ("the", "a"):
        for sort in ("id", "-id"):
            seen, cursor = [], None
            while True:
                r = client.get("/api/samples", params={"q": q, "sort": sort, "limit": 2, **({"cursor": cursor} if cursor else {})}).json()
                seen += [s["id"] for s in r["items"]]
                cursor = r["next_cursor"]
                if not cursor:
                    break
            every = [s["id"] for s in client.get("/api/samples", params={"q": q, "limit": 500}).json()["items"]]
            assert seen == (every if sort == "id" else every[::-1]) and len(every) > 4
    assert len(client.get("/api/samples?q=秋天").json()["items"]) == 2  # two characters: the LIKE path
    assert len(client.get("/api/samples?q=关于秋天").json()["items"]) == 2  # trigram FTS5 path
    # FTS5 operators in user text are just text.
    for q in ['"', "poem OR", "NEAR(a b)", "*", "a:b", "^x", "%", "_"]:
        r = client.get("/api/samples", params={"q": q})
        assert r.status_code == 200, (q, r.text)


def test_sorting_and_keyset_pagination_is_stable(client):
    for sort in ("id", "-id", "score", "-score", "length", "-length", "updated"):
        seen, cursor = [], None
        while True:
            r = client.get("/api/samples", params={"sort": sort, "limit": 3, **({"cursor": cursor} if cursor else {})})
            assert r.status_code == 200, r.text
            seen += [s["id"] for s in r.json()["items"]]
            cursor = r.json()["next_cursor"]
            if not cursor:
                break
        if "score" in sort:  # sorting by ROUGE-L lists the samples that have one
            expected = [s["id"] for s in client.get("/api/samples?limit=500").json()["items"] if s["nearest_score"] is not None]
        else:
            expected = list(range(1, 17))
        assert sorted(seen) == expected, sort  # every row exactly once
    by_score = client.get("/api/samples?sort=-score&limit=3").json()["items"]
    assert [s["nearest_score"] for s in by_score] == sorted((s["nearest_score"] for s in by_score), reverse=True)


def test_sample_detail_instances_request_and_similar(client):
    d = client.get("/api/samples/2").json()
    assert d["instances"] == [{"input": "", "output": "output 1"}]
    assert d["request"]["prompt"].startswith("Come up with tasks")
    assert "sk-abcdefghijklmnop" not in json.dumps(d)  # a key-shaped string in a logged prompt is masked
    assert d["nearest"] == "Write a poem about the sea at night."
    shared = "".join(t for t, on in d["nearest_highlight"]["b"] if on)
    assert "poem" in shared and "night" not in shared
    sim = client.get("/api/samples/2/similar?k=3").json()
    assert sim[0]["id"] == 1 and 0.7 < sim[0]["score"] <= 1
    assert all(s["id"] != 2 for s in sim)
    assert all(x["score"] >= y["score"] for x, y in zip(sim, sim[1:]))
    zh = client.get("/api/samples/14/similar").json()
    assert zh[0]["id"] == 13 and any(on for _, on in zh[0]["highlight"]["a"])


def test_stats(client):
    s = client.get("/api/stats?run=demo-en").json()
    assert s["total"] == 12 and s["by_status"]["rejected"] == 4
    assert s["by_reason"]["similar"] == 2
    assert sum(s["score_histogram"]["counts"]) == 9
    assert sum(s["length_histogram"]["counts"]) == 12
    verbs = {v["verb"]: v for v in s["verbs"]}
    assert verbs["give"]["count"] == 2 and verbs["give"]["objects"][0]["object"] == "tips"
    zh = {v["verb"]: v for v in client.get("/api/stats?lang=zh").json()["verbs"]}
    assert "写" in zh and zh["写"]["objects"][0]["object"] == "秋天"


def test_export_streams_alpaca_json_of_the_filter(client):
    r = client.get("/api/export?run=demo-en&q=tips")
    assert r.status_code == 200 and "attachment" in r.headers["content-disposition"]
    data = json.loads(r.text)
    assert [d["instruction"] for d in data] == ["Give three tips for staying healthy."]  # kept only by default
    assert set(data[0]) == {"instruction", "input", "output"}
    rej = json.loads(client.get("/api/export?status=rejected&reason=similar").text)
    assert len(rej) == 3


# --- changes -------------------------------------------------------------------------------------


def test_approve_and_reject_record_who_and_when(client, db_url):
    r = client.post("/api/samples/3/approve", headers=AUTH, json={"note": "good one"})
    assert r.status_code == 200 and r.json()["status"] == "approved"
    r = client.post("/api/samples/4/reject", headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.json() == {"id": 4, "status": "discarded", "reviewed_by": "api"}
    s3 = _sample(db_url, 3)
    assert (s3.status, s3.reviewed_by, s3.review_note) == ("approved", "alice", "good one")
    a = _audit(db_url, 3)[-1]
    assert (a.action, a.actor, a.note, a.before, a.after) == ("approve", "alice", "good one", "accepted", "approved")
    assert a.at is not None
    assert _sample(db_url, 4).status == "discarded"


def test_edit_reruns_filters_and_audits(client, db_url):
    r = client.patch(
        "/api/samples/2",
        headers=AUTH,
        json={"instruction": "Draw a picture of the sea.", "instances": [{"input": "", "output": ""}, {"input": "x", "output": "y"}]},
    )
    assert r.status_code == 200, r.text
    f = r.json()["findings"]
    assert f["instruction"]["reason"] == "blacklist"
    assert f["instances"]["dropped"] == ["empty_output"]
    assert f["ok"] is False
    r = client.patch("/api/samples/2", headers=AUTH, json={"instruction": "Compose a haiku about mountain rivers in spring.", "instances": [{"input": "", "output": "Snow melts..."}]})
    f = r.json()["findings"]
    assert f["instruction"] is None and f["ok"] is True
    s = _sample(db_url, 2)
    assert s.instruction == "Compose a haiku about mountain rivers in spring."
    edits = [a for a in _audit(db_url, 2) if a.action == "edit"]
    assert len(edits) == 2 and json.loads(edits[0].before)["instruction"].startswith("Write a short poem")
    # Searching finds the new text (the FTS5 triggers keep the index in step).
    assert _ids(client.get("/api/samples?q=haiku")) == [2]


def test_edit_to_a_duplicate_of_a_kept_instruction_is_a_conflict(client, db_url):
    r = client.patch("/api/samples/3", headers=AUTH, json={"instruction": "Write a poem about the sea at night."})
    assert r.status_code == 409
    # With new instances in the same edit (found by schemathesis: a 500, the flush came earlier).
    r = client.patch("/api/samples/3", headers=AUTH, json={"instruction": "Write a poem about the sea at night.", "instances": [{"input": "", "output": "x"}]})
    assert r.status_code == 409 and _sample(db_url, 3).instruction.startswith("Classify")


def _set_run_pipeline(db_url, name, **pipeline):
    from datagen.storage import Run

    with Session(_engine(db_url)) as s:
        run = s.execute(select(Run).where(Run.name == name)).scalars().one()
        run.config = json.dumps({"pipeline": pipeline})
        s.add(run)
        s.commit()


def test_an_edit_that_breaks_the_runs_rule_is_refused_and_nothing_is_saved(client, db_url):
    # The run was generated with a stricter threshold and at most 2 instances: review uses the same values.
    _set_run_pipeline(db_url, "demo-en", threshold=0.5, max_instances=2)
    before = (_sample(db_url, 3).instruction, len(_audit(db_url, 3)))
    cases = [
        # ROUGE-L 0.533 to kept sample 1: under the API's old fixed 0.7, over this run's 0.5.
        ({"instruction": "Write a poem about my old cat."}, "similar"),
        # A seed task's own text (seeds are part of generation's index).
        ({"instruction": "How would you explain what an API is to someone with no technical background?"}, "similar"),
        ({"instances": [{"input": "a", "output": "x"}, {"input": "b", "output": "y"}, {"input": "c", "output": "z"}]}, "max_instances 2"),
        ({"instances": [{"input": "", "output": "   "}]}, "empty_output"),
        ({"instruction": "Draw a picture of the sea."}, "blacklist"),
        # The hardening report's case: spaces and an empty output were saved and then exported.
        ({"instruction": "   ", "instances": [{"input": "", "output": ""}]}, "instruction: empty"),
    ]
    for body, needle in cases:
        r = client.patch("/api/samples/3", headers=AUTH, json=body)
        assert r.status_code == 409, (body, r.status_code, r.text)
        assert needle in r.json()["detail"] and r.json()["findings"]["ok"] is False, r.json()
    assert (_sample(db_url, 3).instruction, len(_audit(db_url, 3))) == before  # nothing committed
    r = client.patch("/api/samples/3", headers=AUTH, json={"instances": [{"input": "I loved it.", "output": "positive"}]})
    assert r.status_code == 200 and r.json()["findings"]["ok"] is True


def test_approving_a_sample_that_fails_the_rule_needs_force(client, db_url):
    # Sample 10 was rejected as a near duplicate of kept sample 9.
    r = client.post("/api/samples/10/approve", headers=AUTH)
    assert r.status_code == 409 and "similar" in r.json()["detail"]
    assert _sample(db_url, 10).status == "rejected"
    r = client.post("/api/samples/10/approve", headers=AUTH, json={"note": "a different enough tip list", "force": True})
    assert r.status_code == 200 and r.json()["status"] == "approved"
    a = _audit(db_url, 10)[-1]
    assert (a.action, a.actor, a.before, a.after) == ("force_approve", "alice", "rejected", "approved")


def test_serve_reads_the_database_url_from_the_environment(db_url, tmp_path):
    import subprocess
    import sys
    import time
    import urllib.request

    from conftest import core_env, core_free_port

    port = core_free_port()
    env = core_env(DATAGEN_DATABASE_URL=db_url, DATAGEN_API_TOKEN=TOKEN)
    proc = subprocess.Popen([sys.executable, "-m", "api.cli", "serve", "--port", str(port)], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.stderr.read().decode()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/runs", timeout=5) as r:
                    runs = json.loads(r.read())
                break
            except OSError:
                assert time.monotonic() < deadline, "serve did not answer"
                time.sleep(0.2)
        assert [r["name"] for r in runs] == ["demo-en", "demo-zh"]
        assert not (tmp_path / "datagen.db").exists()  # the default was not opened (or created) instead
    finally:
        proc.terminate()
        proc.wait(10)


def test_bulk_on_a_filter(client, db_url):
    r = client.post("/api/samples/bulk", headers=AUTH, json={"action": "reject", "filter": {"reason": "similar", "run": "demo-en"}, "note": "dupes"})
    assert r.status_code == 200 and r.json()["changed"] == 2
    assert {s["status"] for s in client.get("/api/samples?reason=similar&run=demo-en").json()["items"]} == {"discarded"}
    assert all(_audit(db_url, sid)[-1].note == "dupes" for sid in (2, 10))
    # Approving a filter-rejected near duplicate is fine; an exact duplicate of a kept one is skipped.
    r = client.post("/api/samples/bulk", headers=AUTH, json={"action": "approve", "filter": {"status": ["discarded"]}})
    assert r.json()["changed"] == 2 and r.json()["skipped"] == 0
    # An empty filter needs all=true.
    r = client.post("/api/samples/bulk", headers=AUTH, json={"action": "approve", "filter": {}})
    assert r.status_code == 422


# --- refusals ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "method,path,body",
    [
        ("post", "/api/samples/1/approve", {}),
        ("post", "/api/samples/1/reject", {}),
        ("patch", "/api/samples/1", {"instruction": "Changed text here."}),
        ("post", "/api/samples/bulk", {"action": "approve", "filter": {"run": "demo-en"}}),
    ],
)
def test_changes_need_the_right_token(client, db_url, method, path, body):
    before = _sample(db_url, 1).status
    r = getattr(client, method)(path, json=body)
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    r = getattr(client, method)(path, json=body, headers={"Authorization": "Bearer wrong-token-wrong-token"})
    assert r.status_code == 403
    r = getattr(client, method)(path, json=body, headers={"Authorization": f"Basic {TOKEN}"})
    assert r.status_code == 401
    assert _sample(db_url, 1).status == before and not _audit(db_url, 1)


@pytest.mark.parametrize(
    "path",
    [
        "/api/samples?status=bogus",
        "/api/samples?lang=fr",
        "/api/samples?score_min=2",
        "/api/samples?len_min=-1",
        "/api/samples?limit=0",
        "/api/samples?limit=100000",
        "/api/samples?sort=instruction",
        "/api/samples?cursor=garbage",
        "/api/samples?sort=score&cursor=WyJ4IiwgMl0",  # valid base64 JSON, a string where the sort wants a number
        "/api/samples?unknown_filter=1",
        "/api/samples?classification=maybe",
        "/api/samples?q=" + "x" * 300,
        "/api/samples/abc",
        "/api/samples/0",
        "/api/samples/99999999999999999999999",
        "/api/stats?status=nope",
        "/api/export?lang=xx",
    ],
)
def test_bad_input_is_a_clear_4xx(client, path):
    r = client.get(path)
    assert 400 <= r.status_code < 500, (path, r.status_code, r.text)
    assert "detail" in r.json()


def test_a_reversed_range_is_valid_and_matches_nothing(client):
    """Issue 19.5: the schema cannot say min <= max, so a reversed range is not an error: it matches nothing."""
    for path in ("/api/samples?score_min=0.9&score_max=0.1", "/api/samples?len_min=50&len_max=10"):
        r = client.get(path)
        assert r.status_code == 200 and r.json()["items"] == [], (path, r.text)
    assert client.get("/api/samples/count?len_min=50&len_max=10").json()["count"] == 0
    assert client.get("/api/stats?score_min=0.9&score_max=0.1").json()["total"] == 0


def test_unknown_ids_and_runs_are_404(client):
    assert client.get("/api/samples/9999").status_code == 404
    assert client.get("/api/samples/9999/similar").status_code == 404
    assert client.post("/api/samples/9999/approve", headers=AUTH).status_code == 404
    assert client.patch("/api/samples/9999", headers=AUTH, json={"instruction": "abc def ghi"}).status_code == 404
    assert client.get("/api/samples?run=nope").status_code == 404


def test_bad_bodies_are_4xx(client):
    cases = [
        ("patch", "/api/samples/1", {}),  # nothing to change
        ("patch", "/api/samples/1", {"instruction": ""}),
        ("patch", "/api/samples/1", {"instruction": "x" * 9000}),
        ("patch", "/api/samples/1", {"instances": [{"input": "a"}]}),
        ("patch", "/api/samples/1", {"instances": [{"input": "", "output": "o"}] * 21}),
        ("patch", "/api/samples/1", {"instruction": "ok text here", "extra": 1}),
        ("post", "/api/samples/bulk", {"action": "delete", "filter": {"run": "demo-en"}}),
        ("post", "/api/samples/bulk", {"action": "approve", "filter": {"status": ["bogus"]}}),
        ("post", "/api/samples/1/approve", {"note": "n" * 3000}),
    ]
    for method, path, body in cases:
        r = getattr(client, method)(path, json=body, headers=AUTH)
        assert 400 <= r.status_code < 500, (path, body, r.status_code, r.text[:200])
    r = client.post("/api/samples/1/approve", content=b"{not json", headers={**AUTH, "Content-Type": "application/json"})
    assert r.status_code == 422
    r = client.patch("/api/samples/1", headers={**AUTH, "X-Reviewer": "<script>"}, json={"instruction": "Fine text here."})
    assert r.status_code == 422


def test_oversized_payload_is_413(client):
    big = {"instruction": "x" * (2 << 20)}
    r = client.patch("/api/samples/1", headers=AUTH, json=big)
    assert r.status_code == 413

    def chunks():  # no Content-Length: counted as it streams
        for _ in range(40):
            yield b"x" * 65536

    r = client.patch("/api/samples/1", headers={**AUTH, "Content-Type": "application/json"}, content=chunks())
    assert r.status_code == 413


# --- untrusted text ------------------------------------------------------------------------------


def test_xss_text_is_data_and_the_page_is_locked_down(client):
    r = client.get("/api/samples?q=script")
    item = r.json()["items"][0]
    assert "<script>alert('xss')</script>" in item["instruction"]  # returned as data, unchanged
    assert r.headers["content-type"].startswith("application/json")
    page = client.get("/")
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "default-src 'none'" in csp
    assert page.headers["x-content-type-options"] == "nosniff"
    assert "<script>alert" not in page.text  # the page never embeds data
    js = client.get("/static/app.js").text
    assert "innerHTML" not in js.replace("never innerHTML", "") and "insertAdjacentHTML" not in js and "eval(" not in js


def test_docs_and_schema_are_served(client):
    schema = client.get("/openapi.json").json()
    assert "/api/samples" in schema["paths"] and "/api/samples/bulk" in schema["paths"]
    assert client.get("/docs").status_code == 200


# --- serving rules -------------------------------------------------------------------------------


def test_no_token_refuses_non_loopback(monkeypatch):
    from api.config import Settings
    from datagen.errors import InputError

    monkeypatch.delenv("DATAGEN_API_TOKEN", raising=False)
    with pytest.raises(InputError):
        Settings.from_env(host="0.0.0.0")
    s = Settings.from_env(host="127.0.0.1")
    assert s.token_generated and len(s.token) >= 16 and not s.protect_reads
    monkeypatch.setenv("DATAGEN_API_TOKEN", "a-long-enough-token-value")
    s = Settings.from_env(host="0.0.0.0")
    assert s.protect_reads and s.token == "a-long-enough-token-value"


def test_reads_need_the_token_off_loopback(db_url):
    from fastapi.testclient import TestClient

    from api.config import Settings
    from api.main import create_app

    app = create_app(Settings(db_url=db_url, token=TOKEN, host="0.0.0.0", protect_reads=True))
    with TestClient(app) as c:
        assert c.get("/api/samples").status_code == 401
        assert c.get("/api/samples", headers=AUTH).status_code == 200
        assert c.get("/").status_code == 200  # the page itself holds no data


def test_secrets_are_scrubbed():
    from api.security import scrub_config, scrub_text

    assert scrub_config('{"openai_api_key": "abc123456", "nested": {"token": "t0k3n12345"}, "x": "sk-proj-abcdefghijklmnopqrstuv"}') == {
        "openai_api_key": "***",
        "nested": {"token": "***"},
        "x": "***",
    }
    assert "hf_abcdefghijklmnopqrstu" not in scrub_text("use hf_abcdefghijklmnopqrstu now")
    assert scrub_text("Authorization: Bearer abcdefghijklmnop") .count("abcdefghijklmnop") == 0
    assert scrub_text("Write a poem about keys.") == "Write a poem about keys."


# --- hostile input (issue 10) --------------------------------------------------------------------


def _cursor(obj) -> str:
    import base64

    return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "method,path,body",
    [
        ("get", "/api/samples?q=ab%00cd", None),
        ("get", "/api/samples/count?q=ab%00cd", None),
        ("get", "/api/stats?q=ab%00cd", None),
        ("get", "/api/export?q=ab%00cd", None),
        ("get", "/api/samples?run=a%00b", None),
        ("post", "/api/samples/bulk", {"action": "approve", "filter": {"q": "ab\x00cd"}}),
        ("patch", "/api/samples/1", {"instruction": "Write a poem\x00 about rain."}),
        ("patch", "/api/samples/1", {"instances": [{"input": "", "output": "bad \ud800 surrogate"}]}),
        ("post", "/api/samples/1/approve", {"note": "a\x00b"}),
        ("get", "/api/samples?cursor=" + _cursor([2**64, 2**64]), None),
        ("get", "/api/samples?sort=score&cursor=" + _cursor([0.5, 2**63]), None),
        ("get", "/api/samples?sort=length&cursor=" + _cursor([-(2**70), 3]), None),
        ("post", "/api/samples/bulk", {"action": "reject", "filter": {"run": "demo-en"}, "max_rows": 2**64}),
        ("post", "/api/samples/bulk", {"action": "reject", "ids": [2**63]}),
    ],
)
def test_nul_bytes_surrogates_and_huge_numbers_are_422_with_a_list_body(client, method, path, body):
    kwargs = {"headers": AUTH} if method != "get" else {}
    if body is not None:  # json= would refuse the lone surrogate on our side
        kwargs["content"] = json.dumps(body).encode()
        kwargs["headers"] = {**AUTH, "Content-Type": "application/json"}
    r = getattr(client, method)(path, **kwargs)
    assert r.status_code == 422, (path, r.status_code, r.text[:300])
    detail = r.json()["detail"]
    assert isinstance(detail, list) and all({"loc", "msg", "type"} <= set(e) for e in detail)  # the schema's shape
    msgs = " ".join(e["msg"] for e in detail)
    assert any(w in msgs for w in ("NUL", "unicode", "cursor", "less than or equal")), msgs
    assert _sample(client.app.state.settings.db_url, 1).status == "accepted"


def test_every_422_has_the_documented_shape(client):
    for r in (
        client.get("/api/samples?cursor=garbage"),
        client.patch("/api/samples/1", headers={**AUTH, "X-Reviewer": "<script>"}, json={"instruction": "Fine text here."}),
        client.post("/api/samples/bulk", headers=AUTH, json={"action": "approve", "filter": {}}),
    ):
        assert r.status_code == 422
        assert isinstance(r.json()["detail"], list) and r.json()["detail"][0]["msg"], r.text


def test_openapi_declares_bearer_auth_errors_and_bodies(client):
    schema = client.get("/openapi.json").json()
    assert schema["components"]["securitySchemes"]["HTTPBearer"] == {"type": "http", "scheme": "bearer", "description": schema["components"]["securitySchemes"]["HTTPBearer"]["description"]}
    for path, ops in schema["paths"].items():
        for op in ops.values():
            names = [p["name"].lower() for p in op.get("parameters", [])]
            assert "authorization" not in names, path  # auth is the security scheme, not a header parameter
    approve = schema["paths"]["/api/samples/{sample_id}/approve"]["post"]
    assert approve["security"] == [{"HTTPBearer": []}]
    assert {"400", "401", "403", "404", "409", "413", "422"} <= set(approve["responses"])
    patch = schema["paths"]["/api/samples/{sample_id}"]["patch"]
    assert patch["responses"]["200"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/EditOut"}
    assert {"401", "404", "413"} <= set(schema["paths"]["/api/samples"]["get"]["responses"])


# --- reviewing at scale (issue 10) ---------------------------------------------------------------


def test_bulk_on_picked_rows_only(client, db_url):
    r = client.post("/api/samples/bulk", headers=AUTH, json={"action": "reject", "ids": [3, 4, 9999]})
    assert r.status_code == 200 and r.json()["changed"] == 2
    assert [_sample(db_url, i).status for i in (1, 3, 4, 8)] == ["accepted", "discarded", "discarded", "accepted"]
    # ids AND the filter: 1 is English, 13 Chinese.
    r = client.post("/api/samples/bulk", headers=AUTH, json={"action": "reject", "ids": [1, 13], "filter": {"lang": "zh"}})
    assert r.json()["changed"] == 1 and _sample(db_url, 1).status == "accepted" and _sample(db_url, 13).status == "discarded"


def test_undo_puts_back_the_status_from_the_audit_log(client, db_url):
    assert client.post("/api/samples/3/reject", headers=AUTH).json()["status"] == "discarded"
    r = client.post("/api/samples/3/undo", headers=AUTH)
    assert r.status_code == 200 and r.json()["status"] == "accepted"
    assert _sample(db_url, 3).status == "accepted"
    last = _audit(db_url, 3)[-1]
    assert (last.action, last.before, last.after, last.actor) == ("undo", "discarded", "accepted", "alice")
    assert client.post("/api/samples/3/undo", headers=AUTH).status_code == 409  # an undo is not undone
    assert client.post("/api/samples/5/undo", headers=AUTH).status_code == 409  # never reviewed
    # A bulk review is undone like any other; a sample edited since its review is not.
    client.post("/api/samples/4/approve", headers=AUTH)
    client.post("/api/samples/bulk", headers=AUTH, json={"action": "reject", "ids": [4]})
    assert client.post("/api/samples/4/undo", headers=AUTH).json()["status"] == "approved"
    client.post("/api/samples/8/approve", headers=AUTH)
    client.patch("/api/samples/8", headers=AUTH, json={"instruction": "Translate the sentence into German: I like pears."})
    assert client.post("/api/samples/8/undo", headers=AUTH).status_code == 409 and _sample(db_url, 8).status == "approved"
    assert client.post("/api/samples/4/undo", headers={"X-Reviewer": "x"}).status_code == 401


def test_approving_what_the_filters_rejected_needs_force(client, db_url):
    r = client.post("/api/samples/2/approve", headers=AUTH, json={})
    assert r.status_code == 409 and "force" in r.json()["detail"] and "similar" in r.json()["detail"]
    assert _sample(db_url, 2).status == "rejected"
    r = client.post("/api/samples/2/approve", headers=AUTH, json={"force": True})
    assert r.status_code == 200 and _sample(db_url, 2).status == "approved"


def test_count_says_how_many_are_reviewed(client):
    assert client.get("/api/samples/count?run=demo-en").json() == {"count": 12, "capped": False, "reviewed": 0}
    client.post("/api/samples/1/approve", headers=AUTH)
    client.post("/api/samples/3/reject", headers=AUTH)
    assert client.get("/api/samples/count?run=demo-en").json()["reviewed"] == 2


def test_search_covers_inputs_and_outputs(client):
    r = client.patch("/api/samples/4", headers=AUTH, json={"instances": [{"input": "the quokka text", "output": "A zebra crossing."}]})
    assert r.status_code == 200
    assert _ids(client.get("/api/samples?q=zebra")) == [4]  # output, FTS5 path
    assert _ids(client.get("/api/samples?q=quokka%20summarize")) == [4]  # input + instruction, ANDed
    assert _ids(client.get("/api/samples?q=kk")) == [4]  # a short term: the LIKE path
    client.patch("/api/samples/4", headers=AUTH, json={"instances": [{"input": "", "output": "Plain."}]})
    assert _ids(client.get("/api/samples?q=zebra")) == []  # the index follows edits


def test_an_old_instruction_only_search_index_is_rebuilt(tmp_path):
    """A database at revision 0005 (instruction-only index) gains instance search when it is opened."""
    from sqlmodel import Session

    from datagen import storage
    from datagen.storage import migrate, queries
    from datagen.storage.db import open_engine
    from datagen.storage.models import InstanceRow, Run, Sample

    url = f"sqlite:///{tmp_path / 'old.db'}"
    old = open_engine(url)
    migrate.upgrade(old, "0005")
    with Session(old) as s:
        run = Run(name="r", lang="en", api="chat", model="m", target=2)
        s.add(run)
        s.flush()
        for i, (text, out) in enumerate([("Give tips for a healthy winter.", "Sleep well."), ("Name a fruit.", "The output 10 is a pear.")]):
            row = Sample(run_id=run.id, lang="en", instruction=text, instruction_hash=str(i), status="accepted")
            s.add(row)
            s.flush()
            s.add(InstanceRow(sample_id=row.id, idx=0, input="", output=out))
        s.commit()
    old.dispose()

    engine = storage.connect(url)  # upgrades: revision 0006 rebuilds the index with the instances
    assert migrate.current(engine) == migrate.head()
    assert [r["instruction"] for r in queries.list_samples(engine, queries.SampleFilter(q="output 10")).items] == ["Name a fruit."]
    assert [r["instruction"] for r in queries.list_samples(engine, queries.SampleFilter(q="healthy winter")).items] == ["Give tips for a healthy winter."]
    storage.dispose_all()
