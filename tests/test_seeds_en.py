"""Checks on the project's own English seed pool (seeds/en/seed_tasks.jsonl).

Structure, the classification / empty-input mix, diversity within the pool
(ROUGE-L between any two instructions <= 0.7) and, when the Stanford Alpaca
reference pool is available next to the repository, originality against it.
"""
import json
import re
from pathlib import Path

import pytest

rouge_tokenizers = pytest.importorskip("rouge_score.tokenizers")

REPO = Path(__file__).resolve().parents[1]
SEEDS = REPO / "seeds" / "en" / "seed_tasks.jsonl"
# The reference pool sits in ../shared/reference next to the main checkout;
# a git worktree lives one level deeper, so look up through the ancestors too.
REFERENCE = next(
    (p / "shared" / "reference" / "seed_tasks.jsonl" for p in REPO.parents
     if (p / "shared" / "reference" / "seed_tasks.jsonl").exists()),
    REPO.parent / "shared" / "reference" / "seed_tasks.jsonl",
)

KEYS = ["id", "name", "instruction", "instances", "is_classification"]
N_TASKS = 175

_tokenizer = rouge_tokenizers.DefaultTokenizer(use_stemmer=False)


def _tokens(text):
    return _tokenizer.tokenize(text)


def _lcs_len(a, b):
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def rouge_l_f(a, b):
    """ROUGE-L F-measure on pre-tokenized text, as rouge_scorer computes it."""
    if not a or not b:
        return 0.0
    lcs = _lcs_len(a, b)
    if lcs == 0:
        return 0.0
    p, r = lcs / len(b), lcs / len(a)
    return 2 * p * r / (p + r)


def test_rouge_helper_matches_rouge_scorer(tasks):
    """The fast pre-tokenized helper must agree with rouge_scorer itself."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    ins = [t["instruction"] for t in tasks[:40]]
    for a, b in zip(ins, ins[1:] + ins[:1]):
        expected = scorer.score(a, b)["rougeL"].fmeasure
        assert rouge_l_f(_tokens(a), _tokens(b)) == pytest.approx(expected)


@pytest.fixture(scope="module")
def tasks():
    lines = SEEDS.read_text(encoding="utf-8").splitlines()
    assert len(lines) == N_TASKS
    return [json.loads(line) for line in lines]


def test_structure(tasks):
    for i, t in enumerate(tasks):
        assert list(t) == KEYS, t.get("id")
        assert t["id"] == f"seed_task_{i}"
        assert re.fullmatch(r"[a-z0-9]+(_[a-z0-9]+)*", t["name"]), t["name"]
        assert isinstance(t["instruction"], str) and t["instruction"].strip()
        assert isinstance(t["is_classification"], bool)
        assert isinstance(t["instances"], list) and len(t["instances"]) == 1
        inst = t["instances"][0]
        assert set(inst) == {"input", "output"}
        assert isinstance(inst["input"], str)
        assert isinstance(inst["output"], str) and inst["output"].strip(), t["id"]


def test_unique_ids_and_names(tasks):
    assert len({t["id"] for t in tasks}) == N_TASKS
    assert len({t["name"] for t in tasks}) == N_TASKS


def test_mix(tasks):
    n_cls = sum(t["is_classification"] for t in tasks)
    n_empty = sum(t["instances"][0]["input"] == "" for t in tasks)
    assert 20 <= n_cls <= 32
    assert 44 <= n_empty <= 60
    for t in tasks:
        if t["is_classification"]:
            assert t["instances"][0]["output"].strip(), t["id"]


def test_instructions_diverse_within_pool(tasks):
    toks = [_tokens(t["instruction"]) for t in tasks]
    worst = (0.0, None, None)
    for i in range(len(toks)):
        for j in range(i + 1, len(toks)):
            score = rouge_l_f(toks[i], toks[j])
            if score > worst[0]:
                worst = (score, tasks[i]["id"], tasks[j]["id"])
    assert worst[0] <= 0.7, worst


@pytest.mark.skipif(not REFERENCE.exists(), reason="reference seed pool not present")
def test_original_against_reference(tasks):
    ref = [json.loads(line)["instruction"] for line in
           REFERENCE.read_text(encoding="utf-8").splitlines() if line.strip()]
    ref_toks = [_tokens(r) for r in ref]
    for t in tasks:
        ours = _tokens(t["instruction"])
        best = max(rouge_l_f(ours, r) for r in ref_toks)
        assert best < 0.7, (t["id"], best)
