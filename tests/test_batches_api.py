"""Batch-mode costs through the review API: estimates per run and per batch, actual cost once ingested."""

from __future__ import annotations

import pytest

HOSTILE = "<img src=x onerror=alert(1)>"


def seed_batches(engine) -> dict[str, int]:
    """A batch run written the way batch mode writes it: one batch ingested, one in flight, one failed.

    Estimates 0.0300 + 0.0100 + 0.0126 = 0.0526, of which 0.0100 is in flight; actual 0.0040 + 0.0026.
    """
    from datagen import storage
    from datagen.records import Generation
    from datagen.storage import Batch
    from datagen.storage import batches as store

    run, _ = storage.open_run(engine, "batchy", lang="en", api="chat", model="gpt-4o-mini", target=20, config={"mode": "batch"})

    def batch(key, stage, n, tokens_est, cost_est):
        ids = store.queue_requests(engine, run.id, "gpt-4o-mini", [store.Line(stage=stage, prompt=f"{key} {i}", body="{}") for i in range(n)])
        b = store.add_batch(engine, Batch(run_id=run.id, key=key, endpoint="/v1/chat/completions", model="gpt-4o-mini", stage=stage,
                                          tokens_est=tokens_est, cost_est=cost_est), ids)
        return b.id, ids

    done, (r1, r2) = batch("k-done", "bootstrap", 2, 1200, 0.0300)
    store.set_batch(engine, done, provider_id="batch_done", status="completed", completed=2)
    store.ingest(engine, done, {r1: (Generation(text="1. A task.", tokens_in=600, tokens_out=90), 0.0040),
                                r2: (Generation(text="1. Another.", tokens_in=600, tokens_out=50), 0.0026)}, missing="no result")
    flying, _ = batch("k-flying", "instances", 3, 400, 0.0100)
    store.set_batch(engine, flying, provider_id="batch_flying", status="in_progress", completed=1)
    failed, _ = batch("k-failed", "classify", 1, 300, 0.0126)
    store.set_batch(engine, failed, provider_id="batch_failed", status="failed",
                    errors=store.errors_json([{"code": "invalid_request", "line": 1, "message": HOSTILE, "param": None}]))
    store.ingest(engine, failed, {}, missing="batch failed")
    return {"done": done, "flying": flying, "failed": failed}


@pytest.fixture()
def seeded(db_url):
    from datagen import storage

    return seed_batches(storage.connect(db_url))


def test_runs_show_batch_estimates_next_to_actual_cost(seeded, client):
    runs = {r["name"]: r for r in client.get("/api/runs").json()}
    b = runs["batchy"]
    assert b["cost_est"] == pytest.approx(0.0526) and b["cost_in_flight"] == pytest.approx(0.0100)
    assert b["cost"] == pytest.approx(0.0066) and b["requests"] == 6
    assert (runs["demo-en"]["cost_est"], runs["demo-en"]["cost_in_flight"]) == (0.0, 0.0)  # an online run


def test_batches_list_every_batch_with_status_counts_and_costs(seeded, client):
    r = client.get("/api/batches")
    assert r.status_code == 200, r.text
    rows = r.json()
    assert [b["id"] for b in rows] == [seeded["done"], seeded["flying"], seeded["failed"]]
    done, flying, failed = rows
    assert "key" not in done and "run_id" not in done
    assert (done["run"], done["provider_id"], done["stage"], done["status"], done["ingested"]) == ("batchy", "batch_done", "bootstrap", "completed", True)
    assert (done["requests"], done["completed"], done["failed"], done["tokens_est"]) == (2, 2, 0, 1200)
    assert done["cost_est"] == pytest.approx(0.03) and done["cost"] == pytest.approx(0.0066) and done["errors"] is None
    assert (flying["status"], flying["ingested"], flying["completed"], flying["requests"], flying["cost"]) == ("in_progress", False, 1, 3, 0.0)
    assert failed["status"] == "failed" and failed["errors"] == [{"code": "invalid_request", "line": 1, "message": HOSTILE, "param": None}]
    assert client.get("/api/batches", params={"run": "batchy"}).json() == rows
    assert client.get("/api/batches", params={"run": "demo-en"}).json() == []


def test_batches_of_an_unknown_run_is_404(seeded, client):
    r = client.get("/api/batches", params={"run": "nope"})
    assert r.status_code == 404 and r.json() == {"detail": "no run named 'nope'"}
    assert client.get("/api/batches", params={"run": "a\x00b"}).status_code == 422


def test_batch_errors_that_are_not_a_json_list_are_one_message(seeded, db_url, client):
    from datagen import storage
    from datagen.storage import batches as store

    store.set_batch(storage.connect(db_url), seeded["failed"], errors="upstream said: nope")
    failed = client.get("/api/batches").json()[2]
    assert failed["errors"] == [{"message": "upstream said: nope"}]


def test_batch_reads_need_the_token_beyond_loopback(seeded, db_url):
    from fastapi.testclient import TestClient

    from api.config import Settings
    from api.main import create_app
    from conftest import TOKEN

    app = create_app(Settings(db_url=db_url, token=TOKEN, allowed_hosts=("testserver",), protect_reads=True))
    with TestClient(app) as c:
        assert c.get("/api/batches").status_code == 401
        assert c.get("/api/batches", headers={"Authorization": "Bearer wrong"}).status_code == 403
        assert len(c.get("/api/batches", headers={"Authorization": f"Bearer {TOKEN}"}).json()) == 3
