"""Tiny models and data for the train tests, made on the spot: random weights, a small byte-level
BPE tokenizer trained on a few sentences, and alpaca/sharegpt files as `datagen export` writes them."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

HERE = Path(__file__).resolve().parent
SPECIALS = ["<unk>", "<s>", "</s>", "<pad>", "<reserved_102>", "<reserved_103>"]
CHATML = ["<|im_start|>", "<|im_end|>"]

WORDS = ("alpha beta gamma delta apple river stone cloud green blue write list name three short poem about the "
         "a of and to sum numbers answer question explain why how sky is sun moon day night").split()


def corpus(n: int = 400, seed: int = 0) -> list[str]:
    rnd = random.Random(seed)
    return [" ".join(rnd.choice(WORDS) for _ in range(rnd.randint(3, 12))) for _ in range(n)]


def make_tokenizer(out: Path, *, pad: bool = True, bos: bool = True, chatml: bool = False):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.BPE(unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    specials = SPECIALS + (CHATML if chatml else [])
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tk.train_from_iterator(corpus() + ["### Instruction:\n### Response:\n[INST] [/INST] <<SYS>>"] * 5, trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="<unk>", eos_token="</s>",
                                  bos_token="<s>" if bos else None, pad_token="<pad>" if pad else None)
    tok.add_special_tokens({"additional_special_tokens": specials[4:]})
    out.mkdir(parents=True, exist_ok=True)
    tok.save_pretrained(out)
    return tok


def make_llama(out: Path, *, seed: int = 0, hidden: int = 48, layers: int = 2, chatml: bool = False):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = make_tokenizer(out, chatml=chatml)
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    LlamaForCausalLM(cfg).save_pretrained(out)
    return out


def make_bloom(out: Path, *, seed: int = 0):
    import torch
    from transformers import BloomConfig, BloomForCausalLM

    tok = make_tokenizer(out)
    torch.manual_seed(seed)
    cfg = BloomConfig(vocab_size=len(tok), hidden_size=32, n_layer=2, n_head=4,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    BloomForCausalLM(cfg).save_pretrained(out)
    return out


def make_baichuan(out: Path, *, seed: int = 0):
    """A model directory that only loads with trust_remote_code, like a real Baichuan one: no pad, no BOS."""
    import sys

    import torch

    tok = make_tokenizer(out, pad=False, bos=False)
    shutil.copy(HERE / "tiny_baichuan" / "modeling_baichuan.py", out / "modeling_baichuan.py")
    sys.path.insert(0, str(HERE / "tiny_baichuan"))
    try:
        import modeling_baichuan as mb
    finally:
        sys.path.pop(0)
    torch.manual_seed(seed)
    cfg = mb.BaichuanConfig(vocab_size=len(tok), eos_token_id=tok.eos_token_id)
    cfg.auto_map = {"AutoConfig": "modeling_baichuan.BaichuanConfig", "AutoModelForCausalLM": "modeling_baichuan.BaichuanForCausalLM"}
    mb.BaichuanForCausalLM(cfg).save_pretrained(out)
    return out


def alpaca_records(n: int, seed: int = 1) -> list[dict]:
    rnd = random.Random(seed)
    recs = []
    for i in range(n):
        w = [rnd.choice(WORDS) for _ in range(rnd.randint(2, 6))]
        recs.append({"instruction": f"repeat the words {' '.join(w)}", "input": "" if i % 2 else f"{i} times",
                     "output": " ".join(w) + " done"})
    return recs


def write_alpaca(path: Path, n: int = 16, seed: int = 1) -> Path:
    # The layout `datagen export --format alpaca` writes: a JSON array, one record a line.
    recs = alpaca_records(n, seed)
    path.write_text("[\n  " + ",\n  ".join(json.dumps(r, ensure_ascii=False) for r in recs) + "\n]\n")
    return path
