"""The fast index must decide exactly as Alpaca's brute force with rouge-score does."""

from __future__ import annotations

import json
import random
import re
import string
import subprocess
import sys
from pathlib import Path

import pytest
from rouge_score import rouge_scorer, scoring

import datagen.similarity as sim
from datagen.dedup import dedup_file
from datagen.errors import InputError
from datagen.similarity import SimilarityIndex, Verdict, detect_lang, fmeasure, rouge_l, tokenize

ROOT = Path(__file__).resolve().parents[1]
SCORER = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)


def _corpus_lines() -> list[str]:
    # shared/ sits beside the main checkout; from a git worktree it is one level further up.
    for base in (ROOT.parent, ROOT.parent.parent):
        path = base / "shared" / "corpus" / "smollm2_instructions_en.txt"
        if path.exists():
            return [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    rng = random.Random(0)
    words = ["write", "a", "story", "about", "the", "cat", "explain", "how", "to", "make", "list", "five",
             "tips", "for", "better", "sleep", "describe", "your", "favorite", "city", "and", "why", "of"]
    words += [f"w{i}" for i in range(300)]
    return [" ".join(rng.choice(words) for _ in range(rng.randint(3, 25))) for _ in range(400)]


CORPUS = _corpus_lines()

ZH_SENTENCES = [
    "请写一篇关于春天的短文，描述你看到的景色。",
    "解释一下什么是人工智能，并举两个生活中的例子。",
    "列出五种保持身体健康的方法。",
    "用Python写一个函数，判断一个字符串是不是回文。",
    "把下面这句话翻译成英文：今天天气很好。",
    "给一家新开的咖啡店想三个有创意的名字。",
    "比较高铁和飞机在长途旅行中的优缺点。",
    "为小学生设计一个关于垃圾分类的课堂活动。",
    "总结这篇新闻的主要内容，不超过一百字。",
    "写一首关于月亮和故乡的五言绝句。",
    "如何向朋友介绍中国的茶文化？请给出三条建议。",
    "根据以下信息，写一封求职邮件。",
    "分析社交媒体对青少年心理健康的影响。",
    "推荐几本适合初学者阅读的历史书，并说明理由。",
    "解释机器学习中过拟合的原因以及常见的解决办法。",
    "写一段ChatGPT和用户之间关于旅行计划的对话。",
    "计算3.5乘以4的结果，并写出计算过程。",
    "描述一下你理想中的周末是什么样子的。",
    "给出一个使用SQL查询销售额前十名客户的例子。",
    "用简单的语言解释区块链是如何工作的。",
]
ZH_FILLERS = ["请", "一下", "非常", "详细地", "简单地", "帮我", "尽量", "具体", "也", "你"]


def perturb(text: str, rng: random.Random, zh: bool = False) -> str:
    """Paraphrase-like edits at word level (jieba pieces for Chinese): drop, swap, replace, insert."""
    if zh:
        import jieba

        words = jieba.lcut(text)
        pool = ZH_FILLERS
    else:
        words = text.split()
        pool = ["please", "briefly", "the", "a", "new", "simple", "three", "about", "very", "story", "list"]
    for _ in range(rng.choice([0, 1, 1, 2, 2, 3, 5, 8])):
        r = rng.random()
        if r < 0.3 and len(words) > 1:
            del words[rng.randrange(len(words))]
        elif r < 0.5 and len(words) > 1:
            i = rng.randrange(len(words) - 1)
            words[i], words[i + 1] = words[i + 1], words[i]
        elif r < 0.75 and words:
            words[rng.randrange(len(words))] = rng.choice(pool)
        else:
            words.insert(rng.randrange(len(words) + 1), rng.choice(pool))
    return ("" if zh else " ").join(words)


# -- brute force (Alpaca's loop) -----------------------------------------------------------


def rouge_tokens(text: str, lang: str) -> list[str]:
    if lang == "en":
        return SCORER._tokenizer.tokenize(text)
    return tokenize(text, lang)


def brute_force(texts, lang="en", threshold=0.7, against=()):
    """Verdicts (keep, best score, nearest id) computed with rouge-score's own LCS against everything."""
    kept: list[list[str]] = [rouge_tokens(t, lang) for t in against]
    out = []
    for text in texts:
        new = rouge_tokens(text, lang)
        if not new:
            out.append((False, 0.0, None))
            continue
        scores = [rouge_scorer._score_lcs(new, old).fmeasure for old in kept]
        best = max(scores, default=0.0)
        if best > threshold:
            out.append((False, best, scores.index(best)))
        else:
            out.append((True, best, None))
            kept.append(new)
    return out


def assert_stream_matches(texts, lang="en", threshold=0.7, against=()):
    index = SimilarityIndex(lang=lang, threshold=threshold)
    for t in against:
        index.add(t)
    expected = brute_force(texts, lang, threshold, against)
    for i, (text, (keep, best, nearest)) in enumerate(zip(texts, expected)):
        v = index.offer(text)
        assert v.keep == keep, (i, text, v, best)
        if not keep and nearest is not None:
            # Rejected: the exact best over everything indexed, earliest text on ties.
            assert (v.score, v.nearest_id, v.reason) == (best, nearest, "similar"), (i, text)
            assert v.nearest == index.text(nearest)
        elif keep:
            assert v.score <= best + 0.0 and v.reason is None  # a lower bound of the true best
    return index, expected


# -- tokens and the formula -----------------------------------------------------------------


def test_en_tokens_equal_rouge_score():
    rng = random.Random(1)
    weird = "İıKſﬁÀé…—–’“”\t\n\u00a0\u2003!?.,;:()[]{}<>@#$%^&*_-+=/\\|~`'\"0123456789"
    alphabet = string.ascii_letters + string.digits + weird + "你好世界"
    samples = CORPUS[:500] + ["", "   ", "!!!", "e-mail, state-of-the-art & C++ v3.5", "İstanbul KELVIN ﬁne"]
    samples += ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40))) for _ in range(2000)]
    for s in samples:
        assert tokenize(s, "en") == SCORER._tokenizer.tokenize(s), s


