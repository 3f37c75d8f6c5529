"""Benchmark the exact ROUGE-L dedup engine against Alpaca's brute force.

    python bench/dedup.py compare [--n 5000] [--lang en|zh|both]   # parity + speed ratio
    python bench/dedup.py scale [--sizes 10000,100000,1000000] [--zh 200000]
    python bench/dedup.py all                                        # both of the above

Data: English candidates are word-level perturbations (drops, adjacent swaps,
synonym-ish substitutions, insertions, and splices of two lines) of the 4,000 machine
written instructions in ../shared/corpus/smollm2_instructions_en.txt, so there are real
near-duplicates at every size. Chinese candidates come from our own templates and
phrase lists with the same kinds of perturbations on word pieces. Generation is
seeded, deterministic and not timed.

The brute force is Alpaca's loop (generate_instruction.py): tokenize every kept text
once with rouge-score's tokenizer, score each candidate with
``rouge_scorer._score_lcs(candidate_tokens, kept_tokens)`` against every kept text
(one core; Alpaca spreads the same work over a process pool), keep iff max <= 0.7.
For Chinese its tokens are ours (rouge-score has no Chinese tokenizer); the LCS and
F-measure are rouge-score's. Empty texts are rejected by both.
"""

from __future__ import annotations

import argparse
import gc
import multiprocessing as mp
import os
import random
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# shared/ sits beside the main checkout; a git worktree is one level deeper.
CORPUS = next((d / "shared" / "corpus" / "smollm2_instructions_en.txt" for d in (ROOT.parent, ROOT.parent.parent)
               if (d / "shared" / "corpus" / "smollm2_instructions_en.txt").exists()),
              ROOT.parent / "shared" / "corpus" / "smollm2_instructions_en.txt")

# -- English data ------------------------------------------------------------------

SYNONYMS_EN = {
    "write": ["compose", "draft", "create", "produce"],
    "create": ["make", "design", "build", "write"],
    "describe": ["explain", "outline", "summarize", "depict"],
    "explain": ["describe", "clarify", "discuss"],
    "list": ["name", "enumerate", "give"],
    "give": ["provide", "offer", "suggest"],
    "provide": ["give", "offer", "supply"],
    "generate": ["produce", "create", "come up with"],
    "short": ["brief", "concise", "small"],
    "story": ["tale", "narrative"],
    "good": ["great", "nice", "fine"],
    "best": ["top", "finest", "ideal"],
    "ways": ["methods", "strategies", "approaches"],
    "tips": ["advice", "suggestions", "hints"],
    "help": ["assist", "support"],
    "use": ["utilize", "employ", "apply"],
    "people": ["individuals", "folks", "users"],
    "important": ["crucial", "key", "essential"],
    "find": ["identify", "locate", "discover"],
    "make": ["create", "build", "produce"],
    "a": ["one", "the"],
    "the": ["a", "this"],
    "of": ["about", "for"],
    "about": ["on", "regarding", "concerning"],
    "how": ["why", "when"],
    "and": ["or", "as well as"],
}
FILLERS_EN = ["please", "briefly", "also", "really", "new", "simple", "detailed", "quick", "very",
              "some", "your", "own", "in detail", "for me", "now", "carefully", "interesting", "three"]


def load_corpus() -> list[str]:
    if CORPUS.exists():
        lines = [ln.strip() for ln in CORPUS.read_text(encoding="utf-8").splitlines()]
        return [ln for ln in lines if ln]
    # Fallback so the bench still runs without the shared corpus (less realistic).
    rng = random.Random(7)
    words = [f"w{i}" for i in range(3000)]
    return [" ".join(rng.choice(words) for _ in range(rng.randint(5, 25))) for _ in range(4000)]


def perturb(words: list[str], ops: int, rng: random.Random, synonyms: dict, fillers: list[str],
            vocab: list[str]) -> list[str]:
    w = list(words)
    for _ in range(ops):
        r = rng.random()
        if r < 0.25 and len(w) > 3:  # drop
            del w[rng.randrange(len(w))]
        elif r < 0.45 and len(w) > 2:  # swap neighbours
            i = rng.randrange(len(w) - 1)
            w[i], w[i + 1] = w[i + 1], w[i]
        elif r < 0.75 and w:  # synonym-ish substitution
            i = rng.randrange(len(w))
            key = w[i].lower().strip(".,;:!?")
            w[i] = rng.choice(synonyms[key]) if key in synonyms else rng.choice(vocab)
        else:  # insertion
            w.insert(rng.randrange(len(w) + 1), rng.choice(fillers if rng.random() < 0.6 else vocab))
    return w


