"""The slot engine (datagen/backends/slots.py): the transformers engine's continuous-batching loop.

On the CPU it runs its step eagerly (CUDA graphs are captured only on a GPU; bench/local_gpu.py
measures that path on an H200), with the embedded SmolLM2 in float32, so its greedy output must
equal transformers' own `generate` token for token.
"""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import pytest

from conftest import core_wait_for

PROMPTS = ["Write a haiku about tea.", "List three prime numbers.", "What is the capital of France? Answer in one word.",
           "Explain photosynthesis briefly.", "Give me a synonym for happy."]


def P(text, max_tokens=20, temperature=0.0, top_p=1.0, stop=()):
    return SimpleNamespace(text=text, max_tokens=max_tokens, temperature=temperature, top_p=top_p, stop=list(stop))


@pytest.fixture(scope="module")
def engine():
    from datagen.backends.local import LocalBackend

    b = LocalBackend(None, batch_size=4, cache="slots")
    b.load()
    assert b._slots is not None and not b._slots.graphs  # the slot loop, eager on the CPU
    assert b.loop == "slots" and b.continuous  # what a run's config and a Ray replica's info record
    assert b._slots.tok_lock is b._tok_lock  # the feed thread's decodes and the callers' encodes take one lock
    return b


def reference(b, p) -> tuple[str, int, str]:
    """transformers' greedy generate of one prompt alone: (text, tokens produced, finish reason)."""
    import torch

    enc = b.encode([p.text], return_tensors="pt")
    with torch.inference_mode():
        out = b._lm.generate(**enc, max_new_tokens=p.max_tokens, do_sample=False, temperature=None, top_p=None, top_k=None,
                             pad_token_id=b._tok.pad_token_id)
    row = out[0, enc["input_ids"].shape[1]:].tolist()
    ended = b._tok.eos_token_id in row
    row = row[: row.index(b._tok.eos_token_id)] if ended else row
    return b._tok.decode(row, skip_special_tokens=True), len(row), "stop" if ended else "length"


def test_greedy_equals_transformers_generate_with_each_prompts_budget(engine):
    # more prompts than slots (5 > 4), budgets of different lengths: rows join and leave mid-run
    ps = [P(t, max_tokens=n) for t, n in zip(PROMPTS, [24, 9, 30, 16, 5])]
    got = engine.generate_raw(ps)
    for p, g in zip(ps, got):
        text, n, finish = reference(engine, p)
        assert (g["text"], g["tokens_out"], g["finish_reason"]) == (text, n, finish), p.text
        assert g["tokens_in"] == engine.count_tokens(p.text)
        assert g["tokens_out"] <= p.max_tokens
    assert any(g["finish_reason"] == "stop" for g in got) and any(g["finish_reason"] == "length" for g in got)


def test_stop_strings_cut_the_text_and_end_the_row(engine):
    free = engine.generate_raw([P(PROMPTS[2], max_tokens=30)])[0]["text"]
    word = free.split()[2]  # a word from the middle of the free answer
    g = engine.generate_raw([P(PROMPTS[2], max_tokens=30, stop=[word])])[0]
    assert g["finish_reason"] == "stop" and g["text"] == free[: free.index(word)]
    assert word not in g["text"]


def test_top_p_near_zero_samples_the_argmax_and_temperature_samples_otherwise(engine):
    greedy = engine.generate_raw([P(t, max_tokens=12) for t in PROMPTS[:4]])
    narrow = engine.generate_raw([P(t, max_tokens=12, temperature=1.0, top_p=1e-6) for t in PROMPTS[:4]])
    assert [g["text"] for g in narrow] == [g["text"] for g in greedy]  # only the top token survives top-p
    hot = [engine.generate_raw([P(PROMPTS[3], max_tokens=12, temperature=1.5, top_p=1.0)])[0]["text"] for _ in range(3)]
    assert any(h != greedy[3]["text"] for h in hot)  # a real draw, not the argmax


def test_a_prompt_sent_while_a_long_one_decodes_joins_it_and_finishes_first(engine, monkeypatch):
    slots = engine._slots
    real = slots._steps

    def slow(rows, width):  # a slow model step, so the long row is surely still decoding when the short one arrives
        time.sleep(0.05)
        real(rows, width)

    monkeypatch.setattr(slots, "_steps", slow)
    done: list[str] = []
    long_p, short_p = P(PROMPTS[3], max_tokens=200), P(PROMPTS[2], max_tokens=4)

    def call(name, p):
        engine.generate_raw([p])
        done.append(name)

    t = threading.Thread(target=call, args=("long", long_p))
    t.start()
    core_wait_for(lambda: any(len(s.out) >= 2 for s in list(slots._active.values())), timeout=60, step=0.01)
    call("short", short_p)
    assert done == ["short"] and t.is_alive()  # answered while the long row still runs
    t.join(120)
    assert done == ["short", "long"]


def test_concurrent_callers_share_the_slots_and_get_their_own_answers(engine):
    ps = [P(t, max_tokens=10) for t in PROMPTS[:4]]
    alone = [engine.generate_raw([p])[0]["text"] for p in ps]
    got: dict[int, str] = {}

    def call(i):
        got[i] = engine.generate_raw([ps[i]])[0]["text"]

    threads = [threading.Thread(target=call, args=(i,)) for i in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(120)
    assert [got[i] for i in range(4)] == alone


def test_a_model_the_step_does_not_compute_keeps_transformers_generate():
    import torch
    from transformers import BloomConfig, BloomForCausalLM, LlamaConfig, LlamaForCausalLM

    from datagen.backends.slots import supported

    torch.manual_seed(0)
    tiny = dict(hidden_size=32, num_attention_heads=4, vocab_size=100)
    assert supported(LlamaForCausalLM(LlamaConfig(num_hidden_layers=1, intermediate_size=64, **tiny)))
    assert not supported(BloomForCausalLM(BloomConfig(n_layer=1, **tiny)))
    dyn = LlamaConfig(num_hidden_layers=1, intermediate_size=64, rope_scaling={"rope_type": "dynamic", "factor": 2.0}, **tiny)
    assert not supported(LlamaForCausalLM(dyn))  # its RoPE changes with the length: a captured step cannot follow


def test_a_prompt_longer_than_the_window_is_a_clear_error(engine):
    from datagen.errors import FatalBackendError

    with pytest.raises(FatalBackendError, match="does not fit the context window"):
        engine._slots.submit(list(range(engine._slots.seq_ctx)), max_tokens=4, temperature=0.0, top_p=1.0, stop=[])