def test_fmeasure_is_rouge_float_formula_and_symmetric():
    for m in range(1, 60):
        for n in range(1, 60):
            for lcs in range(0, min(m, n) + 1):
                ref = scoring.fmeasure(lcs / n, lcs / m)
                assert fmeasure(lcs, m, n) == ref
                assert fmeasure(lcs, n, m) == ref  # target/prediction order cannot matter


def test_fmeasure_monotone_in_lcs():
    # The index solves "smallest lcs with F > t" by scanning upward; that needs monotonicity.
    for m in range(1, 200):
        for n in range(1, 200, 7):
            vals = [fmeasure(lcs, m, n) for lcs in range(0, min(m, n) + 1)]
            assert vals == sorted(vals)


@pytest.mark.parametrize("threshold", [0.0, 0.3, 0.5, 0.7, 0.75, 0.9, 0.99, 1.0])
def test_length_bounds_are_exhaustively_right(threshold):
    # The filter trusts _length_range / _min_need; check them against a plain scan.
    index = SimilarityIndex(threshold=threshold)
    for n in range(1, 70):
        top = 3 * n + 5 if threshold == 0.0 else int(n * (2 - threshold) / threshold) + 5
        feasible = [m for m in range(1, top) if any(fmeasure(L, m, n) > threshold for L in range(1, min(m, n) + 1))]
        lo, hi = index._length_range(n)
        if not feasible:
            assert lo > hi
            continue
        assert lo == feasible[0]
        assert hi >= top if threshold == 0.0 else hi == feasible[-1]
        assert feasible == list(range(lo, feasible[-1] + 1))
        need = min(min(L for L in range(1, min(m, n) + 1) if fmeasure(L, m, n) > threshold) for m in feasible)
        assert index._min_need(n) == need


def test_rouge_l_equals_scorer():
    rng = random.Random(2)
    for _ in range(400):
        a = rng.choice(CORPUS)
        b = perturb(a, rng) if rng.random() < 0.7 else rng.choice(CORPUS)
        assert rouge_l(a, b, "en") == SCORER.score(a, b)["rougeL"].fmeasure
        assert rouge_l(a, b, "en") == SCORER.score(b, a)["rougeL"].fmeasure


