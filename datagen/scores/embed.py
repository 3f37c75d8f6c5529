"""Sample embeddings for the diversity rule: the mean of the last hidden state over the sample's
tokens (padding masked out), by the embedded SmolLM2's backbone or any HF model directory that
AutoModel loads (an encoder such as a sentence-embedding BERT, or a causal LM's backbone).
Cached per (sample, model) in the embedding table: computed once, reused by every `datagen select`.

A sample's text is its instruction, then each instance's input and output, blank-line separated:
the whole record, as Deita embeds the whole conversation.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from datagen.config import SCORE_BATCH_SIZE, SCORE_MAX_TOKENS


def sample_text(instruction: str, instances: list[tuple[str, str]]) -> str:
    parts = [instruction.strip()]
    for inp, out in instances:
        parts += [p for p in (inp.strip(), out.strip()) if p]
    return "\n\n".join(parts)


def embed_texts(model, tok, texts: Sequence[str], *, device: str, batch_size: int = SCORE_BATCH_SIZE,
                max_length: int = SCORE_MAX_TOKENS) -> np.ndarray:
    """(len(texts), hidden) float32: masked mean of the last hidden state, batches sorted by length."""
    import torch

    if len(texts) == 0:
        return np.zeros((0, model.config.hidden_size), dtype=np.float32)
    limit = min(max_length, getattr(tok, "model_max_length", max_length) or max_length)
    ids = [tok(t, add_special_tokens=True, truncation=True, max_length=limit).input_ids or [tok.eos_token_id or 0] for t in texts]
    pad = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
    order = sorted(range(len(ids)), key=lambda i: (len(ids[i]), i))
    out = np.zeros((len(ids), model.config.hidden_size), dtype=np.float32)
    backbone = getattr(model, model.base_model_prefix, model)
    for a in range(0, len(order), batch_size):
        part = order[a : a + batch_size]
        n = max(len(ids[i]) for i in part)
        x = torch.full((len(part), n), pad, dtype=torch.long)
        m = torch.zeros((len(part), n), dtype=torch.long)
        for r, i in enumerate(part):
            x[r, : len(ids[i])] = torch.tensor(ids[i])
            m[r, : len(ids[i])] = 1
        with torch.inference_mode():
            h = backbone(input_ids=x.to(device), attention_mask=m.to(device)).last_hidden_state.float()
            mm = m.to(device).unsqueeze(-1).float()
            mean = (h * mm).sum(1) / mm.sum(1).clamp(min=1)
        out[part] = mean.cpu().numpy()
    return out


def ensure(engine, sample_ids: Sequence[int], *, model: str | None = None, batch_size: int | None = None,
           device: str | None = None) -> tuple[str, dict[int, np.ndarray]]:
    """(model name, vectors of every sample), computing and caching the missing ones in pages."""
    from datagen.scores import models as M
    from datagen.storage import scores as S

    name = M.model_name(model)
    have = S.get_embeddings(engine, sample_ids, name)
    missing = [sid for sid in sample_ids if sid not in have]
    if missing:
        loaded = M.load(model, causal=False, device=device)
        bs = batch_size or SCORE_BATCH_SIZE
        for a in range(0, len(missing), 8 * bs):
            page = missing[a : a + 8 * bs]
            texts = S.sample_texts(engine, page)
            vecs = embed_texts(loaded.model, loaded.tokenizer, [sample_text(*texts[sid]) for sid in page], device=loaded.device, batch_size=bs)
            S.put_embeddings(engine, name, dict(zip(page, vecs)))
        have = S.get_embeddings(engine, sample_ids, name)
    return name, have