def gen_en(n: int, seed: int = 1) -> list[str]:
    rng = random.Random(seed)
    base = [ln.split() for ln in load_corpus()]
    vocab = sorted({w.strip(".,;:!?").lower() for ws in base for w in ws} - {""})
    out = []
    for _ in range(n):
        r = rng.random()
        words = rng.choice(base)
        if r < 0.45:  # light paraphrase: usually a near-duplicate
            ops = rng.randint(0, 3)
        elif r < 0.75:  # heavy rewrite: sometimes new enough to keep
            ops = max(1, int(len(words) * rng.uniform(0.3, 0.8)))
        else:  # splice two instructions: mostly new content
            other = rng.choice(base)
            words = words[: rng.randint(1, max(1, len(words) - 1))] + other[rng.randint(0, max(0, len(other) - 2)):]
            ops = rng.randint(0, 3)
        out.append(" ".join(perturb(words, ops, rng, SYNONYMS_EN, FILLERS_EN, vocab)))
    return out


# -- Chinese data ------------------------------------------------------------------

ZH_TOPICS = ("人工智能 环境保护 春天 友谊 家乡 健康饮食 城市交通 网络安全 气候变化 传统节日 学习方法 时间管理 "
             "团队合作 新能源汽车 垃圾分类 在线教育 数字支付 太空探索 中国历史 古典诗词 咖啡文化 运动健身 "
             "睡眠质量 心理健康 职场沟通 理财规划 旅游景点 手机摄影 区块链 机器学习 数据隐私 社交媒体 "
             "阅读习惯 家庭教育 老龄化社会 乡村振兴 外卖行业 共享单车 电子商务 短视频 宠物饲养 绿色出行 "
             "水资源 粮食安全 疫苗接种 志愿服务 博物馆 京剧 茶文化 书法 武术 中医 高铁 长城 熊猫 "
             "Python编程 深度学习 云计算 5G网络 ChatGPT 新媒体运营 产品设计 用户体验 市场营销 品牌故事").split()
ZH_GENRES = "文章 短文 诗歌 故事 报告 演讲稿 总结 邮件 博客 说明 广告语 对话 日记 评论 新闻稿 教案".split()
ZH_VERBS = "写 创作 撰写 编写 生成 起草".split()
ZH_MODS = ["简短的", "有趣的", "详细的", "五百字的", "面向小学生的", "正式的", "幽默的", "感人的", "通俗易懂的", ""]
ZH_ASPECTS = "优点 缺点 影响 原因 发展历史 未来趋势 主要特点 常见误区 基本原理 注意事项 实际应用 挑战".split()
ZH_CLAUSES = ["并给出三个例子", "要求语言简洁", "用表格列出", "包括优缺点", "不超过200字", "分点说明",
              "适合在课堂上使用", "语气要友好", "最后给出总结", "并提出你的建议", "用英文回答", "举一个生活中的例子", ""]
ZH_NUMS = "三 五 十 两 几".split()
ZH_SYNONYMS = {
    "写": ["撰写", "创作", "编写"], "撰写": ["写", "编写"], "创作": ["写", "构思"], "生成": ["产生", "给出"],
    "解释": ["说明", "阐述", "讲解"], "说明": ["解释", "介绍"], "列出": ["列举", "给出", "写出"],
    "比较": ["对比", "区分"], "简短的": ["简要的", "精简的"], "详细的": ["具体的", "详尽的"],
    "有趣的": ["好玩的", "生动的"], "文章": ["短文", "随笔"], "故事": ["小故事", "寓言"], "优点": ["好处", "长处"],
    "缺点": ["不足", "短处"], "影响": ["作用", "后果"], "原因": ["理由", "成因"], "请": ["麻烦", "帮我"],
}
ZH_FILLERS = ["请", "一下", "非常", "详细地", "简单地", "帮我", "尽量", "认真", "具体", "马上", "可以", "也"]