def test_zh_tokenization_contract():
    toks = tokenize("用Python写一个Hello World程序，计算3.5的平方！", "zh")
    assert "python" in toks and "hello" in toks and "world" in toks  # English words keep identity
    assert all(t.strip() and not re.fullmatch(r"\W+", t) for t in toks)  # no spaces/punctuation
    assert "3" in toks and "5" in toks  # numbers split like the en tokenizer does
    assert tokenize("ＡＢＣ　１２３", "zh") == ["abc", "123"]  # NFKC: full-width forms fold
    assert tokenize("，。！？……", "zh") == []
    assert tokenize("Привет мир", "zh") == ["привет", "мир"]  # letters the en rule would drop
    assert rouge_scorer.RougeScorer(["rougeL"])._tokenizer.tokenize("写一篇文章") == []  # why zh exists


def test_detect_lang_and_auto():
    assert detect_lang("Write a poem.") == "en"
    assert detect_lang("写一首诗") == "zh"
    assert detect_lang("Translate 你好 into English") == "zh"
    assert tokenize("Write a poem.", "auto") == tokenize("Write a poem.", "en")
    assert tokenize("写一首诗", "auto") == tokenize("写一首诗", "zh")
    with pytest.raises(ValueError):
        tokenize("x", "fr")


# -- decisions ----------------------------------------------------------------------------


def _shared_seq(lcs: int, m: int, n: int, tag: str) -> tuple[str, str]:
    shared = [f"s{i}" for i in range(lcs)]
    a = shared + [f"a{tag}{i}" for i in range(m - lcs)]
    b = shared + [f"b{tag}{i}" for i in range(n - lcs)]
    return " ".join(a), " ".join(b)


@pytest.mark.parametrize("threshold", [0.7, 0.5, 0.6])
def test_ties_at_threshold(threshold):
    # Every (lcs, m, n) with 2*lcs/(m+n) == threshold exactly in rationals, and neighbours.
    cases = []
    for total in range(2, 61):
        for lcs in range(1, total):
            if abs(2 * lcs / total - threshold) < 0.02:  # exact ties and their neighbours
                for m in range(lcs, total - lcs + 1):
                    cases.append((lcs, m, total - m))
    tie = (round(threshold * 10), 10, 10)  # 2*lcs/(m+n) == threshold exactly, for each value here
    assert tie in cases
    ties = 0
    for k, (lcs, m, n) in enumerate(cases):
        a, b = _shared_seq(lcs, m, n, str(k))
        expected = SCORER.score(a, b)["rougeL"].fmeasure <= threshold
        ties += SCORER.score(a, b)["rougeL"].fmeasure == threshold
        index = SimilarityIndex("en", threshold)
        index.add(a)
        v = index.offer(b)
        assert v.keep == expected, (lcs, m, n, v)
        assert len(index) == 1 + expected
    assert ties > 0  # some float F land exactly on the threshold: the <= side is really exercised


def test_seven_of_ten():
    a, b = _shared_seq(7, 10, 10, "x")
    f = SCORER.score(a, b)["rougeL"].fmeasure
    index = SimilarityIndex()
    index.add(a)
    assert index.check(b).keep == (f <= 0.7)
    assert rouge_l(a, b, "en") == f


def test_repeated_tokens_small_alphabet():
    rng = random.Random(3)
    for threshold in (0.7, 0.5, 0.3):
        texts = [" ".join(rng.choice("abcd") for _ in range(rng.randint(1, 14))) for _ in range(300)]
        assert_stream_matches(texts, "en", threshold)


def test_empty_and_punctuation_only_are_rejected_never_kept():
    index = SimilarityIndex()
    for t in ["", "   ", "!!! ...", "—", "你好"]:  # "你好" has no en tokens
        v = index.offer(t)
        assert v == Verdict(False, 0.0, None, None, "empty")
    assert len(index) == 0
    i = index.add("")  # seeds may be empty: stored, never matched
    assert index.text(i) == "" and len(index) == 1
    assert index.offer("Write a poem").keep
    assert SimilarityIndex("zh").offer("，。！").reason == "empty"


