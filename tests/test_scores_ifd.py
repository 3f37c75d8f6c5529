"""IFD (issue 20): the batched, padded scorer agrees with a direct computation written another way
(one sample at a time through the model's own loss, the chat template applied by the tokenizer);
`datagen score` stores one success per sample, and a scorer killed with SIGKILL resumes with
exactly the missing ones; the embedded SmolLM2 gives the same values whatever the batching."""

from __future__ import annotations

import functools
import json
import math
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import REPO, core_cli, core_env
from train_helpers import make_llama

from datagen import storage
from datagen.records import Candidate, Instance, Status
from datagen.scores import ifd
from datagen.scores import models as M
from datagen.storage import scores as S

CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")

SAMPLES = [
    ("Write a short poem about the sky.", [("", "blue sky and the sun, a green river of stone")]),
    ("Sum three numbers.", [("1 2 3", "the answer is six")]),
    ("Name a colour.", [("<noinput>", "green")]),
    ("Explain why the moon is bright at night and how the sun makes a day of it.",
     [("the sun and the moon", "the moon is a stone in the sky and the sun is bright"), ("day", "the sun")]),
]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from transformers import AutoTokenizer

    path = make_llama(tmp_path_factory.mktemp("tiny") / "llama", hidden=32, layers=2, chatml=True)
    tok = AutoTokenizer.from_pretrained(path)
    tok.chat_template = CHATML
    tok.save_pretrained(path)
    return path


@functools.cache
def _load(path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoTokenizer.from_pretrained(path), AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


def reference(path, instruction, input, output):
    """Per instance, unbatched: the model's own mean loss over the output tokens, in both contexts."""
    import torch

    tok, lm = _load(path)
    user = instruction if input.strip() in ("", "<noinput>") else f"{instruction}\n\n{input}"
    prompt = tok.apply_chat_template([{"role": "user", "content": user}], add_generation_prompt=True, tokenize=True)
    prompt = list(prompt["input_ids"] if hasattr(prompt, "keys") else prompt)
    out = tok(output, add_special_tokens=False).input_ids

    def loss(prefix):
        ids = torch.tensor([prefix + out])
        labels = torch.tensor([[-100] * len(prefix) + out])
        with torch.no_grad():
            return float(lm(input_ids=ids, labels=labels).loss), len(out)

    (lc, n), (lp, _) = loss(prompt), loss([tok.bos_token_id])
    return lc, lp, n


def test_ifd_equals_a_direct_computation(tiny):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny)
    lm = AutoModelForCausalLM.from_pretrained(tiny, dtype=torch.float32).eval()
    for bs in (1, 3, 16):  # one at a time, mixed lengths padded together, everything in one pass
        got = ifd.compute(lm, tok, SAMPLES, device="cpu", batch_size=bs)
        for (instruction, instances), g in zip(SAMPLES, got):
            refs = [reference(tiny, instruction, i, o) for i, o in instances]
            n = sum(r[2] for r in refs)
            ppl_c = math.exp(sum(r[0] * r[2] for r in refs) / n)
            ppl_p = math.exp(sum(r[1] * r[2] for r in refs) / n)
            assert g.error is None
            assert g.extra["ppl_cond"] == pytest.approx(ppl_c, rel=1e-5)
            assert g.extra["ppl_plain"] == pytest.approx(ppl_p, rel=1e-5)
            assert g.value == pytest.approx(ppl_c / ppl_p, rel=1e-5)
            assert g.extra["tokens"] == n
            if len(instances) > 1:
                assert [x["ifd"] for x in g.extra["instances"]] == pytest.approx([math.exp(r[0] - r[1]) for r in refs], rel=1e-5)
    # The same inputs on the same device give the same values, to 1e-6, whatever the batching.
    a = ifd.compute(lm, tok, SAMPLES, device="cpu", batch_size=2)
    b = ifd.compute(lm, tok, SAMPLES[::-1], device="cpu", batch_size=5)[::-1]
    assert [x.value for x in a] == pytest.approx([x.value for x in b], rel=1e-6, abs=0)