def _zh_pieces(rng: random.Random) -> list[str]:
    t, t2 = rng.choice(ZH_TOPICS), rng.choice(ZH_TOPICS)
    k = rng.randrange(7)
    clause = rng.choice(ZH_CLAUSES)
    tail = ["，", clause, "。"] if clause else ["。"]
    if k == 0:
        return ["请", rng.choice(ZH_VERBS), "一篇", "关于", t, "的", rng.choice(ZH_MODS), rng.choice(ZH_GENRES)] + tail
    if k == 1:
        return ["解释", t, "的", rng.choice(ZH_ASPECTS)] + tail
    if k == 2:
        return ["列出", rng.choice(ZH_NUMS), "个", t, "的", rng.choice(ZH_ASPECTS)] + tail
    if k == 3:
        return ["比较", t, "和", t2, "的", rng.choice(ZH_ASPECTS)] + tail
    if k == 4:
        return ["以", t, "为", "主题", "，", rng.choice(ZH_VERBS), "一", "首", rng.choice(ZH_MODS), "诗歌"] + tail
    if k == 5:
        return ["如何", "向", "朋友", "介绍", t, "？", "请", "给出", rng.choice(ZH_NUMS), "条", "建议"] + tail
    return ["为", t, "相关的", "活动", rng.choice(ZH_VERBS), "一份", rng.choice(ZH_MODS), rng.choice(ZH_GENRES),
            "，", "重点", "介绍", "它的", rng.choice(ZH_ASPECTS), "和", t2, "的", "关系"] + tail


def gen_zh(n: int, seed: int = 2) -> list[str]:
    rng = random.Random(seed)
    vocab = sorted(set(ZH_TOPICS + ZH_GENRES + ZH_ASPECTS + ZH_FILLERS))
    out = []
    for _ in range(n):
        pieces = [p for p in _zh_pieces(rng) if p]
        r = rng.random()
        ops = rng.randint(0, 2) if r < 0.5 else max(1, int(len(pieces) * rng.uniform(0.2, 0.6)))
        out.append("".join(perturb(pieces, ops, rng, ZH_SYNONYMS, ZH_FILLERS, vocab)))
    return out


# -- engines -----------------------------------------------------------------------


def run_engine(texts: list[str], lang: str, threshold: float = 0.7) -> list[bool]:
    from datagen.similarity import SimilarityIndex

    index = SimilarityIndex(lang=lang, threshold=threshold)
    offer = index.offer
    return [offer(t).keep for t in texts]


def run_brute(texts: list[str], lang: str, threshold: float = 0.7, deadline: float | None = None) -> tuple[list[bool], int, int]:
    """Alpaca's filter: (decisions, pairs scored, LCS table cells filled). Stops early
    (returning the decisions so far) past ``deadline``."""
    from rouge_score import rouge_scorer

    from datagen.similarity import tokenize

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    tok = scorer._tokenizer.tokenize if lang == "en" else (lambda s: tokenize(s, lang))
    kept_tokens: list[list[str]] = []
    keep: list[bool] = []
    pairs = cells = kept_len = 0
    for text in texts:
        if deadline is not None and time.perf_counter() > deadline:
            break
        new = tok(text)
        if not new:
            keep.append(False)
            continue
        scores = [rouge_scorer._score_lcs(new, old).fmeasure for old in kept_tokens]
        pairs += len(kept_tokens)
        cells += len(new) * kept_len
        if max(scores, default=0.0) > threshold:
            keep.append(False)
            continue
        keep.append(True)
        kept_tokens.append(new)
        kept_len += len(new)
    return keep, pairs, cells


def _rouge_tok(text: str) -> list[str]:
    from rouge_score import tokenize as rt

    return rt.tokenize(text, None)


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _child(conn, kind: str, size: int) -> None:
    texts = gen_en(size) if kind == "en" else gen_zh(size)
    gc.collect()
    base = _peak_rss_mb()
    load = os.getloadavg()[0]
    t0, c0 = time.perf_counter(), time.process_time()
    keep = run_engine(texts, kind)
    secs, cpu = time.perf_counter() - t0, time.process_time() - c0
    conn.send((secs, cpu, base, _peak_rss_mb(), sum(keep), len(keep) - sum(keep), load, os.getloadavg()[0]))