def test_check_does_not_mutate_and_offer_adds():
    index = SimilarityIndex()
    index.add("Write a short story about a cat.")
    before = len(index)
    assert index.check("Write a short story about a dog.").keep is False
    assert index.check("Compose an email to your landlord.").keep is True
    assert len(index) == before
    v = index.offer("Compose an email to your landlord.")
    assert v.keep and len(index) == before + 1 and index.text(before) == "Compose an email to your landlord."
    r = index.offer("Compose an email to the landlord.")
    assert (r.keep, r.reason, r.nearest_id, r.nearest) == (False, "similar", before, index.text(before))


def test_bad_arguments():
    with pytest.raises(ValueError):
        SimilarityIndex(lang="fr")
    with pytest.raises(ValueError):
        SimilarityIndex(threshold=1.5)
    with pytest.raises(ValueError):
        SimilarityIndex(threshold=-0.1)


@pytest.mark.parametrize("threshold", [0.7, 0.0, 0.45, 0.9, 1.0])
def test_near_duplicate_stream_matches_brute_force(threshold):
    rng = random.Random(int(threshold * 100))
    base = rng.sample(CORPUS, 50)
    texts = []
    for _ in range(500 if threshold in (0.7, 0.45) else 250):
        r = rng.random()
        if r < 0.04:
            texts.append(rng.choice(["", "?!", "Write.", "poem", "a a a", "The the THE"]))
        elif r < 0.1:  # long texts take the single-element postings
            texts.append(" ".join(perturb(rng.choice(base), rng) for _ in range(4)))
        else:
            texts.append(perturb(rng.choice(base), rng))
    against = [rng.choice(CORPUS) for _ in range(20)] + [""]
    assert_stream_matches(texts, "en", threshold, against)


def test_large_stream_matches_exhaustive_scoring():
    """3,000 candidates (several order rebuilds) against an exhaustive scan with the same
    exact pair score; the pair score itself is tested against rouge-score above."""
    import numpy as np
    from rapidfuzz.distance import LCSseq
    from rapidfuzz.process import cdist

    rng = random.Random(4)
    base = rng.sample(CORPUS, min(1500, len(CORPUS)))
    texts = [perturb(rng.choice(base), rng) for _ in range(3000)]
    texts += [" ".join(perturb(rng.choice(base), rng) for _ in range(4)) for _ in range(100)]  # long ones
    index = SimilarityIndex()
    vocab: dict[str, int] = {}
    kept: list[str] = []  # token ids as code points, like rapidfuzz wants
    kept_len: list[int] = []
    for text in texts:
        toks = tokenize(text, "en")
        q = "".join(chr(vocab.setdefault(t, len(vocab))) for t in toks)
        best = 0.0
        if toks and kept:
            lcs = cdist([q], kept, scorer=LCSseq.similarity, dtype=np.int32)[0].tolist()
            best = max(fmeasure(x, m, len(toks)) for x, m in zip(lcs, kept_len))
        v = index.offer(text)
        assert v.keep == (bool(toks) and best <= 0.7), text
        if not v.keep and toks:
            assert v.score == best
        if v.keep:
            kept.append(q)
            kept_len.append(len(toks))
    assert len(kept) > 1100  # the rebuild at 1,024 texts happened


def test_very_long_texts():
    # Hundreds of tokens: single-element postings and bucket counts far above 255.
    rng = random.Random(11)
    base = [" ".join(rng.sample(CORPUS, 40)) for _ in range(4)]
    texts = [perturb(rng.choice(base), rng) for _ in range(12)]
    texts += [" ".join(t.split()[: rng.randint(150, 400)]) for t in base]
    assert max(len(tokenize(t, "en")) for t in texts) > 400
    assert_stream_matches(texts)


def test_large_ids_fall_back_to_tuples(monkeypatch):
    monkeypatch.setattr(sim, "_CHR_LIMIT", 40)  # most token ids now exceed one code point
    rng = random.Random(5)
    base = rng.sample(CORPUS, 40)
    texts = [perturb(rng.choice(base), rng) for _ in range(300)]
    index, _ = assert_stream_matches(texts)
    assert any(isinstance(s, tuple) for s in index._seqs)


def test_chinese_stream_matches_brute_force():
    rng = random.Random(6)
    texts = []
    for _ in range(400):
        s = rng.choice(ZH_SENTENCES)
        texts.append(perturb(s, rng, zh=True) if rng.random() < 0.9 else "。！")
    assert_stream_matches(texts, "zh", 0.7, against=ZH_SENTENCES[:3])


