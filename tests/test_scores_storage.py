"""Score, selection and embedding storage (issue 20) on SQLite and on a real PostgreSQL: a success is
stored once per (sample, scorer, rubric, model) however often it is offered, failures pile up per try
and never block a success, unscored ids shrink as scores land, selections keep their order, the
export filter sees exactly the selection / the score range."""

from __future__ import annotations

import numpy as np
import pytest

from test_postgres import core_pg_url  # noqa: F401  (fixture)

from datagen import storage
from datagen.records import Candidate, Instance, Status
from datagen.storage import queries
from datagen.storage import scores as S


def _fill(url: str):
    engine = storage.connect(url)
    run, _ = storage.open_run(engine, "r", lang="en", api="local", model="m", target=10, config={})
    other, _ = storage.open_run(engine, "other", lang="en", api="local", model="m", target=10, config={})
    ids = []
    for i in range(6):
        st = Status.rejected if i == 5 else Status.accepted
        c = Candidate(instruction=f"Task number {i}.", lang="en", status=st, instances=[Instance(input=f"in {i}", output=f"out {i}")])
        ids.append(storage.add_sample(engine, run.id, c))
    foreign = storage.add_sample(engine, other.id, Candidate(instruction="Elsewhere.", lang="en", status=Status.accepted,
                                                              instances=[Instance(input="", output="x")]))
    return engine, run.id, ids, foreign


def check_storage(url: str) -> None:
    engine, run_id, ids, foreign = _fill(url)
    kept = ids[:5]  # the rejected one is never offered for scoring
    assert S.unscored_sample_ids(engine, run_id, "ifd", "m1") == kept
    assert S.count_unscored(engine, run_id, "ifd", "m1") == 5

    # A failure is stored per try and does not count as scored.
    assert S.store_score(engine, kept[0], "judge", "gpt", None, rubric="accuracy", reason="no number here", error="unparseable")
    assert S.store_score(engine, kept[0], "judge", "gpt", None, rubric="accuracy", error="timeout")
    assert S.failed_tries(engine, kept, "judge", "gpt", "accuracy") == {kept[0]: 2}
    assert kept[0] in S.unscored_sample_ids(engine, run_id, "judge", "gpt", "accuracy")

    # Successes: stored once; a second offer (a resumed scorer) changes nothing.
    assert S.store_score(engine, kept[0], "judge", "gpt", 4.5, rubric="accuracy", reason="correct")
    assert not S.store_score(engine, kept[0], "judge", "gpt", 1.0, rubric="accuracy", reason="again")
    batch = [S.ScoreIn(sid, "ifd", "m1", 0.1 * (i + 1), extra={"ppl_cond": 2.0, "ppl_plain": 3.0}) for i, sid in enumerate(kept[:3])]
    assert S.store_scores(engine, batch) == 3
    assert S.store_scores(engine, batch + [S.ScoreIn(kept[3], "ifd", "m1", 0.9)]) == 1
    assert S.unscored_sample_ids(engine, run_id, "ifd", "m1") == [kept[4]]
    assert S.unscored_sample_ids(engine, run_id, "ifd", "m2") == kept  # another model is another key
    assert S.unscored_sample_ids(engine, run_id, "ifd", "m1", after=kept[0], limit=2) == [kept[4]]
    assert S.unscored_sample_ids(engine, None, "ifd", "m1") == [kept[4], foreign]

    got = S.scores_for(engine, [kept[0], kept[1]])
    assert [(r["scorer"], r["value"], r["reason"]) for r in got[kept[0]]] == [("judge", 4.5, "correct"), ("ifd", pytest.approx(0.1), None)]
    assert got[kept[1]][0]["extra"] == {"ppl_cond": 2.0, "ppl_plain": 3.0}
    with_failures = S.scores_for(engine, [kept[0]], scorer="judge", failures=True)[kept[0]]
    assert [r["error"] for r in with_failures] == ["unparseable", "timeout", None]
    assert with_failures[0]["reason"] == "no number here"

    keys = {(k["scorer"], k["rubric"], k["model"]): k["count"] for k in S.score_keys(engine, run_id)}
    assert keys == {("ifd", "", "m1"): 4, ("judge", "accuracy", "gpt"): 1}
    vals = S.score_values(engine, run_id, "ifd", "", "m1")
    assert vals == pytest.approx({kept[0]: 0.1, kept[1]: 0.2, kept[2]: 0.3, kept[3]: 0.9})

    texts = S.sample_texts(engine, [kept[2]])
    assert texts == {kept[2]: ("Task number 2.", [("in 2", "out 2")])}

    # Selections: named, ordered, replaced by name; the export filter sees exactly the members.
    sel = S.save_selection(engine, "best", run_id, {"by": ["ifd"], "max": 2}, [kept[3], kept[1]])
    assert S.selection_members(engine, sel) == [kept[3], kept[1]]
    assert S.get_selection(engine, "best")["rule"] == {"by": ["ifd"], "max": 2}
    f = queries.SampleFilter(selection_id=sel)
    assert [s["id"] for s, _ in queries.iter_samples(engine, f)] == sorted([kept[3], kept[1]])
    sel2 = S.save_selection(engine, "best", run_id, {"by": ["ifd"]}, [kept[2]])
    assert S.selection_members(engine, sel2) == [kept[2]]
    assert [s["name"] for s in S.list_selections(engine)] == ["best"] and S.get_selection(engine, "nope") is None
    assert S.save_selection(engine, "empty", run_id, {}, []) and S.get_selection(engine, "empty")["size"] == 0

    # Score ranges: inclusive bounds, any model unless one is named, several ranges all apply.
    f = queries.SampleFilter(score_ranges=[S.ScoreRange("ifd", min=0.2, max=0.9)])
    assert [s["id"] for s, _ in queries.iter_samples(engine, f)] == [kept[1], kept[2], kept[3]]
    f = queries.SampleFilter(score_ranges=[S.ScoreRange("ifd", model="m2", min=0.0)])
    assert list(queries.iter_samples(engine, f)) == []
    f = queries.SampleFilter(score_ranges=[S.ScoreRange("ifd", max=0.5), S.ScoreRange("judge", "accuracy", min=4.5)])
    assert [s["id"] for s, _ in queries.iter_samples(engine, f)] == [kept[0]]
    assert queries.count_samples(engine, f).count == 1

    # Embeddings: float32 round trip, one per (sample, model), a second put keeps the first.
    v = np.arange(4, dtype=np.float64) / 3
    assert S.put_embeddings(engine, "emb", {kept[0]: v, kept[1]: -v}) == 2
    assert S.put_embeddings(engine, "emb", {kept[0]: v * 0}) == 0
    e = S.get_embeddings(engine, [kept[0], kept[1], kept[2]], "emb")
    assert set(e) == {kept[0], kept[1]} and e[kept[0]].dtype == np.float32
    np.testing.assert_array_equal(e[kept[0]], v.astype(np.float32))
    assert S.get_embeddings(engine, [kept[0]], "other") == {}
    storage.dispose_all()


def test_score_storage_sqlite(tmp_path):
    check_storage(f"sqlite:///{tmp_path / 's.db'}")


def test_score_storage_postgres(core_pg_url):  # noqa: F811
    check_storage(core_pg_url)
