"""Scores in the review API: a column per score key, filter and sort by one, the judge's reason and
suggested verdict on the detail, a histogram per key, and reviewers' agreement with the judge."""

from __future__ import annotations

import pytest

from conftest import AUTH

from datagen import storage
from datagen.storage import scores as S


def _score(db_url) -> dict[int, float]:
    """Judge scores (accuracy) on the en run's accepted samples and an IFD on two; returns sample id -> judge value."""
    engine = storage.connect(db_url)
    run = storage.get_run(engine, "demo-en")
    with engine.connect() as conn:
        ids = [r[0] for r in conn.exec_driver_sql(f"select id from sample where run_id = {run.id} and status = 'accepted' order by id")]
    values = {sid: v for sid, v in zip(ids, [5.0, 4.5, 2.0, 3.5, 4.0, 1.0, 5.0])}
    S.store_scores(engine, [S.ScoreIn(sid, "judge", "gpt-4o-mini", v, rubric="accuracy", reason=f"<b>why</b> {v}") for sid, v in values.items()])
    S.store_scores(engine, [S.ScoreIn(ids[0], "ifd", "smollm2", 0.8123), S.ScoreIn(ids[1], "ifd", "smollm2", 0.41)])
    S.store_scores(engine, [S.ScoreIn(ids[2], "judge", "gpt-4o-mini", None, rubric="accuracy", reason="no number", error="unusable answer: no score line")])
    return values


KEY = "judge:accuracy@gpt-4o-mini"


def test_each_score_is_a_column_and_filters_and_sorts(client, db_url):
    values = _score(db_url)
    page = client.get("/api/samples", params={"run": "demo-en", "limit": 50}).json()["items"]
    by_id = {it["id"]: it["scores"] for it in page}
    for sid, v in values.items():
        assert by_id[sid][KEY] == v
    first = min(values)
    assert by_id[first]["ifd@smollm2"] == pytest.approx(0.8123)
    assert all(not s for i, s in by_id.items() if i not in values)
    # Filter by range (either key spelling), sort by the key, page through with the cursor.
    got = client.get("/api/samples", params={"by": "judge:accuracy", "by_min": 4, "by_max": 4.5}).json()["items"]
    assert sorted(it["id"] for it in got) == sorted(s for s, v in values.items() if 4 <= v <= 4.5)
    order, cursor = [], None
    while True:
        r = client.get("/api/samples", params={"by": KEY, "sort": "-scored", "limit": 3, **({"cursor": cursor} if cursor else {})}).json()
        order += [(it["scores"][KEY], it["id"]) for it in r["items"]]
        cursor = r["next_cursor"]
        if not cursor:
            break
    assert order == sorted(((v, s) for s, v in values.items()), key=lambda t: (-t[0], -t[1]))
    up = client.get("/api/samples", params={"by": KEY, "sort": "scored"}).json()["items"]
    assert [it["scores"][KEY] for it in up] == sorted(values.values())
    assert client.get("/api/samples/count", params={"by": KEY, "by_min": 4.5}).json()["count"] == 3
    # A bound without a key bounds nothing, a reversed range matches nothing (the schema cannot state either rule).
    assert client.get("/api/samples/count", params={"by_min": 4}).json()["count"] == client.get("/api/samples/count").json()["count"]
    assert client.get("/api/samples/count", params={"by": KEY, "by_min": 5, "by_max": 4}).json()["count"] == 0
    # Mistakes are 422s that say what is wrong.
    for nothing in ({"by": "nope"}, {"by": "judge:"}, {"by": "ifd@ "}):  # a key naming no score matches nothing
        assert client.get("/api/samples/count", params={**nothing, "by_min": 0}).json()["count"] == 0, nothing
    for bad in ({"sort": "scored"},):
        r = client.get("/api/samples", params=bad)
        assert r.status_code == 422, (bad, r.text)


def test_detail_shows_the_judges_reason_and_suggestion_and_failures(client, db_url):
    values = _score(db_url)
    high = next(s for s, v in values.items() if v == 4.5)
    low = next(s for s, v in values.items() if v == 2.0)
    d = client.get(f"/api/samples/{high}").json()
    j = next(s for s in d["scores"] if s["scorer"] == "judge")
    assert (j["value"], j["reason"], j["threshold"], j["suggest"], j["key"]) == (4.5, "<b>why</b> 4.5", 4.5, "approve", KEY)
    d = client.get(f"/api/samples/{low}").json()
    judged = [s for s in d["scores"] if s["scorer"] == "judge"]
    assert [s["suggest"] for s in judged if s["value"] is not None] == ["reject"]
    assert [s["error"] for s in judged if s["value"] is None] == ["unusable answer: no score line"]


def test_stats_have_a_histogram_per_key_and_reviewers_agreement_with_the_judge(client, db_url):
    values = _score(db_url)
    ids = sorted(values)
    # approve 5.0 (agree), approve 2.0 (disagree), reject 1.0 (agree), reject 4.5 (disagree), reject 3.5 (agree)
    acts = {next(s for s in ids if values[s] == v): a for v, a in ((5.0, "approve"), (2.0, "approve"), (1.0, "reject"), (4.5, "reject"), (3.5, "reject"))}
    for sid, action in acts.items():
        r = client.post(f"/api/samples/{sid}/{action}", headers=AUTH, json={"force": True} if action == "approve" else {})
        assert r.status_code == 200, r.text
    st = client.get("/api/stats", params={"run": "demo-en"}).json()
    h = {x["key"]: x for x in st["score_histograms"]}
    assert set(h) == {KEY, "ifd@smollm2"}
    judge = h[KEY]
    assert (judge["start"], judge["bin_width"], judge["total"]) == (1.0, 0.5, 7)
    assert judge["counts"] == [1, 0, 1, 0, 0, 1, 1, 1, 2]  # 1, 2, 3.5, 4, 4.5, 5 x2
    assert h["ifd@smollm2"]["total"] == 2
    [a] = st["judge_agreement"]
    assert (a["run"], a["key"], a["threshold"], a["reviewed"], a["agreed"]) == ("demo-en", KEY, 4.5, 5, 3)
    assert (a["approved_at_or_above"], a["approved_below"], a["rejected_at_or_above"], a["rejected_below"]) == (1, 1, 1, 2)
    assert a["rate"] == pytest.approx(0.6)
    # The same numbers for a filter by the score itself (its conditions and ours join the score table apart).
    narrow = client.get("/api/stats", params={"run": "demo-en", "by": KEY, "by_min": 4}).json()
    assert {x["key"]: x["total"] for x in narrow["score_histograms"]} == {KEY: 4, "ifd@smollm2": 2}
    assert [(a["reviewed"], a["agreed"]) for a in narrow["judge_agreement"]] == [(2, 1)]
    keys = client.get("/api/scores/keys", params={"run": "demo-en"}).json()
    assert {k["key"]: k["count"] for k in keys} == {KEY: 7, "ifd@smollm2": 2}
    assert client.get("/api/scores/keys", params={"run": "nope"}).status_code == 404
