"""The review service as a user runs it: `datagen serve` in its own process, raw HTTP on 127.0.0.1."""

from __future__ import annotations

import re

import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from conftest import REPO, TOKEN, build_db, core_env, core_free_port, core_wait_for
from test_postgres import core_pg_url  # noqa: F401  (fixture)


@pytest.fixture
def serve(tmp_path):
    """Factory: serve(db_url, *args, **env) starts `datagen serve` and returns (base URL, log path)."""
    procs = []

    def start(db_url: str, *args: str, **env: str):
        port = core_free_port()
        log = tmp_path / f"serve-{port}.log"
        out = open(log, "w")
        proc = subprocess.Popen(
            [sys.executable, "-m", "api.cli", "serve", "--port", str(port), "--db", db_url, *args],
            cwd=REPO, env=core_env(DATAGEN_API_TOKEN=TOKEN, **env), stdout=out, stderr=subprocess.STDOUT,
        )
        procs.append((proc, out))
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                if httpx.get(base + "/api/health", timeout=1).status_code == 200:
                    return base, log
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "serve did not start: " + log.read_text()
            time.sleep(0.2)

    yield start
    for proc, out in procs:
        proc.terminate()
        proc.wait(10)
        out.close()


def _raw_get(base: str, path: str, host: str) -> tuple[int, bytes]:
    """One HTTP/1.1 request written by hand, so the Host header is exactly what a rebinding page sends."""
    port = int(base.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return int(data.split(b" ", 2)[1]), data


def test_dns_rebinding_only_loopback_and_configured_host_names(serve, tmp_path):
    base, _ = serve(build_db(tmp_path / "r.db"), "--allowed-host", "review.example", DATAGEN_ALLOWED_HOSTS="team.example, other.example.")
    port = base.rsplit(":", 1)[1]
    for host in ("attacker.example", f"attacker.example:{port}", "localhost.attacker.example", "127.0.0.1.nip.io", "review.example.attacker"):
        status, data = _raw_get(base, "/api/samples", host)
        assert status == 421 and b'"items"' not in data, (host, data[:200])
    for host in (f"127.0.0.1:{port}", "localhost", f"LOCALHOST:{port}", f"[::1]:{port}", f"review.example:{port}", "team.example", "other.example"):
        status, data = _raw_get(base, "/api/samples", host)
        assert status == 200 and b'"items"' in data, (host, data[:200])


def test_allowed_host_must_be_a_host_name(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "api.cli", "serve", "--db", build_db(tmp_path / "r.db"), "--allowed-host", "http://x.example/"],
        cwd=REPO, env=core_env(DATAGEN_API_TOKEN=TOKEN), capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode != 0 and "not a host name" in proc.stderr and "Traceback" not in proc.stderr


def test_credentials_in_query_strings_never_reach_the_access_log(serve, tmp_path):
    base, log = serve(build_db(tmp_path / "r.db"))
    secrets = {"token": "tok-1111aaaa", "access_token": "acc-2222bbbb", "api_key": "api-3333cccc", "key": "key-4444dddd",
               "password": "pw-5555eeee", "secret": "sec-6666ffff", "Authorization": "auth-7777gggg"}
    r = httpx.get(base + "/api/samples", params={**secrets, "q": "keyboard"})
    assert r.status_code == 422  # unknown parameters are refused, and still logged
    r = httpx.get(base + "/api/runs?sort=x&api%5Fkey=api-8888hhhh&q=monkey")
    text = core_wait_for(lambda: "q=monkey" in log.read_text() and log.read_text(), timeout=30)  # the access log is written after the answer
    assert "GET /api/samples?token=***&access_token=***&api_key=***&key=***&password=***&secret=***&Authorization=***&q=keyboard" in text, text
    assert "api%5Fkey=***&q=monkey" in text
    for value in [*secrets.values(), "api-8888hhhh", TOKEN]:
        assert value not in text


def test_an_export_that_fails_midway_does_not_look_complete(serve, tmp_path):
    db = tmp_path / "big.db"
    url = build_db(db)
    con = sqlite3.connect(db)
    run_id = con.execute("SELECT id FROM run WHERE name='demo-en'").fetchone()[0]
    start = con.execute("SELECT max(id) FROM sample").fetchone()[0] + 1
    rows = [(start + i, run_id, "en", f"Describe item number {i} in one sentence.", f"h{i}", "accepted", "2026-01-01 00:00:00", "2026-01-01 00:00:00") for i in range(2500)]
    con.executemany("INSERT INTO sample (id, run_id, lang, instruction, instruction_hash, status, indexed, created_at, updated_at) VALUES (?,?,?,?,?,?,1,?,?)", rows)
    con.executemany("INSERT INTO instance (sample_id, idx, input, output) VALUES (?,0,'',?)", [(r[0], f"item {r[0]}") for r in rows])
    # A row the driver cannot decode, far past the first chunk: the database fails mid-stream.
    con.execute("UPDATE instance SET output = CAST(x'ff' AS TEXT) WHERE sample_id = ?", (start + 2200,))
    con.commit()
    con.close()
    base, _ = serve(url)
    got = []
    with pytest.raises(httpx.HTTPError):  # the chunked body never ends properly
        with httpx.stream("GET", base + "/api/export?run=demo-en", timeout=30) as r:
            assert r.status_code == 200
            for chunk in r.iter_bytes():
                got.append(chunk)
    assert b"".join(got).startswith(b"[") and not b"".join(got).rstrip().endswith(b"]")
    # The same fault in the first chunk is an error status, before any byte of a body.
    r = httpx.get(base + "/api/export?run=demo-en&q=number%202200", timeout=30)
    assert r.status_code >= 500 and not r.text.startswith("[")
    # Curl, the usual client, exits non-zero instead of keeping a cut file.
    curl = subprocess.run(["curl", "-sS", "-o", str(tmp_path / "out.json"), base + "/api/export?run=demo-en"], capture_output=True, text=True, timeout=60)
    assert curl.returncode != 0, curl.stderr


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_the_whole_schema_holds(serve, tmp_path, backend, request):
    """Schemathesis over every operation with every check, with and without the token, on both databases
    (Postgres refuses what SQLite stores: NUL in text, ids past 32 bits)."""
    url = build_db(tmp_path / "st.db") if backend == "sqlite" else build_db(request.getfixturevalue("core_pg_url"))
    base, log = serve(url)
    proc = subprocess.run(
        [str(Path(sys.executable).with_name("schemathesis")), "--config-file", str(REPO / "tests" / "schemathesis.toml"), "run", base + "/openapi.json",
         "--checks", "all", "--max-examples", "15", "--workers", "1", "--no-color", "-H", f"Authorization: Bearer {TOKEN}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=240,
    )
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
    # Every operation in the schema was exercised (warnings such as "missing test data" may remain).
    selected = re.search(r"Selected: (\d+)/(\d+)", proc.stdout)
    assert selected and selected.group(1) == selected.group(2) and f"Tested: {selected.group(1)}" in proc.stdout, proc.stdout[-3000:]
    assert "Traceback" not in log.read_text()
