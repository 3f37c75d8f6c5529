"""Exact ROUGE-L near-duplicate filtering, fast.

Contract (identical to Alpaca's brute force): candidates are processed in order; a
candidate is kept iff its best ROUGE-L F-measure against everything indexed so far is
<= threshold. "Exact" means the same tokens, the same LCS and the same float formula
as ``rouge_score`` (``P = lcs/len(pred)``, ``R = lcs/len(ref)``, ``F = 2*P*R/(P+R)``),
so ties at the threshold fall the same way.

How it stays fast without giving up exactness:

* ``F = 2*lcs/(m+n)`` (up to float rounding, which we handle by evaluating the real
  float formula), so for token lengths ``m, n`` a pair can only exceed the threshold if
  ``lcs >= need(m, n)``; that bounds the feasible lengths (a factor ~1.86 at 0.7).
* ``lcs <= |multiset overlap|``. Each text becomes a *set* of elements (the k-th
  occurrence of a token is its own element), ordered by a global rarity order. If two
  sets overlap in >= L elements they share an element among the first ``len - L + 1``
  of each (prefix filtering, as in set-similarity joins). Each indexed text posts only
  its prefix; a query probes only its own prefix, so common words are rarely touched.
* The rarity order must be one fixed total order for everything in the index, yet
  frequencies drift as a stream grows. We freeze the order per *epoch*: elements seen
  at the epoch start are ranked by their document frequency then; elements first seen
  later rank as rarer than all of them, by first appearance. When the index doubles we
  recompute the order and re-post every prefix (amortised O(1) per item).
* Survivors get an exact LCS from rapidfuzz (bit-parallel, in C), batched per query;
  tokens are mapped to integer ids encoded as one code point each so the whole
  candidate list is compared in one call.

Tokenisation contract
  en   exactly ``rouge_score``'s default tokenizer without stemmer: lower-case,
       every run of characters outside ``[a-z0-9]`` is a separator.
  zh   NFKC-normalise and lower-case; cut the text into runs of Han characters and
       the rest. Han runs are segmented by ``jieba.lcut(run, HMM=True)`` (default
       dictionary, accurate mode), one token per word. Elsewhere the en rule applies
       (``[a-z0-9]+`` words, so Latin words and numbers inside Chinese text are the same
       tokens as in English text), plus runs of other letters or digits (Cyrillic, kana,
       Hangul...) as whole tokens; whitespace, punctuation and symbols are dropped.
  auto per text: ``zh`` if it contains any Han character, else ``en``. A pure English
       corpus therefore tokenises exactly as rouge-score does.

A text that tokenises to nothing is rejected with reason ``"empty"`` (rouge-score would
score it 0.0 against everything and keep it; we refuse to keep content-free items).

Concurrency: all methods are synchronous and hold an internal lock, so calling them from
one asyncio event loop (or from worker threads) is safe.
"""

from __future__ import annotations

import re
import sys
import threading
import unicodedata
from array import array
from dataclasses import dataclass
from itertools import combinations, repeat

import numpy as np
from rapidfuzz.distance import LCSseq
from rapidfuzz.process import cdist

from datagen.config import THRESHOLD

__all__ = [
    "LANGS",
    "SimilarityIndex",
    "Verdict",
    "detect_lang",
    "fmeasure",
    "rouge_l",
    "tokenize",
]

LANGS = ("en", "zh", "auto")

# rouge_score.tokenize: text.lower(), then NON_ALPHANUM "[^a-z0-9]+" -> " ", split on
# whitespace, keep tokens matching "^[a-z0-9]+$". After the substitution only [a-z0-9]
# and spaces remain, so str.split() gives exactly the same tokens, faster.
_NON_ALNUM = re.compile(r"[^a-z0-9]+")

# Han ideographs: CJK Unified (+Ext A), Compatibility Ideographs, and the supplementary
# planes (Ext B..). Used both for auto detection and for zh token classification.
_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f]")


_HAN_RUN = re.compile(f"({_HAN.pattern}+)")
# Outside Han runs: the en rule's [a-z0-9]+ words, plus runs of other letters/digits
# (Cyrillic, kana, Hangul...) that the en rule would drop; punctuation and spaces go.
_OTHER_WORDS = re.compile(r"[a-z0-9]+|[^\W_a-z0-9]+")


def _tokenize_en(text: str) -> list[str]:
    return _NON_ALNUM.sub(" ", text.lower()).split()


_jieba = None