def test_unscorable_samples_are_failures(tiny):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny)
    lm = AutoModelForCausalLM.from_pretrained(tiny, dtype=torch.float32).eval()
    got = ifd.compute(lm, tok, [("No instances.", []), ("Empty output.", [("", "   ")]), SAMPLES[0]], device="cpu")
    assert [g.error for g in got] == ["no instances", "no output token to score", None]
    # Too long: cut to max_length, the output keeping at least half of it.
    e = ifd.encode(tok, "word " * 300, "", "sky " * 300, max_length=64)
    assert len(e.cond) == 64 and len(e.cond) - e.cond_start == 32 and e.plain[1:] == e.cond[e.cond_start:]


def make_run(url, n, name="r"):
    engine = storage.connect(url)
    run, _ = storage.open_run(engine, name, lang="en", api="local", model="m", target=n, config={})
    words = "alpha beta gamma delta apple river stone cloud green blue".split()
    for i in range(n):
        text = " ".join(words[(i + k) % 10] for k in range(3 + i % 5))
        c = Candidate(instruction=f"Write {i}: {text}.", lang="en", status=Status.accepted,
                      instances=[Instance(input=words[i % 10], output=f"{text} {words[(i * 7) % 10]}")])
        storage.add_sample(engine, run.id, c)
    storage.add_sample(engine, run.id, Candidate(instruction="Rejected one.", lang="en", status=Status.rejected,
                                                 instances=[Instance(input="", output="x")]))
    return engine, run.id


