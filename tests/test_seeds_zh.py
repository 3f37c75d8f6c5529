"""Checks for the project's own Chinese seed pool (seeds/zh/zh_seed_tasks.jsonl).

Similarity is ROUGE-L F-measure over jieba tokens, the same measure the
self-instruct filter uses for Chinese, so a seed that passes here will not be
rejected as a near-duplicate of another seed (or of the BELLE reference pool)
once generation starts.
"""

import json
import re
import unicodedata
from pathlib import Path

import jieba
import pytest
from rouge_score import rouge_scorer

REPO = Path(__file__).resolve().parents[1]
SEEDS = REPO / "seeds" / "zh" / "zh_seed_tasks.jsonl"
# ../shared/reference next to the repo root; a git worktree under /work/wt/<name>
# sits one level deeper, so look one directory further up as well.
_REF_CANDIDATES = [
    REPO.parent / "shared" / "reference" / "zh_seed_tasks.json",
    REPO.parent.parent / "shared" / "reference" / "zh_seed_tasks.json",
]
REFERENCE = next((p for p in _REF_CANDIDATES if p.exists()), _REF_CANDIDATES[0])

KEYS = ["id", "name", "instruction", "instances", "is_classification"]
CJK = re.compile(r"[\u4e00-\u9fff]")
NAME = re.compile(r"^[a-z][a-z0-9]*(?:_[a-z0-9]+)*$")

jieba.setLogLevel(60)


def tokens(text: str) -> list[str]:
    """jieba tokens, lower-cased, dropping whitespace and pure punctuation/symbol tokens."""
    return [
        t.lower()
        for t in jieba.lcut(text)
        if t.strip() and not all(unicodedata.category(c)[0] in "PZS" for c in t)
    ]


def rouge_l(a: list[str], b: list[str]) -> float:
    return rouge_scorer._score_lcs(a, b).fmeasure


def load_jsonl(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


@pytest.fixture(scope="module")
def seeds() -> list[dict]:
    lines = SEEDS.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 175
    return [json.loads(line) for line in lines]


@pytest.fixture(scope="module")
def seed_tokens(seeds) -> list[list[str]]:
    return [tokens(s["instruction"]) for s in seeds]


def test_schema(seeds):
    for s in seeds:
        assert list(s) == KEYS, s.get("id")
        assert isinstance(s["instruction"], str) and s["instruction"].strip()
        assert isinstance(s["is_classification"], bool)
        assert NAME.match(s["name"]), s["name"]
        assert len(s["instances"]) == 1, s["id"]
        inst = s["instances"][0]
        assert set(inst) == {"input", "output"}, s["id"]
        assert isinstance(inst["input"], str) and isinstance(inst["output"], str)
        assert inst["output"].strip(), s["id"]


def test_ids_and_names_unique(seeds):
    assert [s["id"] for s in seeds] == [f"seed_task_{i}" for i in range(175)]
    names = [s["name"] for s in seeds]
    assert len(set(names)) == len(names)


def test_mix(seeds):
    n_cls = sum(s["is_classification"] for s in seeds)
    n_empty = sum(s["instances"][0]["input"] == "" for s in seeds)
    assert 20 <= n_cls <= 32, n_cls
    assert 44 <= n_empty <= 60, n_empty


def test_instructions_are_chinese(seeds):
    for s in seeds:
        assert CJK.search(s["instruction"]), s["id"]


def test_classification_outputs_present(seeds):
    for s in seeds:
        if s["is_classification"]:
            assert s["instances"][0]["output"].strip(), s["id"]


def test_no_near_duplicates_within_pool(seeds, seed_tokens):
    worst = (0.0, None, None)
    for i in range(len(seed_tokens)):
        for j in range(i + 1, len(seed_tokens)):
            score = rouge_l(seed_tokens[i], seed_tokens[j])
            if score > worst[0]:
                worst = (score, seeds[i]["id"], seeds[j]["id"])
    assert worst[0] <= 0.7, worst


@pytest.mark.skipif(not REFERENCE.exists(), reason="reference seed pool not present")
def test_original_against_reference(seeds, seed_tokens):
    ref_tokens = [tokens(r["instruction"]) for r in load_jsonl(REFERENCE)]
    assert ref_tokens
    for s, ours in zip(seeds, seed_tokens):
        best = max(rouge_l(ours, ref) for ref in ref_tokens)
        assert best < 0.7, (s["id"], s["instruction"], best)
