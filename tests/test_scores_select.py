"""Selection (issue 20): Deita's greedy rule on a fixture worked out by hand, the blocked walk equal to
a one-by-one reference on clustered data, and export by selection and by minimum score."""

from __future__ import annotations

import json

import numpy as np
import pytest

from test_postgres import core_pg_url  # noqa: F401  (fixture)

from datagen import storage
from datagen.errors import InputError
from datagen.export import export
from datagen.records import Candidate, Instance, Status
from datagen.scores import models as M
from datagen.scores.select import greedy_diverse, select
from datagen.storage import scores as S

EMB = "hand-made-vectors"  # cached under this model name: nothing is loaded

# name, judge:accuracy, ifd, vector. By hand, --by judge:accuracy,ifd (product), --min judge:accuracy=3.5,
# --diversity 0.9:
#   A  5.0*0.8=4.00  kept first
#   A2 4.9*0.8=3.92  cos(A2, A)=0.999 > 0.9: out (its near-twin A scored higher; never both)
#   B  4.8*0.8=3.84  orthogonal: kept
#   C  5.0*0.7=3.50  cos(C, A)=0.8, cos(C, B)=0.6: kept at 0.9, out at 0.7
#   D  4.0*0.5=2.00  orthogonal to all: kept
#   E  3.0*0.9=2.70  below --min 3.5: out
#   F  5.0*1.2       IFD >= 1 (the instruction does not help): out
#   G  no judge score: out
ROWS = [
    ("A", 5.0, 0.8, [1, 0, 0]),
    ("A2", 4.9, 0.8, [0.999, 0.0447, 0]),
    ("B", 4.8, 0.8, [0, 1, 0]),
    ("C", 5.0, 0.7, [0.8, 0.6, 0]),
    ("D", 4.0, 0.5, [0, 0, 1]),
    ("E", 3.0, 0.9, [0, -1, 0]),
    ("F", 5.0, 1.2, [-1, 0, 0]),
    ("G", None, 0.3, [0, 0, -1]),
]


def reference_greedy(vectors, tau, max_keep=None):
    x = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    kept = []
    for i in range(len(x)):
        if all(float(x[i] @ x[j]) <= tau for j in kept):
            kept.append(i)
            if max_keep and len(kept) == max_keep:
                break
    return kept


def test_blocked_walk_equals_the_one_by_one_rule():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(40, 16))
    x = centres[rng.integers(0, 40, 600)] + 0.3 * rng.normal(size=(600, 16))  # clusters: many near-duplicates
    for tau in (0.5, 0.8, 0.95):
        want = reference_greedy(x, tau)
        assert 10 < len(want) < 600  # some kept, some dropped: the case is not trivial
        for block in (1, 7, 64, 1024):
            assert greedy_diverse(x, tau, block=block) == want
        assert greedy_diverse(x, tau, max_keep=10, block=7) == want[:10]


@pytest.fixture(params=["sqlite", "postgres"])
def fixture_db(request, tmp_path):
    url = f"sqlite:///{tmp_path / 'sel.db'}" if request.param == "sqlite" else request.getfixturevalue("core_pg_url")
    engine = storage.connect(url)
    run, _ = storage.open_run(engine, "r", lang="en", api="local", model="m", target=10, config={})
    ids = {}
    for name, acc, ifd_v, vec in ROWS:
        c = Candidate(instruction=f"Task {name}.", lang="en", status=Status.accepted, instances=[Instance(input="", output=f"Answer {name}.")])
        sid = ids[name] = storage.add_sample(engine, run.id, c)
        if acc is not None:
            S.store_score(engine, sid, "judge", "gpt", acc, rubric="accuracy")
        S.store_score(engine, sid, "ifd", "smollm2", ifd_v)
        S.put_embeddings(engine, M.model_name(EMB), {sid: np.array(vec, dtype=np.float32)})
    yield engine, ids
    storage.dispose_all()


def names(ids, chosen):
    back = {v: k for k, v in ids.items()}
    return [back[i] for i in chosen]


def test_selection_by_hand(fixture_db, tmp_path):
    engine, ids = fixture_db
    kw = dict(by="judge:accuracy,ifd", mins=["judge:accuracy=3.5"], embed_model=EMB)
    res = select(engine, "r", name="best", diversity=0.9, **kw)
    assert names(ids, res.kept) == ["A", "B", "C", "D"]
    assert (res.candidates, res.below_min, res.unscored) == (5, 2, 1)  # E and F below; G unscored
    assert names(ids, S.selection_members(engine, res.selection_id)) == ["A", "B", "C", "D"]
    assert S.get_selection(engine, "best")["rule"]["by"] == ["judge:accuracy", "ifd"]
    assert names(ids, select(engine, "r", name="strict", diversity=0.7, **kw).kept) == ["A", "B", "D"]
    assert names(ids, select(engine, "r", name="top3", diversity=0.9, max_keep=3, **kw).kept) == ["A", "B", "C"]
    # Without the diversity rule, near-twins both stay; ranked by IFD alone the order changes.
    assert names(ids, select(engine, "r", name="all", by="ifd", diversity=1.0).kept) == ["E", "A", "A2", "B", "C", "D", "G"]

    # Export: by selection (its members, in id order), and by minimum score.
    out = tmp_path / "best.jsonl"
    assert export(engine, out, fmt="jsonl", chosen="best") == 4
    assert [json.loads(line)["output"] for line in out.read_text().splitlines()] == ["Answer A.", "Answer B.", "Answer C.", "Answer D."]
    assert export(engine, out, fmt="jsonl", min_scores=["judge:accuracy=4.9"]) == 4  # A, A2, C, F
    assert {json.loads(line)["output"] for line in out.read_text().splitlines()} == {"Answer A.", "Answer A2.", "Answer C.", "Answer F."}
    assert export(engine, out, fmt="jsonl", chosen="top3", min_scores=["ifd=0.75"]) == 2  # A, B (C's IFD is 0.7)


def test_selection_refuses_bad_input(fixture_db, tmp_path):
    engine, ids = fixture_db
    for kw, msg in (
        ({"by": "judge:accuracy", "diversity": 1.5}, "--diversity"),
        ({"by": "judge:accuracy", "max_keep": 0}, "--max"),
        ({"by": "judge:quality"}, "no judge:quality scores"),
        ({"by": "nope"}, "unknown scorer"),
        ({"by": "judge:accuracy", "mins": ["judge:accuracy"]}, "KEY=VALUE"),
        ({"by": "judge:accuracy", "mins": ["judge:accuracy=x"]}, "not a number"),
        ({"by": "ifd@other"}, "no ifd scores by 'other'"),
    ):
        with pytest.raises(InputError, match=msg):
            select(engine, "r", name="x", embed_model=EMB, **kw)
    S.store_score(engine, ids["A"], "ifd", "another", 0.5)
    with pytest.raises(InputError, match="several models"):
        select(engine, "r", name="x", by="ifd", embed_model=EMB)
    assert names(ids, select(engine, "r", name="x", by="ifd@smollm2", embed_model=EMB, max_keep=1).kept) == ["E"]
    with pytest.raises(InputError, match="no selection named 'nope'"):
        export(engine, tmp_path / "x.json", chosen="nope")