def scale(sizes: list[int], zh: int) -> None:
    """Each size runs in a fresh process so peak RSS is that run's own."""
    print(f"machine: {os.cpu_count()} CPUs, {_mem_gib():.0f} GiB RAM; python {sys.version.split()[0]}")
    print("seconds = wall clock of the dedup loop (tokenize + check + add), cpu = its process CPU time;")
    print("peak_MB = peak RSS of the process (interpreter + candidate list + index), data_MB = RSS before the loop;")
    print("load = 1-minute load average before/after (other jobs share this machine)")
    print(f"{'set':>12} {'seconds':>9} {'cpu':>8} {'peak_MB':>8} {'data_MB':>8} {'kept':>8} {'rejected':>9} {'load':>10}")
    jobs = [("en", s) for s in sizes] + ([("zh", zh)] if zh else [])
    ctx = mp.get_context("fork")
    for kind, size in jobs:
        parent, child = ctx.Pipe()
        p = ctx.Process(target=_child, args=(child, kind, size))
        p.start()
        secs, cpu, base, peak, kept, rej, load0, load1 = parent.recv()
        p.join()
        print(f"{kind + ' ' + format(size, ','):>12} {secs:9.1f} {cpu:8.1f} {peak:8.0f} {base:8.0f} {kept:8d} {rej:9d} "
              f"{load0:4.1f}/{load1:4.1f}", flush=True)


def _mem_gib() -> float:
    try:
        with open("/proc/meminfo") as f:
            return int(f.readline().split()[1]) / 2**20
    except OSError:
        return float("nan")


def compare(n: int, langs: list[str], repeats: int = 3, brute_limit: float = 1500.0) -> None:
    """Engine vs brute force on the same candidates: identical decisions, speed ratio."""
    from datagen.similarity import tokenize

    for lang in langs:
        texts = gen_en(n, seed=11) if lang == "en" else gen_zh(n, seed=12)
        run_engine(texts[:200], lang)  # warm imports (jieba's dictionary) outside the timing
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fast = run_engine(texts, lang)
            times.append(time.perf_counter() - t0)
        t_fast = min(times)
        t0 = time.perf_counter()
        slow, pairs, cells = run_brute(texts, lang, deadline=t0 + brute_limit)
        t_slow = time.perf_counter() - t0
        done = len(slow)
        same = fast[:done] == slow
        line = (f"[{lang}] candidates={n} kept={sum(fast)} identical={same} (checked {done}) "
                f"engine={t_fast:.3f}s (best of {repeats}: {', '.join(f'{t:.3f}' for t in times)}) ")
        if done == n:
            line += f"brute={t_slow:.1f}s ({pairs:,} pairs, {pairs / t_slow:,.0f} pairs/s) ratio={t_slow / t_fast:.0f}x (both measured in full)"
        else:
            # The brute force scores every non-empty candidate against everything kept before
            # it and its cost is the LCS tables it fills; decisions are identical, so the
            # engine's decisions give the exact remaining work.
            total_pairs = total_cells = kept_n = kept_len = 0
            for text, k in zip(texts, fast):
                n_tok = len(tokenize(text, lang)) if lang != "en" else len(_rouge_tok(text))
                if n_tok:
                    total_pairs += kept_n
                    total_cells += n_tok * kept_len
                kept_n += k
                kept_len += n_tok if k else 0
            est = t_slow * total_cells / cells
            line += (f"brute STOPPED at the {brute_limit:.0f}s limit after {done} candidates: {t_slow:.1f}s, {pairs:,} pairs "
                     f"({pairs / t_slow:,.0f} pairs/s). EXTRAPOLATED to all {n} by LCS cells ({cells:,} of {total_cells:,}; "
                     f"{total_pairs:,} pairs): ~{est:.0f}s, ratio~{est / t_fast:.0f}x")
        print(line, flush=True)
        if not same:
            diff = next(i for i, (a, b) in enumerate(zip(fast, slow)) if a != b)
            print(f"[{lang}] FIRST MISMATCH at {diff}: {texts[diff]!r}", flush=True)
            sys.exit(1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=["compare", "scale", "all"])
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--lang", default="both", choices=["en", "zh", "both"])
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--zh", type=int, default=200000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--brute-limit", type=float, default=1500.0, help="seconds before the brute force is cut short")
    a = ap.parse_args()
    if a.mode in ("compare", "all"):
        compare(a.n, ["en", "zh"] if a.lang == "both" else [a.lang], a.repeats, a.brute_limit)
    if a.mode in ("scale", "all"):
        scale([int(s) for s in a.sizes.split(",") if s], a.zh)


if __name__ == "__main__":
    main()
