"""`datagen report`: figures that move the right way, one verb for one verb, escaped text, a page
that sends no request, one-line errors, identical JSON for the same database, SQLite and Postgres."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import core_cli, core_env, core_one_line_error
from test_postgres import core_pg_url  # noqa: F401  (fixture: a throwaway Postgres cluster)

CHROMIUM = os.environ.get("DATAGEN_CHROMIUM", "/usr/bin/chromium")
needs_chromium = pytest.mark.skipif(not Path(CHROMIUM).exists() or shutil.which(CHROMIUM) is None, reason=f"no Chromium at {CHROMIUM}")
SCRIPT = "Explain what <script>window.pwned=1</script> does in a web page."
SYNONYMS = {"write": "Compose", "give": "Provide", "generate": "Create", "find": "Identify", "make": "Create", "tell": "Say", "come": "Think"}


def seeds(n: int) -> list[tuple[str, list[tuple[str, str]], bool]]:
    from datagen.seeds import default_seed_path, load_seeds

    tasks = load_seeds(default_seed_path("en"))[:n]
    return [(t.instruction, [(i.input, i.output) for i in t.instances], t.is_classification) for t in tasks]


def paraphrase(text: str) -> str:
    """A near-duplicate as a model writes one: a synonym for the first word, a politeness prefix."""
    first, _, rest = text.partition(" ")
    return f"Please {SYNONYMS.get(first.lower(), first).lower()} {rest}"


def make_run(engine, name: str, rows, lang: str = "en", *, rejected: int = 0, requests: int = 0):
    from datagen import storage
    from datagen.records import Candidate, Generation, Instance, Status

    run, _ = storage.open_run(engine, name, lang=lang, api="chat", model="m", target=len(rows), config={})
    for k in range(requests):
        storage.log_request(engine, run.id, "bootstrap", "m", f"prompt {k}", Generation(text="x", tokens_in=100, tokens_out=40), cost=0.002)
    for text, inst, cls in rows:
        c = Candidate(instruction=text, lang=lang, status=Status.accepted, is_classification=cls,
                      instances=[Instance(input=i, output=o) for i, o in inst])
        assert storage.add_sample(engine, run.id, c) is not None
    for k in range(rejected):
        storage.add_sample(engine, run.id, Candidate(instruction=f"Draw picture {k}", lang=lang, status=Status.rejected, reason="blacklist"))
    return run


def add_embeddings(engine, run_name: str, vectors: np.ndarray) -> None:
    """Cached embeddings as the quality work stores them (table `embedding`, float32 bytes)."""
    from sqlalchemy import Column, Integer, LargeBinary, MetaData, String, Table, inspect

    from datagen import storage
    from datagen.storage.report import kept_samples

    run = storage.get_run(engine, run_name)
    ids = [s.id for s in kept_samples(engine, run.id)]
    model = getattr(storage.models, "Embedding", None)
    if model is not None:  # the real table (migration 0011) once the quality work is merged
        from sqlmodel import Session

        with Session(engine) as s:
            s.add_all([model(sample_id=i, model="toy", dim=vectors.shape[1], vector=v.astype("<f4").tobytes()) for i, v in zip(ids, vectors)])
            s.commit()
        return
    md = MetaData()
    t = Table("embedding", md, Column("id", Integer, primary_key=True), Column("sample_id", Integer), Column("model", String),
              Column("dim", Integer), Column("vector", LargeBinary))
    if not inspect(engine).has_table("embedding"):
        md.create_all(engine)
    with engine.begin() as conn:
        conn.execute(t.insert(), [{"sample_id": i, "model": "toy", "dim": vectors.shape[1], "vector": v.astype("<f4").tobytes()} for i, v in zip(ids, vectors)])


def add_scores(engine, run_name: str) -> None:
    """Scores and a selection as the quality work stores them (tables score, selection, selection_member)."""
    from sqlalchemy import Column, Float, Integer, MetaData, String, Table, inspect

    from datagen import storage
    from datagen.storage.report import kept_samples

    run = storage.get_run(engine, run_name)
    ids = [s.id for s in kept_samples(engine, run.id)]
    md = MetaData()
    score = Table("score", md, Column("id", Integer, primary_key=True), Column("sample_id", Integer), Column("scorer", String),
                  Column("rubric", String), Column("model", String), Column("value", Float))
    sel = Table("selection", md, Column("id", Integer, primary_key=True), Column("name", String), Column("run_id", Integer), Column("size", Integer))
    member = Table("selection_member", md, Column("selection_id", Integer, primary_key=True), Column("rank", Integer, primary_key=True), Column("sample_id", Integer))
    if not inspect(engine).has_table("score"):
        md.create_all(engine)
    elif hasattr(storage.models, "Score"):  # the real tables once the quality work is merged: their columns, NOT NULLs included
        score, sel, member = storage.models.Score.__table__, storage.models.Selection.__table__, storage.models.SelectionMember.__table__
    from datagen.storage.models import utcnow

    extra = {"created_at": utcnow()} if "created_at" in score.c else {}
    with engine.begin() as conn:
        conn.execute(score.insert(), [{"sample_id": i, "scorer": "ifd", "rubric": "", "model": "m", "value": k / len(ids), **extra} for k, i in enumerate(ids)]
                     + [{"sample_id": i, "scorer": "judge", "rubric": "helpful", "model": "m", "value": 1 + k % 5, **extra} for k, i in enumerate(ids)])
        sid = conn.execute(sel.insert().values(name="top-half", run_id=run.id, size=len(ids) // 2, **({"rule": "{}", **extra} if "rule" in sel.c else {}))).inserted_primary_key[0]
        conn.execute(member.insert(), [{"selection_id": sid, "rank": r, "sample_id": i} for r, i in enumerate(ids[: len(ids) // 2])])


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    """Runs: `clean` (100 seed tasks), `dup` (80 of them + 20 % paraphrased copies), `verb` (one
    verb), `zh-verb`, `empty` (candidates, none kept), `script` (a <script> in a close pair)."""
    from datagen import storage

    url = f"sqlite:///{tmp_path_factory.mktemp('report') / 'r.db'}"
    eng = storage.connect(url)
    base = seeds(100)
    make_run(eng, "clean", base, rejected=7, requests=30)
    make_run(eng, "dup", base[:80] + [(paraphrase(t), inst, cls) for t, inst, cls in base[:20]], rejected=7, requests=30)
    rng = np.random.default_rng(0)
    vec = rng.normal(size=(100, 32))
    add_embeddings(eng, "clean", vec)
    add_embeddings(eng, "dup", np.concatenate([vec[:80], vec[:20] + rng.normal(scale=0.05, size=(20, 32))]))
    add_scores(eng, "clean")
    topics = ["the sea", "a cat", "winter mornings", "my first bicycle", "the city at night", "an old friend", "rain", "autumn leaves"]
    make_run(eng, "verb", [(f"Write a poem about {t}.", [("", "A poem.")], False) for t in topics])
    make_run(eng, "zh-verb", [(f"写一首关于{t}的诗。", [("", "诗。")], False) for t in ["大海", "秋天", "月亮", "故乡", "春雨"]], lang="zh")
    make_run(eng, "empty", [], rejected=3)
    make_run(eng, "script", base[:10] + [(SCRIPT, [("<b>bold</b>", "It runs code.")], False), (SCRIPT.replace("Explain", "Describe"), [("", "x")], False)])
    yield url, eng
    storage.dispose_all()


def test_near_duplicates_move_duplicate_and_diversity_figures(engine):
    from datagen.report import build

    _, eng = engine
    rep = build(eng, "dup", vs="clean")
    dup, clean = rep["run"], rep["vs"]
    # Diversity falls: fewer distinct words and word pairs; embeddings closer together.
    for part in ("instructions", "outputs"):
        assert dup["diversity"][part]["distinct_1"] < clean["diversity"][part]["distinct_1"]
        assert dup["diversity"][part]["distinct_2"] < clean["diversity"][part]["distinct_2"]
    assert dup["diversity"]["embedding"]["mean_pairwise_cosine"] > clean["diversity"]["embedding"]["mean_pairwise_cosine"]
    assert dup["diversity"]["embedding"]["nn_above_share"] == 0.4 and clean["diversity"]["embedding"]["nn_above_share"] == 0.0
    # Duplicates rise: every copy and its original now have a kept neighbour above 0.7.
    sd, sc = dup["similarity"]["to_kept"], clean["similarity"]["to_kept"]
    assert sd["near_duplicate_share"] >= 0.4 > sc["near_duplicate_share"]
    assert sd["above_floor_share"] > sc["above_floor_share"]
    assert sum(sd["histogram"]["counts"][4:]) >= 40  # bins from 0.7 up
    pairs = dup["similarity"]["closest_pairs"]
    assert len(pairs) == 10 and all(p["b"] == paraphrase(p["a"]) for p in pairs)
    assert pairs == sorted(pairs, key=lambda p: -p["score"])
    # The comparison names a duplicate figure among those that moved most, with the right sign.
    rows = {r["figure"]: r for r in rep["comparison"]["figures"]}
    assert rows["similarity.to_kept.near_duplicate_share"]["delta"] > 0
    assert rows["diversity.instructions.distinct_2"]["delta"] < 0
    assert "similarity.to_kept.near_duplicate_share" in rep["comparison"]["moved_most"]
    # The funnel: counts, rejection reasons and per-kept costs.
    f = clean["funnel"]
    assert (f["generated"], f["screened"], f["judged"], f["kept"], f["rejections"]) == (107, 100, 100, 100, {"blacklist": 7})
    assert (f["requests"], f["tokens_per_kept"], f["cost_per_kept"]) == (30, 42.0, 0.0006)
    assert clean["lengths"]["classification"] + clean["lengths"]["generation"] == 100
    assert clean["similarity"]["to_seed"]["median"] == 1.0  # the run is the seeds themselves
    # Scores and selections, where stored (the clean run only).
    sc = clean["scores"]
    assert sorted(sc["histograms"]) == ["ifd@m", "judge:helpful@m"] and sc["selections"] == [{"name": "top-half", "size": 50}]
    assert sum(sc["histograms"]["judge:helpful@m"]["histogram"]["counts"]) == 100 and sc["histograms"]["judge:helpful@m"]["mean"] == 3.0
    assert dup["scores"] == {"histograms": {}, "selections": []}


def test_one_repeated_verb_shows_one_verb(engine):
    from datagen.report.figures import run_figures

    _, eng = engine
    v = run_figures(eng, "verb")["diversity"]["verbs"]
    assert (v["distinct_verbs"], v["with_verb"], [t["verb"] for t in v["top"]]) == (1, 8, ["write"])
    assert v["top"][0]["objects"][0] == {"object": "poem", "count": 8}
    z = run_figures(eng, "zh-verb")["diversity"]["verbs"]
    assert (z["distinct_verbs"], [t["verb"] for t in z["top"]], z["parser"]) == (1, ["写"], "jieba.posseg")


def test_same_database_same_json_bytes(engine, tmp_path):
    url, _ = engine
    outs = []
    for k in range(2):
        p = core_cli("report", "--run", "dup", "--vs", "clean", "--json", str(tmp_path / f"f{k}.json"), "--out", str(tmp_path / f"r{k}.html"), "--db", url)
        assert p.returncode == 0, p.stderr
        outs.append(((tmp_path / f"f{k}.json").read_bytes(), (tmp_path / f"r{k}.html").read_bytes()))
    assert outs[0] == outs[1]
    data = json.loads(outs[0][0])
    assert data["run"]["run"]["name"] == "dup" and data["vs"]["run"]["name"] == "clean"
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left


@pytest.mark.parametrize(
    "args, message",
    [
        (["--run", "clean", "--vs", "zh-verb"], "run 'clean' is en and run 'zh-verb' is zh: compare runs of one language"),
        (["--run", "clean", "--vs", "empty"], "run 'empty' has no kept samples: nothing to report"),
        (["--run", "clean", "--vs", "nosuch"], "no run named 'nosuch'"),
    ],
)
def test_vs_refused_in_one_line(engine, tmp_path, args, message):
    url, _ = engine
    out = tmp_path / "r.html"
    p = core_cli("report", *args, "--out", str(out), "--db", url, env=core_env())
    assert core_one_line_error(p) == f"error: {message}"
    assert not out.exists()


@needs_chromium
def test_html_opens_offline_and_shows_script_as_text(engine, tmp_path):
    from playwright.sync_api import sync_playwright

    from datagen.report import write_report

    _, eng = engine
    out = tmp_path / "script.html"
    write_report(eng, "script", out=out)
    page_url = out.as_uri()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"], headless=True)
        page = browser.new_page()
        requests, errors = [], []
        page.on("request", lambda r: requests.append(r.url))
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(page_url)
        page.wait_for_selector("h2#similarity")
        text = page.inner_text("body")
        assert SCRIPT in text  # the <script> is shown as text...
        assert page.evaluate("document.scripts.length") == 0 and page.evaluate("window.pwned") is None  # ...and never runs
        assert page.locator("svg").count() == 7  # funnel, verbs, 2 ROUGE-L, 3 length charts: inline
        assert page.evaluate("getComputedStyle(document.body).maxWidth") == "1100px"  # the stylesheet applies under its CSP
        browser.close()
    assert requests == [page_url], requests  # nothing but the file itself
    assert not errors


def test_storage_queries_on_postgres_match_sqlite(core_pg_url, tmp_path):  # noqa: F811
    from datagen import storage
    from datagen.report import build, to_json

    base = seeds(30)
    reports = []
    for url in (core_pg_url, f"sqlite:///{tmp_path / 'same.db'}"):  # the same rows in both
        eng = storage.connect(url)
        make_run(eng, "clean", base, rejected=7, requests=30)
        add_embeddings(eng, "clean", np.random.default_rng(0).normal(size=(30, 32)))
        make_run(eng, "dup", base[:24] + [(paraphrase(t), inst, cls) for t, inst, cls in base[:6]], rejected=2, requests=5)
        reports.append(to_json(build(eng, "dup", vs="clean")))
    assert reports[0] == reports[1]  # byte-identical figures from Postgres and SQLite
    rep = json.loads(reports[0])
    assert rep["vs"]["funnel"]["requests"] == 30 and rep["vs"]["diversity"]["embedding"]["samples"] == 30
    assert rep["run"]["funnel"]["rejections"] == {"blacklist": 2}
    assert rep["run"]["similarity"]["to_kept"]["near_duplicate_share"] == 0.4


def test_api_serves_the_same_figures_and_page(engine):
    from fastapi.testclient import TestClient

    from api.config import Settings
    from api.main import create_app
    from datagen.report import build, render, to_html

    url, eng = engine
    with TestClient(create_app(Settings(db_url=url, token="t" * 24, allowed_hosts=("testserver",)))) as client:
        r = client.get("/api/report", params={"run": "dup", "vs": "clean"})
        assert r.status_code == 200 and r.json() == json.loads(json.dumps(build(eng, "dup", vs="clean")))
        page = client.get("/api/report.html", params={"run": "script"})
        assert page.text == to_html(build(eng, "script"))
        assert page.headers["content-security-policy"] == render.CSP
        assert client.get("/api/report", params={"run": "nosuch"}).json() == {"detail": "no run named 'nosuch'"}
        assert client.get("/api/report", params={"run": "clean", "vs": "zh-verb"}).status_code == 422
        # Nothing kept is the data's state (a review may have discarded it all), not a bad request.
        empty = client.get("/api/report.html", params={"run": "clean", "vs": "empty"})
        assert (empty.status_code, empty.json()) == (409, {"detail": "run 'empty' has no kept samples: nothing to report"})
        shell = client.get("/report")
        assert shell.status_code == 200 and render.STYLE_HASH in shell.headers["content-security-policy"]


@needs_chromium
def test_dashboard_report_page(engine, tmp_path):
    import subprocess
    import sys
    import time

    import httpx
    from playwright.sync_api import sync_playwright

    from conftest import REPO, core_free_port

    url, _ = engine
    port = core_free_port()
    log = open(tmp_path / "serve.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "api.cli", "serve", "--host", "127.0.0.1", "--port", str(port), "--db", url],
                            cwd=REPO, env=core_env(DATAGEN_API_TOKEN="t" * 24), stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                if httpx.get(base + "/api/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        else:
            pytest.fail("server did not start: " + (tmp_path / "serve.log").read_text())
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"], headless=True)
            page = browser.new_page()
            requests, errors = [], []
            page.on("request", lambda r: requests.append(r.url))
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.goto(base + "/")
            page.click("a.tab[href='/report']")
            page.wait_for_selector("#report-run option[value=script]", state="attached")
            page.select_option("#report-run", "script")
            page.click("#report-form button[type=submit]")
            frame = page.frame_locator("#report-frame")
            frame.locator("h2#similarity").wait_for(timeout=120_000)
            assert SCRIPT in frame.locator("body").inner_text()
            assert frame.locator("script").count() == 0
            assert page.evaluate("window.pwned") is None
            assert "run=script" in page.url  # the address bar holds the choice
            # Two runs: the comparison leads, with what moved most.
            page.select_option("#report-run", "dup")
            page.select_option("#report-vs", "clean")
            page.click("#report-form button[type=submit]")
            frame.locator("h2#comparison").wait_for(timeout=120_000)
            assert "Moved most:" in frame.locator("body").inner_text()
            browser.close()
        assert all(u.startswith(base) or u.startswith("about:") for u in requests), requests
        assert not errors, errors
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


def test_nearest_kept_in_two_processes_is_the_same(monkeypatch):
    from datagen import config
    from datagen.report.figures import nearest_kept

    texts = [t for t, _, _ in seeds(60)] + [paraphrase(t) for t, _, _ in seeds(15)]
    one = nearest_kept(texts, "en", 0.5)
    monkeypatch.setattr(config, "REPORT_PARALLEL_MIN", 10)
    two = nearest_kept(texts, "en", 0.5)
    assert one == two and len(one[1]) >= 15 and sum(s is not None for s in one[0]) >= 30