def test_mixed_and_auto_stream_matches_brute_force():
    rng = random.Random(7)
    pool = ZH_SENTENCES + rng.sample(CORPUS, 20)
    texts = []
    for _ in range(300):
        s = rng.choice(pool)
        texts.append(perturb(s, rng, zh=detect_lang(s) == "zh"))
    index = SimilarityIndex("auto")
    kept: list[list[str]] = []
    for t in texts:
        toks = tokenize(t, detect_lang(t))
        best = max((rouge_scorer._score_lcs(toks, k).fmeasure for k in kept), default=0.0)
        keep = bool(toks) and best <= 0.7
        assert index.offer(t).keep == keep, t
        if keep:
            kept.append(toks)
    # English inside Chinese matches the same English words.
    assert rouge_l("用Python写一个排序函数", "用python写一个排序函数", "auto") == 1.0


# -- top_k_similar ----------------------------------------------------------------------------


def brute_top_k(index: SimilarityIndex, text: str, k: int, min_score: float, lang: str = "en"):
    q = rouge_tokens(text, lang)
    scored = []
    for i in range(len(index)):
        f = rouge_scorer._score_lcs(rouge_tokens(index.text(i), lang), q).fmeasure
        if f > 0 and f >= min_score:
            scored.append((-f, i))
    scored.sort()
    return [(i, index.text(i), -nf) for nf, i in scored[:k]]


def test_top_k_similar_equals_brute_force():
    rng = random.Random(8)
    base = rng.sample(CORPUS, 60)
    index = SimilarityIndex()
    for _ in range(400):
        index.add(perturb(rng.choice(base), rng))
    index.add("")
    for _ in range(40):
        q = perturb(rng.choice(base), rng) if rng.random() < 0.8 else rng.choice(CORPUS)
        for k, min_score in [(5, 0.0), (3, 0.5), (10, 0.7), (1, 0.95)]:
            assert index.top_k_similar(q, k, min_score) == brute_top_k(index, q, k, min_score)
    assert index.top_k_similar("", 5) == []
    assert index.top_k_similar("zzzz qqqq", 5) == []


def test_top_k_similar_zh():
    index = SimilarityIndex("zh")
    for s in ZH_SENTENCES:
        index.add(s)
    q = "请写一篇关于秋天的短文，描述你看到的景色。"
    assert index.top_k_similar(q, 4) == brute_top_k(index, q, 4, 0.0, "zh")


# -- dedup_file and the CLI -----------------------------------------------------------------


def run_cli(*args: str):
    # cwd = this checkout, so `import datagen` gets the code under test.
    code = "import sys; from datagen.cli import main; sys.argv[0] = 'datagen'; main()"
    return subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True, text=True, timeout=120)


LINE = re.compile(r"^candidates=(\d+) kept=(\d+) rejected=(\d+) seconds=\d+(\.\d+)?$")


