"""The llama.cpp engine (datagen/backends/llamacpp.py) on the real embedded GGUF: its batched greedy output is
llama.cpp's own single-sequence completion, token for token; stops, budgets and token counts are right."""

from __future__ import annotations

import asyncio
import time

import pytest

from datagen.backends import FatalBackendError, local_engine, make_backend
from datagen.backends.llamacpp import LlamaCppBackend
from datagen.records import Prompt, Stage

# Different lengths, budgets and stops, more prompts than slots (3), so sequences join as others end.
CASES = [
    ("List three fruits.", 24, []),
    ("Name a primary colour.", 40, []),
    ("Say hello.", 4, []),
    ("Count from 1 to 20, one number per line.", 60, ["7"]),
    ("Write a haiku about the sea.", 30, ["\n\n"]),
    ("What is 2 + 2? Answer with one word.", 16, []),
]


def greedy(text: str, max_tokens: int, stop: list[str]) -> Prompt:
    return Prompt(stage=Stage.bootstrap, text=text, max_tokens=max_tokens, temperature=0.0, top_p=1.0, stop=stop)


@pytest.fixture(scope="module")
def engine():
    e = LlamaCppBackend(None, batch_size=3, threads=1)
    asyncio.run(e.check())
    return e


@pytest.fixture(scope="module")
def reference(engine):
    """llama.cpp's own completion, one sequence at a time, on the same file and the same formatted prompt."""
    from llama_cpp import Llama

    ll = Llama(str(engine.file), n_ctx=2048, n_threads=1, verbose=False)
    out = []
    for text, max_tokens, stop in CASES:
        r = ll.create_completion(engine.chat_format(text), max_tokens=max_tokens, temperature=0.0, stop=stop)
        out.append(r)
    ll.close()
    return out


@pytest.fixture(scope="module")
def batched(engine):
    return asyncio.run(engine.complete([greedy(*c) for c in CASES]))


def test_batched_greedy_equals_llama_cpp_single_sequence_completion(batched, reference):
    assert len(batched) == len(CASES)
    for g, r, case in zip(batched, reference, CASES):
        want = r["choices"][0]
        assert g.text == want["text"], case
        assert g.finish_reason == want["finish_reason"], case
        assert g.tokens_in == r["usage"]["prompt_tokens"], case
        assert g.tokens_out == r["usage"]["completion_tokens"], case


def test_stops_and_per_prompt_budgets_are_respected(batched):
    by_text = {c[0]: (g, c) for g, c in zip(batched, CASES)}
    hello, _ = by_text["Say hello."]
    assert hello.tokens_out == 4 and hello.finish_reason == "length"
    count, (_, _, stop) = by_text["Count from 1 to 20, one number per line."]
    assert count.finish_reason == "stop" and "6" in count.text and "7" not in count.text  # cut at the stop, early
    assert count.tokens_out < 60
    for g, (_, max_tokens, stops) in zip(batched, CASES):
        assert 0 < g.tokens_out <= max_tokens
        assert not any(s in g.text for s in stops)


def test_token_counts_match_the_transformers_engine(engine):
    """Both engines count the same prompt tokens (the pipeline fits budgets with count_tokens)."""
    from datagen.backends.local import LocalBackend, chat_format

    hf = LocalBackend(None)
    hf.load_tokenizer()
    texts = [c[0] for c in CASES] + ["Ünïcödé and emoji 🚀 and code `x = 1`", "中文指令：写一首诗。"]
    for t in texts:
        assert engine.chat_format(t) == chat_format(hf._tok, t)  # the GGUF's template, rendered as transformers does
        assert engine.count_tokens(t) == hf.count_tokens(t), t
    assert engine.count_tokens(CASES[0][0]) == len(engine.tokenize(CASES[0][0]))


def test_sampling_follows_the_prompt_settings(engine):
    p = Prompt(stage=Stage.bootstrap, text="Tell me a story.", max_tokens=12, temperature=0.7, top_p=0.95)
    gens = engine.generate([p, p])
    assert all(g.text.strip() and 0 < g.tokens_out <= 12 for g in gens)


def test_prompt_longer_than_the_window_is_a_clear_error():
    e = LlamaCppBackend(None, batch_size=1, context_window=64)
    with pytest.raises(FatalBackendError, match="does not fit the context window of 64"):
        e.generate([greedy("word " * 200, 8, [])])


def test_engine_choice():
    assert local_engine(None, "auto") == "llamacpp"  # the CPU default for the embedded GGUF (no CUDA in CI)
    assert local_engine(None, "transformers") == "transformers"
    assert type(make_backend("local", None, engine="auto")).__name__ == "LlamaCppBackend"
    with pytest.raises(FatalBackendError, match="Ray replicas only"):
        local_engine(None, "vllm")


def test_prompts_sent_while_a_batch_runs_join_it_and_finish_first(engine, reference):
    """Continuous feeding: a short prompt submitted mid-run is admitted into the running batch and answered
    while the long one still decodes (each model step slowed down, so the order cannot be an accident),
    and joining a batch mid-way changes nothing in its greedy output."""
    real_step = engine._step
    steps = []

    def slow_step():
        time.sleep(0.05)
        real_step()
        steps.append([s.index for s in engine._active.values()])

    engine._step = slow_step
    try:
        long = engine.submit(greedy("Write a long essay about volcanoes.", 120, []), index=0)
        deadline = time.monotonic() + 120
        while len(long.out) < 3:  # decoding, not just queued
            assert time.monotonic() < deadline and not long.done.is_set()
            time.sleep(0.01)
        short = engine.submit(greedy(*CASES[2]), index=1)  # "Say hello.", 4 tokens
        assert short.done.wait(120)
        assert not long.done.is_set(), "the short prompt waited for the running batch to end"
        assert long.done.wait(300)
    finally:
        engine._step = real_step
    assert any(set(a) == {0, 1} for a in steps)  # the two really shared steps
    got = engine.result(short)
    want = reference[2]
    assert got["text"] == want["choices"][0]["text"] and got["tokens_out"] == want["usage"]["completion_tokens"]
    assert engine.result(long)["tokens_out"] > 3


def test_concurrent_callers_share_the_engine(engine, batched):
    """Several complete() calls at once (the client's concurrency): each gets its own answers, unchanged."""

    async def both():
        return await asyncio.gather(engine.complete([greedy(*c) for c in CASES[:3]]), engine.complete([greedy(*c) for c in CASES[3:]]))

    a, b = asyncio.run(both())
    assert [g.text for g in a + b] == [g.text for g in batched]


def test_llama_cpp_takes_every_core_and_torch_leaves_one(monkeypatch):
    from datagen import config

    monkeypatch.delenv("DATAGEN_THREADS", raising=False)
    monkeypatch.setattr(config.os, "cpu_count", lambda: 2)
    assert (config.engine_threads(every_core=True), config.engine_threads()) == (2, 1)
    monkeypatch.setattr(config.os, "cpu_count", lambda: 1)
    assert config.engine_threads() == 1
    monkeypatch.setenv("DATAGEN_THREADS", "3")
    assert (config.engine_threads(every_core=True), config.engine_threads()) == (3, 3)
