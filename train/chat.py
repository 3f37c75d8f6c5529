"""Talking to a trained adapter with the template it was trained with: one shot or interactive."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from datagen.errors import TrainError
from train import data as D
from train import model as M
from train.merge import load_with_adapter
from train.qlora import META_FILE
from train.templates import get as get_template


class Chat:
    def __init__(self, base: str | None, adapter: str | None, *, template: str | None = None, bits: int = 16, dtype: str = "auto"):
        prec = M.pick_precision(bits, dtype)
        if adapter:
            self.model, self.tok, meta = load_with_adapter(base, Path(adapter), dtype=prec.dtype, bits=bits, device=str(prec.device))
        else:
            if not base:
                raise TrainError("give --adapter, --base, or both")
            path = M.resolve_model_path(base)
            remote = M.needs_remote_code(path)
            self.tok = M.load_tokenizer(path, trust_remote_code=remote)
            self.model = M.load_base(path, prec, trust_remote_code=remote).eval()
            meta_file = path / META_FILE  # a merged model remembers its template
            meta = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
        self.device = prec.device
        mt = self.model.config.model_type if hasattr(self.model, "config") else None
        self.template = get_template(template or meta.get("template") or "auto", model_type=mt, tokenizer=self.tok)
        self.history: list[tuple[str, str]] = []

    def reply(self, text: str, *, max_new_tokens: int = 256, temperature: float = 0.0, system: str | None = None, keep: bool = True) -> str:
        ids = D.encode_prompt(self.tok, self.template, self.history, text, system)
        inp = torch.tensor([ids], device=self.device)
        eos = [self.tok.eos_token_id]
        for s in self.template.stop:  # stop markers that are single tokens end generation early
            sid = self.tok.convert_tokens_to_ids(s)
            if isinstance(sid, int) and sid != self.tok.unk_token_id and sid is not None:
                eos.append(sid)
        gen = {"max_new_tokens": max_new_tokens, "eos_token_id": [e for e in eos if e is not None],
               "pad_token_id": self.tok.pad_token_id, "do_sample": temperature > 0}
        if temperature > 0:
            gen["temperature"] = temperature
        with torch.no_grad():
            out = self.model.generate(input_ids=inp, attention_mask=torch.ones_like(inp), **gen)
        answer = self.tok.decode(out[0, inp.shape[1]:], skip_special_tokens=True)
        for s in self.template.stop:
            if s and s in answer:
                answer = answer.split(s, 1)[0]
        answer = answer.strip()
        if keep:
            self.history.append((text, answer))
        return answer
