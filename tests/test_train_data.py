"""Reading exported data, templates, label masks token by token, packing without cross-sample attention."""

from __future__ import annotations

import json

import pytest
import torch

from datagen.errors import TrainError
from tests.train_helpers import make_baichuan, make_llama, make_tokenizer, write_alpaca
from train import data as D
from train import templates as T


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    return make_tokenizer(tmp_path_factory.mktemp("tok"), chatml=True)


def piece_ids(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"]


def check_masks(tok, template, dialog, sample):
    """Rebuild the expected trained positions piece by piece and compare every token."""
    bos, eos = D.special_texts(tok, template)
    ids, trained = [], []
    for i, (u, a) in enumerate(dialog.turns):
        up = piece_ids(tok, template.user_piece(u, first=i == 0, system=dialog.system, bos=bos, eos=eos))
        ap = piece_ids(tok, template.assistant_piece(a, bos=bos, eos=eos))
        ids += up + ap
        trained += [False] * len(up) + [True] * len(ap)
    assert sample["input_ids"] == ids
    for t in range(len(ids)):
        want = ids[t + 1] if t + 1 < len(ids) and trained[t + 1] else D.IGNORE
        assert sample["targets"][t] == want, f"position {t}"
    return ids, trained


@pytest.mark.parametrize("name", ["alpaca", "chatml", "llama2", "bloomz", "baichuan"])
def test_masks_single_turn_every_template(tok, name):
    template = T.get(name)
    dialog = D.Dialog([("name three colours", "red green blue")])
    s = D.encode_dialog(tok, template, dialog, 1024)
    ids, trained = check_masks(tok, template, dialog, s)
    got = tok.decode([s["targets"][t] for t in range(len(ids)) if s["targets"][t] != D.IGNORE])
    assert got.startswith(("red green blue", " red green blue"))
    assert "name three" not in got  # the prompt is never a target
    if name != "chatml":  # every template but chatml ends the reply with the tokenizer's EOS, and trains it
        assert s["targets"][len(ids) - 2] == tok.eos_token_id


def test_every_assistant_turn_is_trained_in_multi_turn(tok):
    template = T.get("chatml")
    dialog = D.Dialog([("hi there", "hello friend"), ("sum three and four", "seven"), ("why", "because")], system="be short")
    s = D.encode_dialog(tok, template, dialog, 1024)
    check_masks(tok, template, dialog, s)
    trained_text = tok.decode([t for t in s["targets"] if t != D.IGNORE])
    assert trained_text == "hello friend<|im_end|>seven<|im_end|>because<|im_end|>"
    prompt_text = tok.decode([i for i, t in zip(s["input_ids"], [D.IGNORE] + s["targets"][:-1]) if t == D.IGNORE])
    assert "be short" in prompt_text and "sum three and four" in prompt_text


def test_truncation_and_untrainable_samples(tok):
    template = T.get("alpaca")
    long = D.Dialog([("a " * 200, "b c")])
    assert D.encode_dialog(tok, template, long, 16) is None  # the reply is cut off entirely
    full = D.encode_dialog(tok, template, D.Dialog([("q", "alpha beta gamma delta " * 10)]), 4096)
    n_prompt = full["targets"].index(next(t for t in full["targets"] if t != D.IGNORE)) + 1
    s = D.encode_dialog(tok, template, D.Dialog([("q", "alpha beta gamma delta " * 10)]), n_prompt + 5)
    assert s["input_ids"] == full["input_ids"][:n_prompt + 5]
    assert s["targets"][:-1] == full["targets"][:n_prompt + 4] and s["targets"][-1] == D.IGNORE
    assert sum(t != D.IGNORE for t in s["targets"]) == 5  # the 5 reply tokens kept
    with pytest.raises(TrainError, match="no sample has a trainable token"):
        D.encode_all(tok, template, [long], 16)


def test_read_alpaca_jsonl_and_sharegpt(tmp_path):
    alp = write_alpaca(tmp_path / "a.json", n=5)
    ds = D.load_dialogs(alp)
    assert len(ds) == 5 and len(ds[0].turns) == 1
    rec = json.loads(alp.read_text())[0]
    assert ds[0].turns[0] == (rec["instruction"] + "\n\n" + rec["input"], rec["output"])
    jl = tmp_path / "a.jsonl"
    jl.write_text("".join(json.dumps(r) + "\n" for r in json.loads(alp.read_text())))
    assert [d.turns for d in D.load_dialogs(jl)] == [d.turns for d in ds]
    sg = tmp_path / "s.jsonl"
    sg.write_text(json.dumps({"conversations": [{"from": "system", "value": "sys"}, {"from": "human", "value": "u1"},
                                                {"from": "gpt", "value": "a1"}, {"from": "human", "value": "u2"}, {"from": "gpt", "value": "a2"}]}) + "\n"
                  + json.dumps({"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]}) + "\n")
    a, b = D.load_dialogs(sg)
    assert a.system == "sys" and a.turns == [("u1", "a1"), ("u2", "a2")] and b.turns == [("x", "y")]


@pytest.mark.parametrize("content,msg", [
    (None, "data file not found"),
    ("", "data file is empty"),
    ("[]", "no records"),
    ('[{"instruction": "a", "output": "b"},', "malformed JSON"),
    ('{"instruction": "a", "output": "b"}\n{"oops"\n', "malformed JSON .* line 2"),
    ('[{"text": "no fields"}]', "expected alpaca fields"),
    ('[{"instruction": "a", "input": "", "output": null}]', "must be strings"),
    ('[{"conversations": [{"from": "gpt", "value": "x"}]}]', "must follow a user message"),
])
def test_bad_data_is_one_clear_error(tmp_path, content, msg):
    p = tmp_path / "d.json"
    if content is not None:
        p.write_text(content)
    with pytest.raises(TrainError, match=msg):
        D.load_dialogs(p)


def test_auto_template_picks_by_model_and_tokenizer(tok, tmp_path):
    assert T.get("auto", model_type="llama", tokenizer=tok).name == "chatml"  # the tokenizer knows <|im_start|>
    plain = make_tokenizer(tmp_path / "plain")
    assert T.get("auto", model_type="llama", tokenizer=plain).name == "llama2"
    assert T.get("auto", model_type="bloom", tokenizer=plain).name == "bloomz"
    assert T.get("auto", model_type="baichuan", tokenizer=plain).name == "baichuan"
    assert T.get("auto", model_type="gpt2", tokenizer=plain).name == "alpaca"
    with pytest.raises(TrainError, match="unknown template 'vicuna'"):
        T.get("vicuna")


def test_pack_rows_fill_and_positions(tok):
    template = T.get("chatml")
    samples = D.encode_all(tok, template, [D.Dialog([(f"q {'a ' * i}", f"r {'b ' * (i % 5)}")], system="") for i in range(20)], 64)
    assert len(samples) == 20
    rows = D.pack_rows(samples, 64)
    assert len(rows) < 20
    assert sorted(id(s) for r in rows for s in r) == sorted(id(s) for s in samples)  # every sample exactly once
    assert all(sum(len(s["input_ids"]) for s in r) <= 64 for r in rows)
    b = D.packed_batch(rows[:3])
    for r, row in enumerate(rows[:3]):
        at = 0
        for s in row:
            k = len(s["input_ids"])
            assert b["position_ids"][r, at:at + k].tolist() == list(range(k))
            assert b["targets"][r, at + k - 1] == D.IGNORE  # a sample's last token never predicts the next sample
            at += k
    fixed = D.packed_batch(rows[:3], pad_to=64)  # --compile: one shape for every step
    assert fixed["input_ids"].shape == (3, 64) and (fixed["targets"][:, b["input_ids"].shape[1]:] == D.IGNORE).all()


def _losses(model, samples):
    from train.qlora import parts, token_loss_sum

    backbone, head = parts(model)
    with torch.no_grad():
        padded = token_loss_sum(backbone, head, D.pad_batch(samples, 0), chunk=7, checkpoint=False)
        packed = token_loss_sum(backbone, head, D.packed_batch(D.pack_rows(samples, 1024)), chunk=7, checkpoint=False)
        # The same row with one position run 0..N: every sample attends to the ones before it.
        leaky = D.packed_batch([samples])
        leaky["position_ids"] = torch.arange(leaky["input_ids"].shape[1])[None]
        crossed = token_loss_sum(backbone, head, leaky, chunk=7, checkpoint=False)
    return float(padded), float(packed), float(crossed)


@pytest.mark.parametrize("kind", ["llama", "baichuan"])
def test_packed_loss_equals_padded_loss(tmp_path, kind):
    """The proof of no cross-sample attention: packing changes nothing in the loss."""
    from transformers import AutoModelForCausalLM

    path = (make_llama if kind == "llama" else make_baichuan)(tmp_path / kind)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation=None if kind == "baichuan" else "sdpa",
                                                 trust_remote_code=kind == "baichuan").eval()
    tk = make_tokenizer(tmp_path / "t")
    template = T.get("alpaca")
    dialogs = [D.Dialog([(f"repeat {'alpha beta ' * (i + 1)}", f"{'gamma ' * (3 + 2 * i)}done")]) for i in range(5)]
    samples = D.encode_all(tk, template, dialogs, 256)
    padded, packed, crossed = _losses(model, samples)
    assert packed == pytest.approx(padded, rel=1e-5)
    assert abs(crossed - padded) / padded > 1e-4  # the check can fail: attention across samples shows