def test_score_cli_stores_once_and_resumes_after_sigkill(tiny, tmp_path):
    url = f"sqlite:///{tmp_path / 's.db'}"
    n = 200
    engine, run_id = make_run(url, n)
    name = str(tiny.resolve())
    args = [sys.executable, "-m", "datagen.cli", "score", "--run", "r", "--scorer", "ifd", "--model", str(tiny), "--batch-size", "1", "--db", url]
    proc = subprocess.Popen(args, cwd=REPO, env=core_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if n - S.count_unscored(engine, run_id, "ifd", name) >= 4:
            break
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    out, err = proc.communicate(timeout=30)
    done = n - S.count_unscored(engine, run_id, "ifd", name)
    assert 4 <= done < n, f"killed after {done} of {n}: {err[-500:]}"

    # The re-run (in-process: no process behaviour left to test) scores exactly the missing ones.
    res = ifd.score_run(engine, "r", model=str(tiny), batch_size=16)
    assert (res.scored, res.failed, res.skipped) == (n - done, 0, 0)
    assert S.count_unscored(engine, run_id, "ifd", name) == 0
    rows = S.scores_for(engine, list(range(1, n + 2)), failures=True)
    assert all(len(rows[i]) == 1 for i in range(1, n + 1))  # each kept sample scored exactly once, no failure rows
    assert rows[n + 1] == []  # the rejected sample is not scored
    assert all(0 < r[0]["value"] and r[0]["extra"]["ppl_cond"] > 0 for r in rows.values() if r)

    third = core_cli("score", "--run", "r", "--scorer", "ifd", "--model", str(tiny), "--db", url)
    assert third.returncode == 0 and "scored=0 " in third.stdout, third.stdout + third.stderr
    storage.dispose_all()


def test_bad_score_input_is_refused(tiny, tmp_path):
    from datagen.errors import InputError
    from datagen.scores import cli as scli

    url = f"sqlite:///{tmp_path / 'b.db'}"
    engine, _ = make_run(url, 1)
    for kw, msg in (
        ({"run": "nope"}, "no run named 'nope'"),
        ({"run": "r", "scorer": "what"}, "unknown scorer"),
        ({"run": "r", "model": str(tmp_path / "missing")}, "local model not found"),
        ({"run": "r", "batch_size": 0}, "--batch-size"),
    ):
        args = {"scorer": "ifd", "model": None, "batch_size": 4, "max_length": 256, "limit": None, "progress": False, "db": url, **kw}
        with pytest.raises(InputError, match=msg):
            scli.score(**args)
    storage.dispose_all()
    p = core_cli("score", "--run", "nope", "--db", url)
    assert p.returncode == 1 and p.stderr.strip() == "error: no run named 'nope'", p.stderr


def test_embedded_smollm2_is_deterministic_and_plausible():
    from datagen.scores import models as M

    loaded = M.load(None, causal=True)
    few = SAMPLES[:2]
    a = ifd.compute(loaded.model, loaded.tokenizer, few, device=loaded.device, batch_size=4)
    again = ifd.compute(loaded.model, loaded.tokenizer, few, device=loaded.device, batch_size=4)
    other = ifd.compute(loaded.model, loaded.tokenizer, few, device=loaded.device, batch_size=1)
    assert all(x.error is None for x in a)
    # Same inputs, same batching, same device: the same value to 1e-6 (in fact bit for bit).
    assert [x.value for x in a] == pytest.approx([x.value for x in again], rel=1e-6, abs=0)
    # Another batching pads differently: float32 rounding only (measured ~1e-5 relative).
    assert [x.value for x in a] == pytest.approx([x.value for x in other], rel=1e-4, abs=0)
    # A relevant instruction helps a trained model predict the answer: IFD below 1 for the poem.
    assert 0 < a[0].value < 1


def test_select_and_export_cli_embed_with_a_model_once(tiny, tmp_path):
    url = f"sqlite:///{tmp_path / 'e.db'}"
    engine, run_id = make_run(url, 12)
    ifd.score_run(engine, "r", model=str(tiny), batch_size=8)
    storage.dispose_all()
    p = core_cli("select", "--run", "r", "--by", "ifd", "--diversity", "0.99", "--max", "5", "--name", "best",
                 "--embed-model", str(tiny), "--db", url)
    assert p.returncode == 0 and "selection=best " in p.stdout, p.stdout + p.stderr
    engine = storage.connect(url)
    name = str(tiny.resolve())
    ids = list(range(1, 13))
    sel = S.get_selection(engine, "best")
    n_cand = sel["rule"]["candidates"]  # IFD < 1 under the random model
    assert n_cand >= 2 and sel["size"] == min(5, n_cand) and f"kept={sel['size']} " in p.stdout
    cached = S.get_embeddings(engine, ids, name)
    assert len(cached) == n_cand and {v.shape for v in cached.values()} == {(32,)}  # only the candidates were embedded
    # Cached: a later call computes only the missing ones and returns the stored vectors for the rest.
    from datagen.scores import embed

    _, again = embed.ensure(engine, ids, model=str(tiny))
    assert len(again) == 12 and all(np.array_equal(again[i], cached[i]) for i in cached)
    cached = again
    # The embedding is the masked mean of the last hidden state, whatever the batch's padding.
    texts = S.sample_texts(engine, ids)
    loaded = M.load(str(tiny), causal=False)
    one = embed.embed_texts(loaded.model, loaded.tokenizer, [embed.sample_text(*texts[1])], device="cpu", batch_size=1)[0]
    np.testing.assert_allclose(one, cached[1], rtol=1e-5, atol=1e-6)
    kept = S.selection_members(engine, S.get_selection(engine, "best")["id"])
    storage.dispose_all()
    out = tmp_path / "best.json"
    p = core_cli("export", "--selection", "best", "--out", str(out), "--db", url)
    assert p.returncode == 0 and f"wrote {sel['size']} records" in p.stdout, p.stdout + p.stderr
    assert {r["instruction"] for r in json.loads(out.read_text())} == {texts[i][0] for i in kept}
    p = core_cli("export", "--min-score", "ifd=0", "--min-score", "judge:accuracy=4", "--out", str(out), "--db", url)
    assert p.returncode == 0 and "wrote 0 records" in p.stdout, p.stdout + p.stderr
