"""The review API on Postgres (what docker-compose ships): the defects SQLite hid, and health.

One cluster for the module: the review data is built once and these tests only read it, or write
rows nothing else here reads.
"""

from __future__ import annotations

import psycopg
import pytest
from fastapi.testclient import TestClient

from conftest import AUTH, TOKEN, build_db
from test_postgres import pg_cluster


@pytest.fixture(scope="module")
def pg_url():
    from datagen import storage

    with pg_cluster() as url:
        build_db(url)
        yield url
        storage.dispose_all()


def _client(url: str) -> TestClient:
    from api.config import Settings
    from api.main import create_app

    return TestClient(create_app(Settings(db_url=url, token=TOKEN, allowed_hosts=("testserver",))))


@pytest.fixture(scope="module")
def pg_client(pg_url):
    with _client(pg_url) as c:
        yield c


def test_stats_on_postgres_match_sqlite(pg_client, tmp_path):
    """Issue 19.2: a two-argument min() is SQLite's; Postgres answered 500. Same data, same stats."""
    with _client(build_db(tmp_path / "same.db")) as lite:
        for query in ("", "?run=demo-en", "?status=rejected"):
            got, want = pg_client.get("/api/stats" + query), lite.get("/api/stats" + query)
            assert got.status_code == 200, got.text
            assert got.json() == want.json(), query
    body = pg_client.get("/api/stats").json()
    # Scores 0.78, 0.8 and 0.86 fall in bins 15, 16 and 17: bins truncate on both databases.
    assert body["score_histogram"]["counts"][15:18] == [1, 1, 1]
    assert sum(body["length_histogram"]["counts"]) == body["total"] == 16


@pytest.mark.parametrize(
    "method, path, body",
    [
        ("GET", "/api/jobs?schedule=a%00b", None),
        ("GET", "/api/jobs?queue=a%00b", None),
        ("GET", "/api/schedules/a%00b", None),
        ("POST", "/api/schedules/a%00b/pause", None),
        ("GET", "/api/batches?run=a%00b", None),
        ("POST", "/api/jobs", {"kind": "export", "args": ["--run", "a\x00b"]}),
        ("POST", "/api/jobs", {"kind": "export", "args": ["--run", "x"], "queue": "q\x00"}),
        ("POST", "/api/schedules", {"name": "n\x00", "cron": "0 2 * * *", "job": ["export", "--run", "x"]}),
        ("POST", "/api/schedules", {"name": "n", "cron": "0 2 * * *", "tz": "UTC\x00", "job": ["export", "--run", "x"]}),
        ("POST", "/api/schedules", {"name": "n", "cron": "0 2 * * *", "job": ["export", "--run", "x\x00"]}),
    ],
)
def test_nul_bytes_in_job_and_schedule_fields_are_422_on_postgres(pg_client, method, path, body):
    """Issue 19.3: the NUL check covered the sample routes only; Postgres refused the rest with a 500."""
    r = pg_client.request(method, path, json=body, headers=AUTH)
    assert r.status_code == 422, (path, r.status_code, r.text)
    assert isinstance(r.json()["detail"], list)


@pytest.mark.parametrize(
    "method, path, body, status",
    [
        ("GET", "/api/samples/2147483647", None, 404),  # the largest id a column holds: looked up, not there
        ("GET", "/api/samples/2147483648", None, 422),  # beyond it: refused before the database sees it
        ("GET", "/api/samples/4611686018427387904/similar", None, 422),
        ("GET", "/api/jobs/2147483648", None, 422),
        ("POST", "/api/jobs/2147483648/cancel", None, 422),
        ("POST", "/api/samples/bulk", {"action": "approve", "ids": [2**31]}, 422),
        ("POST", "/api/samples/bulk", {"action": "approve", "ids": [1], "max_rows": 2**31}, 422),
        ("GET", "/api/schedules/2147483648", None, 404),  # a ref is an id or a name: no schedule has it
        ("GET", "/api/schedules/99999999999999999999", None, 404),
        ("GET", "/api/jobs?schedule=2147483648", None, 404),
        ("GET", "/api/schedules/%C2%B2", None, 404),  # '²' is a digit to str.isdigit(), not an id
    ],
)
def test_ids_beyond_the_columns_are_refused_not_500_on_postgres(pg_client, method, path, body, status):
    """Issue 19.3: ids of 2^31 and above reached Postgres's 32-bit columns. The API's limit is the column's now."""
    r = pg_client.request(method, path, json=body, headers=AUTH)
    assert r.status_code == status, (path, r.status_code, r.text)


def test_the_schema_states_the_id_limit(pg_client):
    schema = pg_client.get("/openapi.json").json()
    sample_id = next(p for p in schema["paths"]["/api/samples/{sample_id}"]["get"]["parameters"] if p["name"] == "sample_id")
    assert sample_id["schema"]["maximum"] == 2**31 - 1
    job_id = next(p for p in schema["paths"]["/api/jobs/{job_id}"]["get"]["parameters"] if p["name"] == "job_id")
    assert job_id["schema"]["maximum"] == 2**31 - 1


def test_a_job_with_a_nul_argument_is_refused_at_submit_on_postgres(pg_client, pg_url):
    """Issue 19.4: such a job killed every worker that claimed it. The API refuses it; nothing is queued."""
    from datagen import storage
    from datagen.errors import InputError
    from datagen.jobs import queue

    before = len(queue.list_jobs(storage.connect(pg_url)))
    r = pg_client.post("/api/jobs", json={"kind": "generate", "args": ["--run", "x\x00y"]}, headers=AUTH)
    assert r.status_code == 422
    with pytest.raises(InputError, match="NUL"):  # the library refuses it too (the CLI and the scheduler go through it)
        queue.submit(storage.connect(pg_url), "generate", ["--api", "chat", "--model", "m", "--run", "x\x00y"])
    assert len(queue.list_jobs(storage.connect(pg_url))) == before


def test_health_checks_the_database(pg_url):
    """Issue 19.19: health said ok while the database was down. It asks the database; 503 and one line when it cannot."""
    admin = pg_url.replace("postgresql+psycopg", "postgresql").rsplit("/", 1)[0] + "/postgres"
    with _client(pg_url) as c:
        assert c.get("/api/health").json()["ok"] is True
        with psycopg.connect(admin, autocommit=True) as con:
            con.execute("ALTER DATABASE datagen ALLOW_CONNECTIONS false")
            con.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = 'datagen'")
        try:
            r = c.get("/api/health")
            assert r.status_code == 503, r.text
            detail = r.json()["detail"]
            assert isinstance(detail, str) and "\n" not in detail and "datagen" in detail, detail
        finally:
            with psycopg.connect(admin, autocommit=True) as con:
                con.execute("ALTER DATABASE datagen ALLOW_CONNECTIONS true")
        r = c.get("/api/health")  # back as soon as the database is: no restart of the service
        assert r.status_code == 200 and r.json()["ok"] is True
