"""`datagen select`: Deita's greedy rule, exactly.

Candidates are the run's kept samples with a successful score for every key in --by; each must pass
every --min (value >= minimum) and, wherever IFD is used, IFD < IFD_CEILING (config). They are
sorted best first by the product of their --by scores (a "lower is better" scorer enters as
1/value), ties by sample id. Walking down that order, a sample is kept if its cosine similarity
to every sample kept so far is <= --diversity; the walk stops at --max kept.

The walk is exact and blocked: a block of B candidates is compared with everything kept so far in
one matrix product (a candidate too close to a kept one is out, whatever happens inside its block),
then the survivors are resolved in order against each other with their B x B similarity matrix.
Work is O(walked x kept x dim) multiply-adds in BLAS, memory O((kept + B) x dim); see the README's
Curation section for the times at 50K and 200K.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from datagen.config import DIVERSITY, IFD_CEILING
from datagen.errors import InputError
from datagen.records import KEPT
from datagen.scores.keys import ScoreKey, parse_keys, parse_min

BLOCK = 1024


def normalize(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def greedy_diverse(vectors: np.ndarray, threshold: float, max_keep: int | None = None, block: int = BLOCK) -> list[int]:
    """Indices (into `vectors`, already in best-first order) that Deita's rule keeps.

    Row i is kept iff cos(i, j) <= threshold for every kept j < i; stops at `max_keep`."""
    n = len(vectors)
    limit = n if max_keep is None else min(max_keep, n)
    if n == 0 or limit == 0:
        return []
    x = normalize(vectors)
    kept_vecs = np.empty((limit, x.shape[1]), dtype=np.float32)
    kept: list[int] = []
    for a in range(0, n, block):
        cand = x[a : a + block]
        alive = np.ones(len(cand), dtype=bool)
        if kept:
            alive &= (cand @ kept_vecs[: len(kept)].T).max(axis=1) <= threshold
        idx = np.flatnonzero(alive)
        if len(idx):
            sub = cand[idx]
            sims = sub @ sub.T
            blocked = np.zeros(len(idx), dtype=bool)
            for j in range(len(idx)):
                if blocked[j]:
                    continue
                kept_vecs[len(kept)] = sub[j]
                kept.append(a + int(idx[j]))
                if len(kept) == limit:
                    return kept
                blocked |= sims[j] > threshold
    return kept


@dataclass
class SelectResult:
    name: str
    selection_id: int
    kept: list[int]
    candidates: int  # passed --min and the IFD ceiling, scored by every --by key
    unscored: int  # kept samples lacking a --by score
    below_min: int
    seconds: float
    rule: dict = field(default_factory=dict)


def _model_for(engine, run_id: int, key: ScoreKey) -> str:
    """The model a key means: the one given, else the only one that scored the run under it."""
    from datagen.storage import scores as S

    models = [k["model"] for k in S.score_keys(engine, run_id) if k["scorer"] == key.scorer and k["rubric"] == key.rubric]
    if key.model is not None:
        if key.model not in models:
            raise InputError(f"no {key.scorer}{':' + key.rubric if key.rubric else ''} scores by {key.model!r} in this run")
        return key.model
    if not models:
        raise InputError(f"no {key} scores in this run: run `datagen score` first")
    if len(models) > 1:
        raise InputError(f"{key} was scored by several models ({', '.join(models)}): write {key}@MODEL")
    return models[0]


def select(engine, run: str, *, by: str, name: str, mins: Sequence[str] = (), diversity: float = DIVERSITY, max_keep: int | None = None,
           embed_model: str | None = None, batch_size: int | None = None, statuses: Sequence[str] = KEPT) -> SelectResult:
    """Choose and store the named selection (replacing one of the same name)."""
    from datagen import storage
    from datagen.scores import embed
    from datagen.storage import scores as S

    keys = parse_keys(by)
    floors = [parse_min(m) for m in mins]
    if not 0 <= diversity <= 1:
        raise InputError(f"--diversity {diversity!r}: a cosine similarity between 0 and 1")
    if max_keep is not None and max_keep < 1:
        raise InputError(f"--max {max_keep!r}: at least 1")
    if not name.strip():
        raise InputError("--name must not be empty")
    found = storage.get_run(engine, run)
    if found is None:
        raise InputError(f"no run named {run!r}")
    t0 = time.monotonic()
    values: dict[ScoreKey, dict[int, float]] = {}
    for k in list(keys) + [f[0] for f in floors]:
        if k not in values:
            values[k] = S.score_values(engine, found.id, k.scorer, k.rubric, _model_for(engine, found.id, k), statuses=statuses)
    # Candidates: every kept sample with all --by scores.
    ids = set(values[keys[0]])
    for k in keys[1:]:
        ids &= set(values[k])
    total_kept = storage.run_stats(engine, found.id).kept if statuses == KEPT else None
    unscored = (total_kept - len(ids)) if total_kept is not None else 0
    below = 0
    cands = []
    for sid in sorted(ids):
        ok = all(sid in values[k] and values[k][sid] >= v for k, v in floors)
        ok = ok and all(values[k].get(sid, 0.0) < IFD_CEILING for k in values if k.scorer == "ifd")
        if ok:
            cands.append(sid)
        else:
            below += 1

    def merit(sid: int) -> float:
        p = 1.0
        for k in keys:
            v = values[k][sid]
            p *= v if k.higher_is_better else (1.0 / v if v else float("inf"))
        return p

    order = sorted(cands, key=lambda sid: (-merit(sid), sid))
    emb_name = None
    if diversity >= 1.0 or not order:
        kept = order[: max_keep] if max_keep else order
    else:
        emb_name, vecs = embed.ensure(engine, order, model=embed_model, batch_size=batch_size)
        kept_idx = greedy_diverse(np.stack([vecs[sid] for sid in order]), diversity, max_keep)
        kept = [order[i] for i in kept_idx]
    rule = {"run": run, "by": [str(k) for k in keys], "min": {str(k): v for k, v in floors}, "diversity": diversity,
            "max": max_keep, "embed_model": emb_name, "ifd_ceiling": IFD_CEILING, "candidates": len(order)}
    sel_id = S.save_selection(engine, name.strip(), found.id, rule, kept)
    return SelectResult(name.strip(), sel_id, kept, len(order), unscored, below, time.monotonic() - t0, rule)
