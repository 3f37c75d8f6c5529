"""How the review API shows scores: each sample's scores as columns, sorting by one, a histogram per
score key, and how often reviewers agreed with a judge. (Scores themselves: datagen/storage/scores.py.)"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import aliased

from datagen.config import JUDGE_KEEP_AT, JUDGE_KEEP_DEFAULT
from datagen.storage.models import Run, Sample, Score
from datagen.storage.scores import ScoreRange, scores_for

JUDGE = "judge"


def key_name(scorer: str, rubric: str, model: str) -> str:
    """The key as users write it (datagen.scores.keys): scorer[:rubric]@model."""
    return scorer + (f":{rubric}" if rubric else "") + f"@{model}"


def value_expr(key: ScoreRange):
    """A sample's successful value for the key, as a column expression (NULL when unscored)."""
    q = select(func.max(Score.value)).where(Score.sample_id == Sample.id, Score.scorer == key.scorer,
                                            Score.rubric == (key.rubric or ""), Score.value.is_not(None))
    if key.model is not None:
        q = q.where(Score.model == key.model)
    return q.scalar_subquery()


def keep_at(rubric: str, threshold: float | None = None) -> float:
    return threshold if threshold is not None else JUDGE_KEEP_AT.get(rubric, JUDGE_KEEP_DEFAULT)


def columns(engine: Engine, sample_ids: Sequence[int]) -> dict[int, dict[str, float]]:
    """sample id -> {key: value}: one column per score key."""
    return {sid: {key_name(r["scorer"], r["rubric"], r["model"]): r["value"] for r in rows}
            for sid, rows in scores_for(engine, list(sample_ids)).items()}


def detail(engine: Engine, sample_id: int) -> list[dict]:
    """One sample's scores with the judge's reason and, for a judge, the verdict it suggests."""
    out = []
    for r in scores_for(engine, [sample_id])[sample_id]:
        d = {"key": key_name(r["scorer"], r["rubric"], r["model"]), "scorer": r["scorer"], "rubric": r["rubric"],
             "model": r["model"], "value": r["value"], "reason": r["reason"], "created_at": r["created_at"]}
        if r["scorer"] == JUDGE:
            d["threshold"] = keep_at(r["rubric"])
            d["suggest"] = "approve" if r["value"] >= d["threshold"] else "reject"
        out.append(d)
    failed = scores_for(engine, [sample_id], failures=True)[sample_id]
    return out + [{"key": key_name(r["scorer"], r["rubric"], r["model"]), "scorer": r["scorer"], "rubric": r["rubric"],
                   "model": r["model"], "value": None, "reason": None, "error": r["error"], "created_at": r["created_at"]}
                  for r in failed if r["value"] is None]


def histograms(engine: Engine, conds: list, bins: int = 20) -> list[dict]:
    """Per score key over the matching samples: counts in bins. Values on a half-point grid (a judge's)
    get a bin per value step; others `bins` equal bins between their min and max."""
    sc = aliased(Score)  # the filter's own score conditions correlate to `score`: keep ours apart
    q = (select(sc.scorer, sc.rubric, sc.model, sc.value, func.count())
         .join(Sample, Sample.id == sc.sample_id).where(*conds, sc.value.is_not(None))
         .group_by(sc.scorer, sc.rubric, sc.model, sc.value))
    by: dict[tuple, list[tuple[float, int]]] = defaultdict(list)
    with engine.connect() as conn:
        for scorer, rubric, model, value, n in conn.execute(q):
            by[(scorer, rubric, model)].append((value, n))
    out = []
    for (scorer, rubric, model), vals in sorted(by.items()):
        lo, hi = min(v for v, _ in vals), max(v for v, _ in vals)
        if all(abs(v * 2 - round(v * 2)) < 1e-9 for v, _ in vals) and (hi - lo) * 2 < 60:
            lo, width, nb = float(int(lo)) if lo >= 0 else lo, 0.5, int(round((hi - int(lo)) * 2)) + 1
        else:
            width, nb = ((hi - lo) / bins or 1.0), bins
        counts = [0] * nb
        for v, n in vals:
            counts[min(nb - 1, max(0, int((v - lo) / width + 1e-9)))] += n
        out.append({"key": key_name(scorer, rubric, model), "scorer": scorer, "rubric": rubric, "model": model,
                    "start": lo, "bin_width": width, "counts": counts, "total": sum(counts)})
    return out


def agreement(engine: Engine, conds: list, threshold: float | None = None) -> list[dict]:
    """Per run and judge key, over reviewed samples (approved or discarded) that the judge scored: how often
    the reviewer did what the judge's score suggests (approved at or above the threshold, rejected below)."""
    sc = aliased(Score)
    q = (select(Run.name, sc.rubric, sc.model, Sample.status, sc.value, func.count())
         .join(Sample, Sample.id == sc.sample_id).join(Run, Run.id == Sample.run_id)
         .where(*conds, sc.scorer == JUDGE, sc.value.is_not(None), Sample.status.in_(("approved", "discarded")))
         .group_by(Run.name, sc.rubric, sc.model, Sample.status, sc.value))
    acc: dict[tuple, dict] = {}
    with engine.connect() as conn:
        for run, rubric, model, status, value, n in conn.execute(q):
            t = keep_at(rubric, threshold)
            a = acc.setdefault((run, rubric, model), {"run": run, "key": key_name(JUDGE, rubric, model), "threshold": t,
                                                      "approved_at_or_above": 0, "approved_below": 0,
                                                      "rejected_at_or_above": 0, "rejected_below": 0})
            high = value >= t
            a[("approved" if status == "approved" else "rejected") + ("_at_or_above" if high else "_below")] += n
    out = []
    for a in acc.values():
        reviewed = a["approved_at_or_above"] + a["approved_below"] + a["rejected_at_or_above"] + a["rejected_below"]
        agreed = a["approved_at_or_above"] + a["rejected_below"]
        out.append({**a, "reviewed": reviewed, "agreed": agreed, "rate": agreed / reviewed if reviewed else None})
    return sorted(out, key=lambda a: (a["run"], a["key"]))
