"""A run's report card as plain data: every figure the HTML draws and `--json` writes.

Nothing here draws or knows SQL: storage (datagen/storage/report.py) reads, this module counts, and
datagen/report/render.py draws. Figures are deterministic: inputs are read in id order, ties are
broken by name or id, and floats are rounded, so the same database gives byte-identical JSON.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from pathlib import Path

import numpy as np
from rapidfuzz.distance import LCSseq
from rapidfuzz.process import cdist

from datagen import config
from datagen.errors import Conflict, InputError, NotFound
from datagen.records import KEPT, Status
from datagen.report import verbs
from datagen.similarity import SimilarityIndex, _fmeasure_vec, tokenize
from datagen.storage import report as store
from datagen.storage.runs import get_run

SCHEMA = 1
R = 6  # decimals kept in floats


def _f(x: float | None) -> float | None:
    return None if x is None else round(float(x), R)


def _share(n: int, d: int) -> float | None:
    return _f(n / d) if d else None


def histogram(values, lo: float, hi: float, bins: int) -> dict:
    """Equal-width bins over [lo, hi]; values above hi go to the last bin, below lo to the first."""
    counts = [0] * bins
    width = (hi - lo) / bins if hi > lo else 1.0
    for v in values:
        k = int((v - lo) / width) if hi > lo else 0
        counts[max(0, min(bins - 1, k))] += 1
    return {"lo": _f(lo), "hi": _f(hi), "counts": counts}


def _summary(values: list[float]) -> dict:
    if not values:
        return {"n": 0, "mean": None, "median": None, "p90": None}
    s = sorted(values)
    return {"n": len(s), "mean": _f(sum(s) / len(s)), "median": _f(statistics.median(s)), "p90": _f(s[min(len(s) - 1, int(0.9 * len(s)))])}


# --- the funnel ----------------------------------------------------------------------------------


def funnel(engine, run_id: int) -> dict:
    c = store.funnel_counts(engine, run_id)
    generated = sum(n for *_, n in c.rows)
    screened = sum(n for _, indexed, _, n in c.rows if indexed)
    judged = sum(n for st, indexed, _, n in c.rows if indexed and st != Status.pending.value)
    kept = sum(n for st, _, _, n in c.rows if st in KEPT)
    reasons: dict[str, int] = {}
    for st, indexed, reason, n in c.rows:
        if st == Status.rejected.value:
            key = reason or "unknown"
        elif st == Status.discarded.value:
            key = "discarded_by_reviewer"
        else:
            continue
        reasons[key] = reasons.get(key, 0) + n
    return {
        "generated": generated,
        "screened": screened,
        "judged": judged,
        "kept": kept,
        "pending": sum(n for st, *_, n in c.rows if st == Status.pending.value),
        "approved": sum(n for st, *_, n in c.rows if st == Status.approved.value),
        "rejections": dict(sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))),
        "acceptance": _share(kept, judged),
        "requests": c.requests,
        "request_errors": c.request_errors,
        "requests_by_stage": dict(c.by_stage),
        "tokens_in": c.tokens_in,
        "tokens_out": c.tokens_out,
        "cost": _f(c.cost),
        "requests_per_kept": _f(c.requests / kept) if kept else None,
        "tokens_per_kept": _f((c.tokens_in + c.tokens_out) / kept) if kept else None,
        "cost_per_kept": _f(c.cost / kept) if kept else None,
    }


# --- text statistics -----------------------------------------------------------------------------


def distinct(token_lists) -> dict:
    """distinct-1 and distinct-2: distinct n-grams over all n-grams (n-grams within each text)."""
    uni: set = set()
    bi: set = set()
    n1 = n2 = 0
    for toks in token_lists:
        n1 += len(toks)
        uni.update(toks)
        if len(toks) > 1:
            n2 += len(toks) - 1
            bi.update(zip(toks, toks[1:]))
    return {"distinct_1": _share(len(uni), n1), "distinct_2": _share(len(bi), n2), "tokens": n1}


def _encode(token_lists, vocab: dict) -> list[str]:
    return ["".join(chr(vocab.setdefault(t, len(vocab) + 1)) for t in toks) for toks in token_lists]


def nearest_seed(inst_tokens: list[list[str]], seed_tokens: list[list[str]]) -> list[float]:
    """Exact ROUGE-L F of each instruction to its nearest seed (rouge-score's formula), by one
    bit-parallel LCS matrix against the seed pool."""
    seeds = [t for t in seed_tokens if t]
    if not seeds or not inst_tokens:
        return [0.0] * len(inst_tokens)
    vocab: dict[str, int] = {}
    s_enc = _encode(seeds, vocab)
    s_len = np.array([len(t) for t in seeds], dtype=np.int32)
    out: list[float] = []
    chunk = 4096
    for i in range(0, len(inst_tokens), chunk):
        part = inst_tokens[i : i + chunk]
        q = _encode(part, vocab)
        lcs = cdist(q, s_enc, scorer=LCSseq.similarity, dtype=np.int32, workers=-1)
        for row, toks in zip(lcs, part):
            out.append(float(_fmeasure_vec(row, s_len, len(toks)).max()) if toks else 0.0)
    return out


def _kept_pass(texts: list[str], lang: str, floor: float, backwards: bool) -> list[tuple[float, int, int]]:
    """One streaming pass: each text checked against the texts before it (after it, backwards);
    (score, i, j) for every text whose best partner so far is above the floor."""
    n = len(texts)
    idx = SimilarityIndex(lang, threshold=floor)
    pos: list[int] = []
    found = []
    for i in range(n - 1, -1, -1) if backwards else range(n):
        v = idx.check(texts[i])
        if v.reason == "similar":
            found.append((v.score, i, pos[v.nearest_id]))
        idx.add(texts[i])
        pos.append(i)
    return found


def nearest_kept(texts: list[str], lang: str, floor: float) -> tuple[list[float | None], list[tuple[float, int, int]]]:
    """ROUGE-L of each text to its nearest other text, exact where above `floor` (None below it),
    and the nearest-neighbour pairs above the floor as (score, i, j), i < j.

    Two streaming passes over the similarity index built at threshold `floor`: forwards each text
    is checked against the texts before it, backwards against the texts after it. A check that
    finds a partner above the threshold returns the exact best score (the prefix filter proves the
    rest lower), so the maximum of the two passes is the exact nearest score. From
    REPORT_PARALLEL_MIN texts on, the two passes run in two processes (same result).
    """
    n = len(texts)
    if n >= config.REPORT_PARALLEL_MIN and (os.cpu_count() or 1) > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        # spawn, not fork: the API server calls this from a thread of a threaded process.
        with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as ex:
            runs = [ex.submit(_kept_pass, texts, lang, floor, back) for back in (False, True)]
            found = [r.result() for r in runs]
    else:
        found = [_kept_pass(texts, lang, floor, back) for back in (False, True)]
    best: list[float | None] = [None] * n
    pairs: set[tuple[float, int, int]] = set()
    for s, i, j in found[0] + found[1]:
        for k in (i, j):
            if best[k] is None or s > best[k]:
                best[k] = s
        pairs.add((s, min(i, j), max(i, j)))
    return best, sorted(pairs, key=lambda p: (-p[0], p[1], p[2]))


def embedding_figures(engine, run_id: int, kept: int) -> dict | None:
    model, dim, rows = store.embeddings(engine, run_id)
    if not rows or len(rows) < 2:
        return None
    v = np.stack([np.frombuffer(b, dtype="<f4", count=dim) for _, b in rows]).astype(np.float64)
    norms = np.linalg.norm(v, axis=1)
    v = v[norms > 0] / norms[norms > 0, None]
    n = len(v)
    if n < 2:
        return None
    s = v.sum(0)
    mean_cos = (float(s @ s) - n) / (n * (n - 1))  # all pairs i != j, without the n x n matrix
    v32 = v.astype(np.float32)
    nn = np.empty(n, dtype=np.float64)
    for i in range(0, n, 1024):
        sims = v32[i : i + 1024] @ v32.T
        np.fill_diagonal(sims[:, i : i + 1024], -np.inf)
        nn[i : i + 1024] = sims.max(1)
    near = int((nn > config.REPORT_EMBED_NEAR).sum())
    return {
        "model": model,
        "dim": dim,
        "samples": n,
        "coverage": _share(len(rows), kept),
        "mean_pairwise_cosine": _f(mean_cos),
        "nn_above": config.REPORT_EMBED_NEAR,
        "nn_above_share": _share(near, n),
        "nn_histogram": histogram(nn.tolist(), -1.0, 1.0, 40),
    }


def _seed_tokens(run, lang: str) -> tuple[str, list[list[str]]]:
    from datagen.seeds import default_seed_path, load_seeds

    cfg = json.loads(run.config or "{}")
    path = cfg.get("seeds")
    source = "built-in"
    if path and Path(path).is_file():
        source = Path(path).name
    else:
        path = default_seed_path(lang)
    return source, [tokenize(t.instruction, lang) for t in load_seeds(path)]


# --- one run -------------------------------------------------------------------------------------


def run_figures(engine, name: str, timings: dict | None = None) -> dict:
    """Every figure of one run. An unknown run is NotFound; a run with no kept sample a Conflict.
    `timings`, when given, receives the seconds each phase took (the benchmark reads them)."""
    clock = [time.perf_counter()]

    def lap(phase: str) -> None:
        now = time.perf_counter()
        if timings is not None:
            timings[phase] = timings.get(phase, 0.0) + now - clock[0]
        clock[0] = now

    run = _runnable(engine, name)
    fun = funnel(engine, run.id)
    lang = run.lang
    samples = list(store.kept_samples(engine, run.id))
    texts = [s.instruction for s in samples]
    ids = [s.id for s in samples]
    inst_tok = [tokenize(t, lang) for t in texts]
    inputs = [inp for s in samples for inp, _ in s.instances]
    outputs = [out for s in samples for _, out in s.instances]
    out_tok = [tokenize(t, lang) for t in outputs]
    in_len = [len(tokenize(t, lang)) for t in inputs if t]
    lap("read and tokenize")

    # Verb-object structure, parsed over at most REPORT_VERB_SAMPLE evenly spaced instructions.
    step = max(1, -(-len(texts) // config.REPORT_VERB_SAMPLE))
    parsed = texts[::step]
    vtable = verbs.verb_table(verbs.verb_objects(parsed, lang), config.REPORT_TOP_VERBS, config.REPORT_TOP_OBJECTS)
    lap("verb-object parse")

    seed_source, seed_tok = _seed_tokens(run, lang)
    to_seed = nearest_seed(inst_tok, seed_tok)
    lap("ROUGE-L to seeds")
    floor = config.REPORT_ROUGE_FLOOR
    to_kept, pairs = nearest_kept(texts, lang, floor)
    lap("ROUGE-L between kept samples")
    above = [s for s in to_kept if s is not None]
    near = config.REPORT_NEAR_DUPLICATE
    kept_hist = histogram(above, floor, 1.0, 10)
    kept_hist["below"] = len(to_kept) - len(above)

    with_input = sum(1 for s in samples if any(inp for inp, _ in s.instances))
    cls = sum(1 for s in samples if s.is_classification is True)
    gen = sum(1 for s in samples if s.is_classification is False)
    score_values = store.scores(engine, run.id)
    emb = embedding_figures(engine, run.id, len(samples))
    div_inst, div_out = distinct(inst_tok), distinct(out_tok)
    lap("embeddings, scores, the rest")
    return {
        "schema": SCHEMA,
        "run": {"name": run.name, "lang": lang, "api": run.api, "model": run.model, "target": run.target, "state": run.state},
        "funnel": fun,
        "diversity": {
            "instructions": div_inst,
            "outputs": div_out,
            "verbs": {"parser": verbs.parser_name(lang), "parsed": len(parsed), "of": len(texts), **vtable},
            "embedding": emb,
        },
        "similarity": {
            "to_seed": {"seeds": seed_source, "seed_count": len(seed_tok), **_summary(to_seed), "histogram": histogram(to_seed, 0.0, 1.0, 20)},
            "to_kept": {
                "floor": floor,
                "above_floor_share": _share(len(above), len(texts)),
                "near_duplicate": near,
                "near_duplicate_share": _share(sum(1 for s in above if s > near), len(texts)),
                "histogram": kept_hist,
            },
            "closest_pairs": [
                {"score": _f(s), "a_id": ids[i], "a": texts[i], "b_id": ids[j], "b": texts[j]} for s, i, j in pairs[: config.REPORT_CLOSEST_PAIRS]
            ],
        },
        "lengths": {
            "unit": "tokens",
            "instruction": {**_summary([len(t) for t in inst_tok]), "histogram": histogram([len(t) for t in inst_tok], 0, 60, 30)},
            "input": {**_summary(in_len), "histogram": histogram(in_len, 0, 150, 30)},
            "output": {**_summary([len(t) for t in out_tok]), "histogram": histogram([len(t) for t in out_tok], 0, 300, 30)},
            "instances": len(outputs),
            "with_input_share": _share(with_input, len(samples)),
            "classification": cls,
            "generation": gen,
            "unclassified": len(samples) - cls - gen,
            "classification_share": _share(cls, cls + gen),
        },
        "scores": {
            "histograms": {k: {**_summary(v), "histogram": histogram(v, v[0], v[-1], 20)} for k, v in score_values.items()},
            "selections": [{"name": n, "size": size} for n, size in store.selections(engine, run.id)],
        },
    }


# --- two runs ------------------------------------------------------------------------------------

# The scalar figures compared between runs: (path, label).
COMPARED = [
    ("funnel.generated", "candidates generated"),
    ("funnel.kept", "samples kept"),
    ("funnel.acceptance", "acceptance (kept / judged)"),
    ("funnel.requests_per_kept", "requests per kept sample"),
    ("funnel.tokens_per_kept", "tokens per kept sample"),
    ("funnel.cost_per_kept", "cost per kept sample (USD)"),
    ("diversity.instructions.distinct_1", "instructions distinct-1"),
    ("diversity.instructions.distinct_2", "instructions distinct-2"),
    ("diversity.outputs.distinct_1", "outputs distinct-1"),
    ("diversity.outputs.distinct_2", "outputs distinct-2"),
    ("diversity.verbs.distinct_verbs", "distinct root verbs"),
    ("diversity.verbs.distinct_pairs", "distinct verb-object pairs"),
    ("diversity.embedding.mean_pairwise_cosine", "embedding mean pairwise cosine"),
    ("diversity.embedding.nn_above_share", "embedding nearest neighbour above 0.9"),
    ("similarity.to_seed.mean", "mean ROUGE-L to nearest seed"),
    ("similarity.to_kept.above_floor_share", "share with a kept neighbour above the floor"),
    ("similarity.to_kept.near_duplicate_share", "near-duplicate share (kept neighbour above 0.7)"),
    ("lengths.instruction.mean", "instruction length (mean tokens)"),
    ("lengths.input.mean", "input length (mean tokens)"),
    ("lengths.output.mean", "output length (mean tokens)"),
    ("lengths.with_input_share", "share with an input"),
    ("lengths.classification_share", "classification share"),
]


def _get(d: dict, path: str):
    for k in path.split("."):
        if not isinstance(d, dict):
            return None
        d = d.get(k)
    return d if isinstance(d, (int, float)) and not isinstance(d, bool) else None


def compare(a: dict, b: dict) -> dict:
    """Each compared figure for both runs with the difference (run minus vs), and the ones that
    moved most (relative to the larger of the two) named first."""
    rows = []
    for path, label in COMPARED:
        x, y = _get(a, path), _get(b, path)
        delta = None if x is None or y is None else x - y if isinstance(x, int) and isinstance(y, int) else _f(x - y)
        scale = max(abs(x or 0), abs(y or 0))
        rel = _f(abs(delta) / scale) if delta is not None and scale else (0.0 if delta is not None else None)
        rows.append({"figure": path, "label": label, "run": x, "vs": y, "delta": delta, "relative": rel})
    moved = sorted((r for r in rows if r["relative"]), key=lambda r: (-r["relative"], r["figure"]))
    return {"figures": rows, "moved_most": [r["figure"] for r in moved[: config.REPORT_MOVED]]}


def _runnable(engine, name: str):
    """The run, if it can be reported; one line otherwise (checked before any work)."""
    run = get_run(engine, name)
    if run is None:
        raise NotFound(f"no run named {name!r}")
    if not store.kept_count(engine, run.id):
        raise Conflict(f"run {name!r} has no kept samples: nothing to report")
    return run


def build(engine, run: str, vs: str | None = None) -> dict:
    """The report's data: one run's figures, or two runs' with the comparison."""
    lang = _runnable(engine, run).lang
    if vs is None:
        return {"schema": SCHEMA, "run": run_figures(engine, run)}
    if vs == run:
        raise InputError(f"--vs {vs!r} is the run itself: name another run")
    other = _runnable(engine, vs).lang
    if lang != other:
        raise InputError(f"run {run!r} is {lang} and run {vs!r} is {other}: compare runs of one language")
    a, b = run_figures(engine, run), run_figures(engine, vs)
    return {"schema": SCHEMA, "run": a, "vs": b, "comparison": compare(a, b)}


def to_json(report: dict) -> str:
    return json.dumps(report, ensure_ascii=False, sort_keys=True, allow_nan=False) + "\n"
