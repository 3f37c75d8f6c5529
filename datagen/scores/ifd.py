"""IFD (instruction-following difficulty, Cherry LLM / Superfiltering) with a local causal LM.

For an instance (instruction, input, output):
    PPL_cond  = exp(mean NLL of the output tokens after the prompt: instruction + "\\n\\n" + input,
                as one user turn in the model's chat template with the assistant's turn opened)
    PPL_plain = exp(mean NLL of the same output tokens with no prompt: after the tokenizer's BOS
                when it has one, else from the second token on, as Superfiltering does with GPT-2)
    IFD       = PPL_cond / PPL_plain
The output is tokenized once and the same ids follow both prefixes, so the two perplexities cover
the same tokens. A sample with several instances gets one value over all its output tokens (the
token-weighted mean NLLs of its instances); each instance's figures are kept in `extra`.

Sequences are right-padded with an attention mask; the loss is taken only at output positions (the
prompt and the padding are masked out), through the LM head applied to those positions alone, so a
batch never holds a (batch x length x vocab) logits tensor. Log-softmax runs in float32.
Too long: the output keeps its first `max_length // 2` tokens at least and the prompt its end.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from datagen.config import SCORE_BATCH_SIZE, SCORE_MAX_TOKENS
from datagen.errors import InputError
from datagen.records import KEPT

SCORER = "ifd"


@dataclass
class Encoded:
    cond: list[int]  # prompt + output
    cond_start: int  # index of the first output token in `cond`
    plain: list[int]  # [BOS] + output, or output alone
    plain_start: int  # first position whose token is scored (>= 1: position 0 has no context)


def prompt_text(tok, instruction: str, input: str) -> str:
    from datagen.backends.local import chat_format

    user = instruction.strip() + (f"\n\n{input.strip()}" if input.strip() else "")
    return chat_format(tok, user)


def encode(tok, instruction: str, input: str, output: str, max_length: int = SCORE_MAX_TOKENS) -> Encoded | None:
    """Token ids for both passes; None when the output has no token to score."""
    from datagen.export import clean_input  # what training will see: "<noinput>" and friends are empty

    has_template = bool(getattr(tok, "chat_template", None))
    bos = [tok.bos_token_id] if tok.bos_token_id is not None else []
    prompt = tok(prompt_text(tok, instruction, clean_input(input)), add_special_tokens=False).input_ids
    if not has_template:
        prompt = bos + prompt
    out = tok(output.strip(), add_special_tokens=False).input_ids
    if len(prompt) + len(out) > max_length:
        out = out[: max(max_length - len(prompt), max_length // 2)]
        prompt = prompt[len(prompt) - (max_length - len(out)) :] if max_length - len(out) > 0 else []
    if not prompt:
        prompt = bos[:1] or out[:1]
    plain = bos + out
    plain_start = max(len(bos), 1)
    if len(plain) <= plain_start or not out:
        return None
    return Encoded(prompt + out, len(prompt), plain, plain_start)


def token_nll(model, seqs: Sequence[tuple[list[int], int]], device: str, pad_id: int = 0, head_chunk: int = 2048) -> list[tuple[float, int]]:
    """(sum of NLL, scored tokens) per (ids, first scored index), in one right-padded forward pass."""
    import torch

    n = max(len(ids) for ids, _ in seqs)
    ids_t = torch.full((len(seqs), n), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), n), dtype=torch.long)
    for i, (ids, _) in enumerate(seqs):
        ids_t[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        mask[i, : len(ids)] = 1
    # Positions whose next token is scored: row i, columns start-1 .. len-2 predict tokens start .. len-1.
    rows, cols, targets, owner = [], [], [], []
    for i, (ids, start) in enumerate(seqs):
        k = len(ids) - start
        rows += [i] * k
        cols += range(start - 1, len(ids) - 1)
        targets += ids[start:]
        owner += [i] * k
    ids_t, mask = ids_t.to(device), mask.to(device)
    backbone = getattr(model, model.base_model_prefix)
    head = model.get_output_embeddings()
    with torch.inference_mode():
        hidden = backbone(input_ids=ids_t, attention_mask=mask).last_hidden_state
        picked = hidden[torch.tensor(rows, device=device), torch.tensor(cols, device=device)]
        tgt = torch.tensor(targets, device=device)
        nll = torch.empty(len(targets), dtype=torch.float64, device=device)
        for a in range(0, len(targets), head_chunk):
            logits = head(picked[a : a + head_chunk]).float()
            lp = torch.log_softmax(logits, dim=-1)
            nll[a : a + head_chunk] = -lp.gather(1, tgt[a : a + head_chunk, None])[:, 0].double()
        sums = torch.zeros(len(seqs), dtype=torch.float64, device=device).index_add_(0, torch.tensor(owner, device=device), nll)
    sums = sums.cpu().tolist()  # one device sync per batch
    return [(sums[i], len(seqs[i][0]) - seqs[i][1]) for i in range(len(seqs))]


def check_model(model) -> None:
    cfg = model.config
    if getattr(cfg, "final_logit_softcapping", None) or getattr(cfg, "logit_scale", None) not in (None, 1, 1.0):
        raise InputError(f"{type(model).__name__} post-processes its logits (soft-capping/scale); IFD supports plain LM heads only")


@dataclass
class SampleIFD:
    value: float | None
    extra: dict = field(default_factory=dict)
    error: str | None = None


def ifd_of(cond: list[tuple[float, int]], plain: list[tuple[float, int]]) -> SampleIFD:
    """A sample's IFD from its instances' (NLL sum, tokens) pairs under both passes."""
    cs, cn = sum(s for s, _ in cond), sum(n for _, n in cond)
    ps, pn = sum(s for s, _ in plain), sum(n for _, n in plain)
    ppl_c, ppl_p = math.exp(cs / cn), math.exp(ps / pn)
    extra = {"ppl_cond": ppl_c, "ppl_plain": ppl_p, "tokens": cn}
    if len(cond) > 1:
        extra["instances"] = [
            {"ppl_cond": math.exp(c[0] / c[1]), "ppl_plain": math.exp(p[0] / p[1]), "ifd": math.exp(c[0] / c[1] - p[0] / p[1])}
            for c, p in zip(cond, plain)
        ]
    return SampleIFD(ppl_c / ppl_p, extra)


def compute(model, tok, samples: Sequence[tuple[str, list[tuple[str, str]]]], *, device: str, batch_size: int = SCORE_BATCH_SIZE,
            max_length: int = SCORE_MAX_TOKENS) -> list[SampleIFD]:
    """IFD of each (instruction, [(input, output), ...]). The sequences of all samples are sorted by
    length and run `batch_size` at a time (short ones together: little padding); each sequence's
    result depends only on its own tokens, so the batching does not change a value beyond float noise."""
    enc: list[list[Encoded]] = []
    for instruction, instances in samples:
        e = [encode(tok, instruction, i, o, max_length) for i, o in instances]
        enc.append([x for x in e if x is not None])
    seqs: list[tuple[list[int], int]] = []
    where: list[tuple[int, int, int]] = []  # (sample, instance, 0 cond / 1 plain)
    for si, es in enumerate(enc):
        for ii, e in enumerate(es):
            seqs += [(e.cond, e.cond_start), (e.plain, e.plain_start)]
            where += [(si, ii, 0), (si, ii, 1)]
    order = sorted(range(len(seqs)), key=lambda k: (len(seqs[k][0]), k))
    res: dict[int, tuple[float, int]] = {}
    pad = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
    for a in range(0, len(order), batch_size):
        part = order[a : a + batch_size]
        for k, r in zip(part, token_nll(model, [seqs[k] for k in part], device, pad)):
            res[k] = r
    got: list[dict[int, list]] = [{} for _ in samples]
    for k, (si, ii, which) in enumerate(where):
        got[si].setdefault(ii, [None, None])[which] = res[k]
    out = []
    for si, (instruction, instances) in enumerate(samples):
        if not instances:
            out.append(SampleIFD(None, error="no instances"))
        elif not enc[si]:
            out.append(SampleIFD(None, error="no output token to score"))
        else:
            pairs = [got[si][ii] for ii in range(len(enc[si]))]
            out.append(ifd_of([p[0] for p in pairs], [p[1] for p in pairs]))
    return out


@dataclass
class ScoreResult:
    scored: int = 0
    failed: int = 0
    skipped: int = 0  # already scored before this call
    seconds: float = 0.0
    model: str = ""
    device: str = ""


def score_run(engine, run: str, *, model: str | None = None, batch_size: int = SCORE_BATCH_SIZE, max_length: int = SCORE_MAX_TOKENS,
              statuses: Sequence[str] = KEPT, limit: int | None = None, device: str | None = None,
              on_progress: Callable[[ScoreResult, int], None] | None = None) -> ScoreResult:
    """Score the run's unscored samples, a page of 4 x `batch_size` samples at a time, each page stored
    in one transaction: a killed process loses at most the page it was computing, and a re-run
    starts from what is missing. A sample that cannot be scored gets a failure row and is passed by."""
    from datagen import storage
    from datagen.scores import models as M
    from datagen.storage import scores as S

    if batch_size < 1 or max_length < 8:
        raise InputError("--batch-size must be >= 1 and --max-length >= 8")
    found = storage.get_run(engine, run)
    if found is None:
        raise InputError(f"no run named {run!r}")
    name = M.model_name(model)
    res = ScoreResult(model=name)
    total = S.count_unscored(engine, found.id, SCORER, name, statuses=statuses)
    if limit is not None:
        total = min(total, limit)
    if total == 0:
        return res
    loaded = M.load(model, causal=True, device=device)
    check_model(loaded.model)
    res.device = loaded.device
    t0 = time.monotonic()
    after = 0
    while limit is None or res.scored + res.failed < limit:
        page = 4 * batch_size if limit is None else min(4 * batch_size, limit - res.scored - res.failed)
        ids = S.unscored_sample_ids(engine, found.id, SCORER, name, statuses=statuses, after=after, limit=page)
        if not ids:
            break
        after = ids[-1]
        texts = S.sample_texts(engine, ids)
        vals = compute(loaded.model, loaded.tokenizer, [texts[i] for i in ids], device=loaded.device, batch_size=batch_size,
                       max_length=max_length)
        rows = [S.ScoreIn(sid, SCORER, name, v.value, extra=v.extra or None, error=v.error) for sid, v in zip(ids, vals)]
        new = S.store_scores(engine, rows)
        ok = sum(v.value is not None for v in vals)
        res.scored += new
        res.skipped += ok - new  # another process stored them first
        res.failed += len(vals) - ok
        res.seconds = time.monotonic() - t0
        if on_progress:
            on_progress(res, total)
    res.seconds = time.monotonic() - t0
    return res