def _get_jieba():
    # Imported lazily: loading jieba's dictionary costs ~1 s and English users never need it.
    global _jieba
    if _jieba is None:
        import logging

        import jieba

        jieba.setLogLevel(logging.WARNING)  # its "Building prefix dict" chatter goes to stderr
        jieba.initialize()
        _jieba = jieba
    return _jieba


def _tokenize_zh(text: str) -> list[str]:
    out: list[str] = []
    cut = _get_jieba().lcut
    # split() with a capturing group alternates: other text, Han run, other text, ...
    for i, part in enumerate(_HAN_RUN.split(unicodedata.normalize("NFKC", text).lower())):
        if i % 2:
            out.extend(cut(part, HMM=True))
        elif part:
            out.extend(_OTHER_WORDS.findall(part))
    return out


def detect_lang(text: str) -> str:
    """``"zh"`` if the text contains any Han character, else ``"en"``."""
    return "zh" if _HAN.search(text) else "en"


def tokenize(text: str, lang: str) -> list[str]:
    """Tokens as the filter sees them (see the module docstring for the contract)."""
    if lang == "en":
        return _tokenize_en(text)
    if lang == "zh":
        return _tokenize_zh(text)
    if lang == "auto":
        return _tokenize_zh(text) if _HAN.search(text) else _tokenize_en(text)
    raise ValueError(f"lang must be one of {LANGS}, got {lang!r}")


def fmeasure(lcs: int, len_target: int, len_prediction: int) -> float:
    """rouge_score's ``_score_lcs`` F-measure, the very same float operations.

    Swapping target and prediction swaps P and R; ``2*P*R`` and ``P+R`` round the same
    either way (doubling is exact, products and sums commute), so the score is symmetric
    bit for bit and Alpaca's argument order does not matter.
    """
    if lcs == 0:  # also covers empty token lists (rouge returns 0 when either is empty)
        return 0.0
    precision = lcs / len_prediction
    recall = lcs / len_target
    return 2 * precision * recall / (precision + recall)


def _lcs_len(a: list[str], b: list[str]) -> int:
    ids: dict[str, int] = {}
    sa = "".join(chr(ids.setdefault(t, len(ids))) for t in a)
    sb = "".join(chr(ids.setdefault(t, len(ids))) for t in b)
    return LCSseq.similarity(sa, sb)


def rouge_l(a: str, b: str, lang: str) -> float:
    """Reference pairwise ROUGE-L F-measure (a = target, b = prediction; symmetric)."""
    return rouge_l_tokens(tokenize(a, lang), tokenize(b, lang))


def rouge_l_tokens(ta: list[str], tb: list[str]) -> float:
    """ROUGE-L F of two token lists (for callers that drop or reuse tokens)."""
    if not ta or not tb:
        return 0.0
    return fmeasure(_lcs_len(ta, tb), len(ta), len(tb))


@dataclass(frozen=True)
class Verdict:
    """Outcome of checking one text.

    score: when rejected as similar, the exact best score over the whole index, and
    ``nearest``/``nearest_id`` is the earliest-added text reaching it. When kept, the best
    exact score among the pairs the filter had to verify with an LCS, with that text as
    ``nearest`` (0.0 and None when the filter proved every pair below the threshold
    without an LCS); it is a lower bound of the true best, which is <= threshold.
    When empty: keep False, score 0.0, reason "empty".
    """

    keep: bool
    score: float
    nearest: str | None
    nearest_id: int | None
    reason: str | None  # "empty" | "similar" | None


_EMPTY = Verdict(False, 0.0, None, None, "empty")
_KEEP = Verdict(True, 0.0, None, None, None)
_UNKNOWN = 0  # token id reserved for tokens not in the index: it matches nothing indexed
_CHR_LIMIT = 0x110000  # ids beyond this cannot be one code point; fall back to int tuples
_NEW_KEY_BASE = -(1 << 62)  # order keys of elements born after the epoch began: rarest
_PAIR_BASE = 1 << 32  # pair key = first * _PAIR_BASE + second
_PAIR_MAX_LEN = 40  # longer texts post single elements (a pair prefix of ~20 is 190 pairs)
_FIRST_REBUILD = 256
_REBUILD_GROWTH = 4
_NONE, _SINGLE, _PAIR = 0, 1, 2
_SMALL = 16  # at most this many LCS checks run as a Python loop; more go to one cdist call