def test_cli_txt(tmp_path):
    rng = random.Random(9)
    lines = [perturb(rng.choice(CORPUS[:30]), rng) for _ in range(120)] + ["", "!!!"]
    src = tmp_path / "cands.txt"
    src.write_text("\n".join(lines) + "\n", encoding="utf-8")
    r = run_cli("dedup", str(src), "--lang", "en", "--rejected", str(tmp_path / "rej.jsonl"))
    assert r.returncode == 0, r.stderr
    out_lines = r.stdout.strip().splitlines()
    assert len(out_lines) == 1 and LINE.match(out_lines[0]), r.stdout
    texts = [ln for ln in lines if ln.strip()]
    expected = brute_force(texts)
    kept = [json.loads(x)["instruction"] for x in (tmp_path / "cands.kept.jsonl").read_text().splitlines()]
    assert kept == [t for t, e in zip(texts, expected) if e[0]]
    n, k, rj = map(int, LINE.match(out_lines[0]).groups()[:3])
    assert (n, k, rj) == (len(texts), len(kept), len(texts) - len(kept))
    rejected = [json.loads(x) for x in (tmp_path / "rej.jsonl").read_text().splitlines()]
    assert len(rejected) == rj and {r["dedup"]["reason"] for r in rejected} == {"similar", "empty"}
    for rec in rejected:
        if rec["dedup"]["reason"] == "similar":
            assert rec["dedup"]["nearest"] in kept
            assert rec["dedup"]["score"] == rouge_l(rec["dedup"]["nearest"], rec["instruction"], "en") > 0.7
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_cli_jsonl_against_and_json_out(tmp_path):
    rng = random.Random(10)
    base = rng.sample(CORPUS, 25)
    recs = [{"instruction": perturb(rng.choice(base), rng), "input": "", "output": str(i)} for i in range(80)]
    src = tmp_path / "gen.jsonl"
    src.write_text("\n".join(json.dumps(r) for r in recs) + "\n\n", encoding="utf-8")
    seeds = [{"id": f"seed_task_{i}", "instruction": t, "instances": []} for i, t in enumerate(base[:5])]
    against = tmp_path / "seeds.jsonl"
    against.write_text("\n".join(json.dumps(s) for s in seeds), encoding="utf-8")
    out = tmp_path / "kept.json"
    r = run_cli("dedup", str(src), "--against", str(against), "--out", str(out), "--rejected", str(tmp_path / "r.jsonl"))
    assert r.returncode == 0, r.stderr
    expected = brute_force([x["instruction"] for x in recs], against=base[:5])
    assert json.loads(out.read_text()) == [x for x, e in zip(recs, expected) if e[0]]
    rej = [json.loads(x) for x in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert any(x["dedup"]["nearest_from"] == "against" for x in rej)
    assert all({"output", "input", "instruction", "dedup"} <= set(x) for x in rej)


def test_cli_json_array_zh(tmp_path):
    recs = [{"instruction": s, "output": ""} for s in ZH_SENTENCES]
    recs += [{"instruction": s.replace("。", "！"), "output": "dup"} for s in ZH_SENTENCES[:5]]
    src = tmp_path / "alpaca.json"
    src.write_text(json.dumps(recs, ensure_ascii=False, indent=1), encoding="utf-8")
    r = run_cli("dedup", str(src), "--lang", "auto")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"candidates={len(recs)} kept={len(ZH_SENTENCES)} rejected=5 ")
    kept = [json.loads(x) for x in (tmp_path / "alpaca.kept.jsonl").read_text(encoding="utf-8").splitlines()]
    assert kept == recs[: len(ZH_SENTENCES)]


@pytest.mark.parametrize(
    "name, content, args, needle",
    [
        ("missing.jsonl", None, [], "no such file"),
        ("bad.jsonl", '{"instruction": "ok"}\n{"instruction": oops}\n', [], "line 2"),
        ("bad.json", '[\n {"instruction": "a"},\n {"instruction": }\n]', [], "line 3"),
        ("nofield.jsonl", '{"instruction": "a"}\n{"prompt": "b"}\n', [], "missing field 'instruction'"),
        ("ok.jsonl", '{"instruction": "a"}\n', ["--lang", "fr"], "--lang"),
        ("ok.jsonl", '{"instruction": "a"}\n', ["--threshold", "2"], "--threshold"),
        ("data.csv", "a,b\n", [], "unsupported"),
    ],
)
def test_cli_bad_input_one_line_exit_1(tmp_path, name, content, args, needle):
    src = tmp_path / name
    if content is not None:
        src.write_text(content, encoding="utf-8")
    r = run_cli("dedup", str(src), *args)
    assert r.returncode == 1
    assert r.stdout == ""
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and needle in err[0], r.stderr
    assert "Traceback" not in r.stderr


def test_dedup_file_api(tmp_path):
    src = tmp_path / "x.txt"
    src.write_text("Write a poem about rain.\nWrite a poem about the rain.\n\nList three fruits.\n", encoding="utf-8")
    stats = dedup_file(src, lang="en", out=tmp_path / "k.txt")
    assert (stats.candidates, stats.kept, stats.rejected, stats.empty) == (3, 2, 1, 0)
    assert (tmp_path / "k.txt").read_text() == "Write a poem about rain.\nList three fruits.\n"
    with pytest.raises(InputError, match="missing field 'text'"):
        dedup_file(tmp_path / "y.jsonl" if (tmp_path / "y.jsonl").write_text('{"a": 1}\n') else None, field="text")
