"""Display logic for the dashboard: shared-word highlighting and verb statistics.
(The review rule and the nearest neighbours are the library's: datagen/review.py.)"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter

from datagen import similarity

# --- Shared-word highlighting --------------------------------------------------------------------

_EN_PIECES = re.compile(r"[A-Za-z0-9]+|[^A-Za-z0-9]+")
_NON_ALNUM = re.compile(r"[^a-z0-9]+")
_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f]")


def segments(text: str, lang: str) -> list[tuple[str, str | None]]:
    """Split text into display pieces, each with the similarity token it stands for (or None).

    The tokens, read in order, are exactly ``similarity.tokenize(text, lang)``; when some
    unusual character breaks that, the whole text comes back as one unmatched piece.
    """
    out: list[tuple[str, str | None]] = []
    if lang == "zh":
        import jieba

        for piece in jieba.lcut(unicodedata.normalize("NFKC", text), HMM=True):
            low = piece.strip().lower()
            if not low:
                out.append((piece, None))
            elif _HAN.search(low):
                out.append((piece, low))
            elif _NON_ALNUM.sub(" ", low).split():
                out.extend((p, p.lower() if p[0].isascii() and p[0].isalnum() else None) for p in _EN_PIECES.findall(piece))
            elif any(unicodedata.category(c)[0] in "LN" for c in low):
                out.append((piece, low))
            else:
                out.append((piece, None))
    else:
        out = [(p, p.lower() if p[0].isascii() and p[0].isalnum() else None) for p in _EN_PIECES.findall(text)]
    if [t for _, t in out if t is not None] != similarity.tokenize(text, lang):
        return [(text, None)]
    return out


def _lcs_marks(a: list[str], b: list[str]) -> tuple[list[bool], list[bool]]:
    """Which tokens of a and of b belong to one longest common subsequence."""
    m, n = len(a), len(b)
    dp = [[0] * (n + 1) for _ in range(m + 1)]
    for i in range(m - 1, -1, -1):
        ai, row, nxt = a[i], dp[i], dp[i + 1]
        for j in range(n - 1, -1, -1):
            row[j] = nxt[j + 1] + 1 if ai == b[j] else max(nxt[j], row[j + 1])
    ma, mb = [False] * m, [False] * n
    i = j = 0
    while i < m and j < n:
        if a[i] == b[j]:
            ma[i] = mb[j] = True
            i += 1
            j += 1
        elif dp[i + 1][j] >= dp[i][j + 1]:
            i += 1
        else:
            j += 1
    return ma, mb


MAX_HIGHLIGHT_TOKENS = 400


def highlight(a: str, b: str, lang: str) -> dict:
    """Both texts as [text, shared] pieces, shared = in the LCS of their token sequences."""
    sa, sb = segments(a, lang), segments(b, lang)
    ta = [t for _, t in sa if t is not None]
    tb = [t for _, t in sb if t is not None]
    if len(ta) > MAX_HIGHLIGHT_TOKENS or len(tb) > MAX_HIGHLIGHT_TOKENS:
        return {"a": [[a, False]], "b": [[b, False]], "lcs": None}
    ma, mb = _lcs_marks(ta, tb)

    def mark(segs, marks):
        out, k = [], 0
        for text, tok in segs:
            shared = False
            if tok is not None:
                shared, k = marks[k], k + 1
            if out and out[-1][1] == shared:
                out[-1][0] += text
            else:
                out.append([text, shared])
        return out

    return {"a": mark(sa, ma), "b": mark(sb, mb), "lcs": sum(ma)}


# --- Leading verbs -------------------------------------------------------------------------------

EN_SKIP = set(
    "a an the this that these those some any my your our their its his her me us you him them it "
    "of to for in on at by with from about into as and or but if then so very more most each every "
    "all one two three few several please also just".split()
)
ZH_LEAD = {"请", "请你", "你", "您", "帮", "帮我", "帮忙", "我们", "我", "能否", "可以", "能", "麻烦", "试着", "尝试"}
ZH_SKIP = {"一个", "一篇", "一首", "一段", "一些", "一份", "一句", "一下", "下", "以下", "下面", "这个", "这些", "该", "的", "了", "给", "为", "对", "关于", "出", "几个", "一种", "一则", "一条", "一封", "篇", "首", "个"}


def verb_object(text: str, lang: str) -> tuple[str, str | None] | None:
    toks = similarity.tokenize(text, lang)
    if lang == "zh":
        while toks and toks[0] in ZH_LEAD:
            toks = toks[1:]
        if not toks:
            return None
        obj = next((t for t in toks[1:] if t not in ZH_SKIP and not re.fullmatch(r"[一二两三几这那每][个篇首段些份句种则条封件本道]?", t)), None)
        return toks[0], obj
    toks = [t for t in toks if not t.isdigit()]
    if not toks:
        return None
    if toks[0] == "please":
        toks = toks[1:] or toks
    obj = next((t for t in toks[1:] if t not in EN_SKIP), None)
    return toks[0], obj


def verb_stats(rows: list[tuple[str, str]], top: int = 20, objects: int = 5) -> list[dict]:
    verbs: Counter = Counter()
    pairs: dict[str, Counter] = {}
    for lang, text in rows:
        vo = verb_object(text, lang)
        if vo is None:
            continue
        verb, obj = vo
        verbs[verb] += 1
        if obj:
            pairs.setdefault(verb, Counter())[obj] += 1
    return [
        {"verb": v, "count": n, "objects": [{"object": o, "count": c} for o, c in pairs.get(v, Counter()).most_common(objects)]}
        for v, n in verbs.most_common(top)
    ]
