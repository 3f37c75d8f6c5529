"""Brute-force stand-ins for datagen.similarity and datagen.filters, used only while those
modules are not yet on this branch. Same interface, none of the speed. Remove when merged."""

from __future__ import annotations

import re
import sys
import types
import unicodedata

_NON = re.compile(r"[^a-z0-9]+")
_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f]")


def tokenize(text, lang):
    if lang == "auto":
        lang = "zh" if _HAN.search(text) else "en"
    if lang == "en":
        return _NON.sub(" ", text.lower()).split()
    import jieba

    out = []
    for piece in jieba.lcut(unicodedata.normalize("NFKC", text), HMM=True):
        piece = piece.strip().lower()
        if not piece:
            continue
        if _HAN.search(piece):
            out.append(piece)
            continue
        words = _NON.sub(" ", piece).split()
        if words:
            out.extend(words)
        elif any(unicodedata.category(c)[0] in "LN" for c in piece):
            out.append(piece)
    return out


def _lcs(a, b):
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def rouge_l(a, b, lang):
    ta, tb = tokenize(a, lang), tokenize(b, lang)
    lcs = _lcs(ta, tb)
    if not lcs:
        return 0.0
    p, r = lcs / len(tb), lcs / len(ta)
    return 2 * p * r / (p + r)


class Verdict(types.SimpleNamespace):
    pass


class SimilarityIndex:
    def __init__(self, lang="en", threshold=0.7):
        self.lang, self.threshold, self._texts = lang, threshold, []

    def add(self, text):
        self._texts.append(text)
        return len(self._texts) - 1

    def text(self, id):  # noqa: A002
        return self._texts[id]

    def top_k_similar(self, text, k=5, min_score=0.0):
        scored = [(i, t, rouge_l(t, text, self.lang)) for i, t in enumerate(self._texts)]
        scored = [s for s in scored if s[2] > 0 and s[2] >= min_score]
        scored.sort(key=lambda s: (-s[2], s[0]))
        return scored[:k]

    def check(self, text):
        top = self.top_k_similar(text, 1)
        if top and top[0][2] > self.threshold:
            return Verdict(keep=False, score=top[0][2], nearest=top[0][1], nearest_id=top[0][0], reason="similar")
        return Verdict(keep=True, score=top[0][2] if top else 0.0, nearest=None, nearest_id=None, reason=None)


def check_instruction(lang, text):
    t = text.strip()
    if not t:
        return "empty", "no text"
    n = len(t.split()) if lang == "en" else len(t)
    if n < (3 if lang == "en" else 5):
        return "too_short", f"{n}"
    if re.search(r"\b(image|picture|draw)\b" if lang == "en" else "图片|绘制", t, re.I):
        return "blacklist", ""
    return None


class InstructionFilter:
    def __init__(self, lang):
        self.lang = lang

    def check(self, text):
        return check_instruction(self.lang, text)


def filter_instances(instances):
    from datagen.records import Instance

    kept, reasons = [], []
    for i in instances:
        if not i.output.strip():
            reasons.append("empty_output")
        else:
            kept.append(Instance(input=i.input.strip(), output=i.output.strip()))
    return kept, reasons


def install():
    import datagen

    sim = types.ModuleType("datagen.similarity")
    sim.tokenize, sim.rouge_l, sim.SimilarityIndex, sim.Verdict = tokenize, rouge_l, SimilarityIndex, Verdict
    filt = types.ModuleType("datagen.filters")
    filt.InstructionFilter, filt.filter_instances = InstructionFilter, filter_instances
    sys.modules.setdefault("datagen.similarity", sim)
    sys.modules.setdefault("datagen.filters", filt)
    datagen.similarity = sys.modules["datagen.similarity"]
    datagen.filters = sys.modules["datagen.filters"]