def _planes(eids) -> list[int]:
    """Bucketed element counts as bit planes: bit b of plane t is set when bucket b holds
    more than t elements (64 buckets, one uint64 per plane)."""
    planes: list[int] = []
    for e in eids:
        bit = 1 << ((e * 0x9E3779B1 >> 16) & 63)  # spread consecutive ids over buckets
        for t, plane in enumerate(planes):
            if not plane & bit:
                planes[t] = plane | bit
                break
        else:
            planes.append(bit)
    return planes


if hasattr(np, "bitwise_count"):  # numpy >= 2
    _popcount = np.bitwise_count
else:  # pragma: no cover - numpy 1.x
    _BYTE_BITS = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)

    def _popcount(x: np.ndarray) -> np.ndarray:
        return _BYTE_BITS[x.view(np.uint8).reshape(*x.shape, 8)].sum(-1, dtype=np.int32)


class SimilarityIndex:
    """A growing set of texts answering "is this a ROUGE-L near-duplicate?" exactly.

    Index layout. Every non-empty text posts part of its rarity-sorted element list:
    * pair texts (the usual case): every pair among its first ``m - need + 2`` elements,
      where ``need`` is the least overlap any feasible partner requires. Two texts with
      overlap >= L share the two rarest common elements, and both lie in both of those
      prefixes, so a query finds every such text by looking up its own prefix pairs. A
      pair of rare-ish words is far more selective than one word, which is what keeps
      candidate lists short when the vocabulary is small and the index is large.
    * single texts (1-token texts whose partners need only 1 common element, and long
      texts, over ``_PAIR_MAX_LEN`` tokens, whose pair count would explode): each of its first
      ``m - need + 1`` elements (classic prefix filtering).
    A query probes whichever of the two its feasible partner lengths call for.
    """

    def __init__(self, lang: str = "en", threshold: float = THRESHOLD):
        if lang not in LANGS:
            raise ValueError(f"lang must be one of {LANGS}, got {lang!r}")
        threshold = float(threshold)
        if not 0.0 <= threshold <= 1.0:
            # Below 0 every pair (even lcs 0) would be "similar": nothing to index on.
            raise ValueError(f"threshold must be within [0, 1], got {threshold}")
        self.lang = lang
        self.threshold = threshold
        self._lock = threading.RLock()
        self._texts: list[str] = []
        self._seqs: list = []  # token ids as a str of code points (or int tuple), "" if empty
        self._eids: list = []  # element ids per text, encoded like _seqs; None if empty
        self._lens: list[int] = []
        self._lens_np = np.zeros(1024, dtype=np.int32)
        # Bucketed element counts per text: overlap <= sum_b min(count_x[b], count_y[b]), an
        # exact upper bound on the LCS that numpy evaluates for a whole candidate list. Kept
        # as two bit planes (count >= 1, count >= 2) -- 16 bytes a text, so the gather stays
        # in cache; a bucket with >= 2 counts as unbounded on the indexed side.
        self._sig1 = np.zeros(1024, dtype=np.uint64)
        self._sig2 = np.zeros(1024, dtype=np.uint64)
        self._maxlen = 0
        self._need_rows: dict[int, np.ndarray] = {}
        # Vocabulary of elements: "tok" for a first occurrence, "tok\0k" for the k-th.
        # Token ids (used in LCS strings) and element ids share one counter; 0 is reserved.
        self._vocab: dict[str, int] = {}
        self._df: list[int] = [0]  # indexed texts containing the element
        self._key: list[int] = [_NEW_KEY_BASE]  # rarity order of the current epoch
        # Postings: a lone int until a second text arrives, then an array('i') (4 bytes an
        # entry, and numpy concatenates them without a Python loop).
        self._single: dict[int, int | array] = {}
        self._pairs: dict[int, int | array] = {}
        self._indexed = 0  # non-empty texts in the index
        self._next_rebuild = _FIRST_REBUILD
        self._need: dict[tuple[int, int], int] = {}
        self._lrange: dict[int, tuple[int, int]] = {}
        self._lmin: dict[int, int] = {}
        self._plans: dict[int, tuple[int, int, int, int, int, bool, bool]] = {}

    # -- length bounds -------------------------------------------------------------

    def _need_lcs(self, m: int, n: int) -> int:
        """Smallest lcs whose float F-measure exceeds the threshold; m+n+1 if none."""
        key = (m, n)
        got = self._need.get(key)
        if got is None:
            t, top = self.threshold, min(m, n)
            # Start just below the real-number answer; the float formula decides (F is
            # monotone in lcs: consecutive values differ by 2/(m+n) >> rounding error).
            lcs = max(1, int(t * (m + n) / 2) - 2)
            while lcs <= top and fmeasure(lcs, m, n) <= t:
                lcs += 1
            got = lcs if lcs <= top else m + n + 1
            self._need[key] = got
        return got

    def _length_range(self, n: int) -> tuple[int, int]:
        """Partner lengths m for which some lcs can exceed the threshold (lo > hi: none).

        Feasibility is an interval: for m <= n the best case is lcs = m (F grows with m),
        for m >= n it is lcs = n (F shrinks with m).
        """
        got = self._lrange.get(n)
        if got is None:
            t, need = self.threshold, self._need_lcs
            if need(n, n) > n:  # not even an identical text passes (threshold 1)
                got = (1, 0)
            else:
                lo = max(1, int(n * t / (2 - t)) - 2)  # real-number bound, then exact floats
                while need(lo, n) > lo:
                    lo += 1
                if t == 0.0:
                    hi = sys.maxsize  # one shared token beats 0 at any length
                else:
                    hi = int(n * (2 - t) / t) + 2
                    while need(hi, n) > n:
                        hi -= 1
                got = (lo, hi)
            self._lrange[n] = got
        return got

    def _min_need(self, n: int) -> int:
        """Least overlap any feasible partner needs: sizes the prefixes of a length-n text.

        need(m, n) grows with m, and partners longer than n need at least need(n, n).
        """
        got = self._lmin.get(n)
        if got is None:
            lo, hi = self._length_range(n)
            got = min((self._need_lcs(m, n) for m in range(lo, min(hi, n) + 1)), default=n + 1)
            self._lmin[n] = got
        return got

    def _need_row(self, n: int) -> np.ndarray:
        """need(m, n) for every indexed length m (0..maxlen); n+1 where m is infeasible."""
        row = self._need_rows.get(n)
        if row is None or len(row) <= self._maxlen:
            size = max(self._maxlen + 1, 2 * len(row) if row is not None else 64)
            row = np.full(size, n + 1, dtype=np.int32)
            lo, hi = self._length_range(n)
            for m in range(lo, min(hi, size - 1) + 1):
                row[m] = self._need_lcs(m, n)
            self._need_rows[n] = row
        return row

    def _category(self, n: int) -> int:
        need = self._min_need(n)
        if need > n:
            return _NONE
        if need < 2 or n > _PAIR_MAX_LEN:
            return _SINGLE
        return _PAIR

    def _plan(self, n: int) -> tuple[int, int, int, int, int, bool, bool]:
        """(lo, hi, single prefix, pair prefix, own category, probe singles, probe pairs)."""
        got = self._plans.get(n)
        if got is None:
            lo, hi = self._length_range(n)
            need = self._min_need(n)
            cats = {self._category(m) for m in range(lo, min(hi, _PAIR_MAX_LEN) + 1)}
            if hi > _PAIR_MAX_LEN:
                cats.add(_SINGLE)
            got = (lo, hi, n - need + 1, min(n, n - need + 2), self._category(n),
                   _SINGLE in cats, _PAIR in cats)
            self._plans[n] = got
        return got

    # -- element bookkeeping -------------------------------------------------------

    @staticmethod
    def _element_names(toks: list[str]) -> list[str]:
        if len(set(toks)) == len(toks):
            return toks
        seen: dict[str, int] = {}
        names = []
        for t in toks:
            k = seen.get(t, 0) + 1
            seen[t] = k
            names.append(t if k == 1 else f"{t}\0{k}")
        return names

    def _intern(self, name: str) -> int:
        eid = self._vocab.get(name)
        if eid is None:
            eid = len(self._df)
            self._vocab[name] = eid
            self._df.append(0)
            self._key.append(_NEW_KEY_BASE + eid)
        return eid

    @staticmethod
    def _encode(ids: list[int]):
        if not ids or max(ids) < _CHR_LIMIT:
            return "".join(map(chr, ids))
        return tuple(ids)

    @staticmethod
    def _decode(seq) -> list[int]:
        return [ord(c) for c in seq] if isinstance(seq, str) else list(seq)

    def _post(self, item: int, eids: list[int], n: int) -> None:
        _, _, p1, p2, cat, _, _ = self._plan(n)
        if cat == _NONE:
            return
        ordered = sorted(eids, key=self._key.__getitem__)
        if cat == _SINGLE:
            keys = ordered[:p1]
            postings = self._single
        else:
            keys = [x * _PAIR_BASE + y for x, y in combinations(ordered[:p2], 2)]
            postings = self._pairs
        get = postings.get
        for k in keys:
            v = get(k)
            if v is None:
                postings[k] = item
            elif type(v) is int:
                postings[k] = array("i", (v, item))
            else:
                v.append(item)

    def _rebuild(self) -> None:
        """Start a new epoch: re-rank elements by document frequency, re-post everything."""
        df = self._df
        order = sorted(range(len(df)), key=lambda e: (df[e], e))
        key = [0] * len(df)
        for rank, e in enumerate(order):
            key[e] = rank
        self._key = key
        self._single = {}
        self._pairs = {}
        decode, lens = self._decode, self._lens
        for item, eids in enumerate(self._eids):
            if eids:
                self._post(item, decode(eids), lens[item])
        # x4 keeps re-posting under a third of all posting work; word frequencies settle early.
        self._next_rebuild = max(_FIRST_REBUILD, _REBUILD_GROWTH * self._indexed)

    # -- public API ----------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._texts)

    def text(self, id: int) -> str:  # noqa: A002 - the name the API asks for
        return self._texts[id]

    def tokens(self, text: str) -> list[str]:
        return tokenize(text, self.lang)

    def offer(self, text: str) -> Verdict:
        """The dedup contract: check, and index the text if it is kept."""
        with self._lock:
            toks = tokenize(text, self.lang)
            verdict, tids, names = self._check(toks)
            if verdict.keep:
                self._add(text, toks, tids, names)
            return verdict

    def check(self, text: str) -> Verdict:
        """Would this text be kept? Does not change the index."""
        with self._lock:
            return self._check(tokenize(text, self.lang))[0]

    def add(self, text: str) -> int:
        """Index a text unconditionally (seeds, resume). Returns its id."""
        with self._lock:
            return self._add(text, tokenize(text, self.lang))

    def _add(self, text: str, toks: list[str], tids: list[int] | None = None, names: list[str] | None = None) -> int:
        item = len(self._texts)
        self._texts.append(text)
        n = len(toks)
        self._lens.append(n)
        if item >= len(self._lens_np):
            self._lens_np = np.concatenate([self._lens_np, np.zeros_like(self._lens_np)])
            self._sig1 = np.concatenate([self._sig1, np.zeros_like(self._sig1)])
            self._sig2 = np.concatenate([self._sig2, np.zeros_like(self._sig2)])
        self._lens_np[item] = n
        if n == 0:
            self._seqs.append("")
            self._eids.append(None)
            return item
        intern = self._intern
        if tids is None or _UNKNOWN in tids:
            tids = [intern(t) for t in toks]
        if names is None:
            names = self._element_names(toks)
        eids = tids if names is toks else [intern(x) for x in names]
        seq = self._encode(tids)
        self._seqs.append(seq)
        # Element ids are stored encoded like the LCS string; without repeated tokens they
        # are the token ids, so the same object serves both (no extra memory).
        self._eids.append(seq if eids is tids else self._encode(eids))
        df = self._df
        for e in eids:
            df[e] += 1
        planes = _planes(eids)
        self._sig1[item] = planes[0]
        if len(planes) > 1:
            self._sig2[item] = planes[1]
        self._maxlen = max(self._maxlen, n)
        self._indexed += 1
        if self._indexed >= self._next_rebuild:
            self._rebuild()  # posts this item too
        else:
            self._post(item, eids, n)
        return item

    def _check(self, toks: list[str]) -> tuple[Verdict, list[int] | None, list[str] | None]:
        """Verdict, plus the token ids and element names worked out on the way (for _add)."""
        n = len(toks)
        if n == 0:
            return _EMPTY, None, None
        get = self._vocab.get
        tids = list(map(get, toks, repeat(_UNKNOWN)))
        names = self._element_names(toks)
        lo, hi, p1, p2, _, probe_single, probe_pairs = self._plan(n)
        if not self._indexed or lo > hi:
            return _KEEP, tids, names
        eids = tids if names is toks else list(map(get, names, repeat(_UNKNOWN)))
        known = list(filter(None, eids))
        # Unknown elements are in no indexed text, i.e. rarest of all: they fill the
        # first prefix slots and probe nothing.
        unknown = n - len(known)
        known.sort(key=self._key.__getitem__)
        hits = list(map(self._single.get, known[: p1 - unknown])) if probe_single and p1 > unknown else []
        if probe_pairs and p2 - unknown >= 2:
            keys = [x * _PAIR_BASE + y for x, y in combinations(known[: p2 - unknown], 2)]
            hits += map(self._pairs.get, keys)
        lone = [v for v in hits if type(v) is int]
        many = [v for v in hits if v is not None and type(v) is not int]
        if not many:
            if not lone:
                return _KEEP, tids, names
            ids = np.array(lone, dtype=np.int32)
        else:
            if lone:
                many.append(array("i", lone))
            ids = np.concatenate(many)
        ids.sort()
        if len(ids) > 1:  # np.unique is ~15x slower here (hash based in numpy 2)
            ids = ids[np.concatenate(([True], ids[1:] != ids[:-1]))]
        ms = self._lens_np[ids]
        q = _planes(known)
        bound = _popcount(self._sig1[ids] & np.uint64(q[0])).astype(np.int32)  # uint8 would wrap
        for plane in q[1:]:
            bound += _popcount(self._sig2[ids] & np.uint64(plane))
        ok = bound >= self._need_row(n)[ms]  # infeasible lengths need more than n
        if not ok.any():
            return _KEEP, tids, names
        ids, ms = ids[ok], ms[ok]
        qseq = self._encode(tids)
        seqs = self._seqs
        # ids are sorted, so the first strict maximum is the earliest text on ties.
        if len(ids) <= _SMALL:
            sim = LCSseq.similarity
            best, best_id = -1.0, -1
            for c, m in zip(ids.tolist(), ms.tolist()):
                f = fmeasure(sim(qseq, seqs[c]), m, n)
                if f > best:
                    best, best_id = f, c
        else:
            lcs = cdist([qseq], [seqs[i] for i in ids.tolist()], scorer=LCSseq.similarity, dtype=np.int32, workers=1)[0]
            f = _fmeasure_vec(lcs, ms, n)
            at = int(f.argmax())  # argmax returns the first maximum
            best, best_id = float(f[at]), int(ids[at])
        if best > self.threshold:
            return Verdict(False, best, self._texts[best_id], best_id, "similar"), tids, names
        if not best:
            return _KEEP, tids, names
        return Verdict(True, best, self._texts[best_id], best_id, None), tids, names

    def top_k_similar(self, text: str, k: int = 5, min_score: float = 0.0) -> list[tuple[int, str, float]]:
        """The k indexed texts most similar to ``text``: (id, text, exact score), best first.

        Ties are broken by id (earlier first). Texts sharing no token (score 0.0) are never
        returned. This scans the index in C (rapidfuzz) rather than using the prefix
        filter, because the dashboard asks about scores below the dedup threshold.
        """
        with self._lock:
            toks = tokenize(text, self.lang)
            n = len(toks)
            if not n or k <= 0 or not self._indexed:
                return []
            get = self._vocab.get
            qseq = self._encode([get(t, _UNKNOWN) for t in toks])
            ms = self._lens_np[: len(self._texts)]
            ok = ms > 0
            if min_score > 0:
                # F <= 2*min(m,n)/(m+n); a tiny slack keeps the cut conservative, the
                # exact float check below decides.
                ok &= 2.0 * np.minimum(ms, n) / (ms + n) >= min_score - 1e-9
            ids = np.flatnonzero(ok)
            if not len(ids):
                return []
            seqs = self._seqs
            lcs = cdist([qseq], [seqs[i] for i in ids.tolist()], scorer=LCSseq.similarity, dtype=np.int32, workers=1)[0]
            f = _fmeasure_vec(lcs, ms[ids], n)
            ok = (f > 0) & (f >= min_score)
            ids, f = ids[ok], f[ok]
            order = np.lexsort((ids, -f))[:k]
            return [(int(ids[i]), self._texts[ids[i]], float(f[i])) for i in order]


def _fmeasure_vec(lcs: np.ndarray, len_target: np.ndarray, len_prediction: int) -> np.ndarray:
    """``fmeasure`` elementwise: the same IEEE operations in the same order."""
    lcs = lcs.astype(np.float64)
    precision = lcs / len_prediction
    recall = lcs / len_target
    with np.errstate(invalid="ignore", divide="ignore"):
        f = 2 * precision * recall / (precision + recall)
    f[lcs == 0] = 0.0
    return f
