"""LoRA targets per family, a 4-bit step on the CPU, resume and merge round-trips, on tiny random models."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from datagen.errors import TrainError
from tests.train_helpers import make_baichuan, make_bloom, make_llama, write_alpaca
from train import model as M
from train import qlora as Q


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    return make_llama(tmp_path_factory.mktemp("llama"))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_alpaca(tmp_path_factory.mktemp("data") / "train.json", n=12)


def cfg(data, model, out, **kw) -> Q.Config:
    base = dict(data=str(data), model_name_or_path=str(model), output_dir=str(out), bits=16, lora_rank=8, lora_alpha=16,
                max_seq_length=128, per_device_batch_size=4, learning_rate=1e-2, max_steps=4, save_steps=2, seed=3)
    base.update(kw)
    return Q.Config(**base)


def log(out):
    return [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("kind,want", [
    ("llama", {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}),
    ("bloom", {"query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"}),
    ("baichuan", {"W_pack", "o_proj", "gate_proj", "up_proj", "down_proj"}),
])
def test_lora_on_every_linear_but_lm_head(tmp_path, kind, want):
    path = {"llama": make_llama, "bloom": make_bloom, "baichuan": make_baichuan}[kind](tmp_path / kind)
    assert M.needs_remote_code(path) == (kind == "baichuan")
    prec = M.pick_precision(16)
    model = M.load_base(path, prec, trust_remote_code=M.needs_remote_code(path))
    assert set(M.lora_targets(model)) == want
    peft_model = M.add_lora(model, rank=4, alpha=8, dropout=0.0, gradient_checkpointing=True)
    trainable = {n for n, p in peft_model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    assert not any("lm_head" in n for n in trainable)


def test_baichuan_trains_without_pad_or_bos(tmp_path, data):
    path = make_baichuan(tmp_path / "bc")
    tok = M.load_tokenizer(path, trust_remote_code=True)
    assert tok.pad_token == tok.eos_token  # it had none
    out = tmp_path / "run"
    Q.run(cfg(data, path, out, max_steps=3, packing=True))
    meta = json.loads((out / "adapter" / Q.META_FILE).read_text())
    assert meta["template"] == "baichuan"
    rows = log(out)
    assert len(rows) == 3 and all(r["loss"] > 0 for r in rows)


def test_bloom_trains_padded_and_refuses_packing(tmp_path, data):
    path = make_bloom(tmp_path / "bloom")
    Q.run(cfg(data, path, tmp_path / "run", max_steps=2))
    assert json.loads((tmp_path / "run" / "adapter" / Q.META_FILE).read_text())["template"] == "bloomz"
    with pytest.raises(TrainError, match="--packing needs a model that takes position_ids"):
        Q.run(cfg(data, path, tmp_path / "run2", packing=True))


def test_4bit_nf4_double_quant_on_cpu(tmp_path, data, llama):
    import bitsandbytes as bnb

    p = Q.prepare(cfg(data, llama, tmp_path / "q4", bits=4))
    layers = [m for m in p["model"].modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert len(layers) == 14  # 7 per layer, 2 layers
    w = layers[0].weight
    assert w.quant_type == "nf4" and w.quant_state.nested  # nested = double quantization
    assert "4-bit NF4" in p["prec"].describe()
    last = Q.fit(cfg(data, llama, tmp_path / "q4", bits=4, max_steps=3), p["model"], p["samples"], prec=p["prec"],
                 pad_id=p["tok"].pad_token_id, meta=p["meta"])
    rows = log(tmp_path / "q4")
    assert last["step"] == 3 and all(r["loss"] == r["loss"] and r["loss"] > 0 for r in rows)  # finite, not NaN
    assert rows[-1]["loss"] < rows[0]["loss"]


def test_8bit_step_on_cpu(tmp_path, data, llama):
    import bitsandbytes as bnb

    p = Q.prepare(cfg(data, llama, tmp_path / "q8", bits=8))
    assert sum(isinstance(m, bnb.nn.Linear8bitLt) for m in p["model"].modules()) == 14
    last = Q.fit(cfg(data, llama, tmp_path / "q8", bits=8, max_steps=2), p["model"], p["samples"], prec=p["prec"],
                 pad_id=p["tok"].pad_token_id, meta=p["meta"])
    assert last["step"] == 2 and 0 < last["loss"] < 100


def test_resume_continues_exactly(tmp_path, data, llama):
    """Stop after step 2 (only checkpoint-2 survives), resume: steps 3-4 match an uninterrupted run."""
    a = tmp_path / "a"
    Q.run(cfg(data, llama, a, lora_dropout=0.1, warmup_steps=3))  # dropout and warmup: RNG and scheduler must come back
    assert [c.name for c in Q.checkpoints(a)] == ["checkpoint-2", "checkpoint-4"]
    b = tmp_path / "b"
    shutil.copytree(a, b)
    shutil.rmtree(b / "checkpoint-4")
    shutil.rmtree(b / "adapter")
    (b / "train_log.jsonl").write_text("".join(line + "\n" for line in (b / "train_log.jsonl").read_text().splitlines()[:2]))
    with pytest.raises(TrainError, match="already has checkpoints"):
        Q.run(cfg(data, llama, b, lora_dropout=0.1, warmup_steps=3))
    Q.run(cfg(data, llama, b, lora_dropout=0.1, warmup_steps=3, resume=True))
    ra, rb = log(a), log(b)
    assert [r["step"] for r in rb] == [1, 2, 3, 4]
    for x, y in zip(ra[2:], rb[2:]):
        assert y["lr"] == x["lr"]
        assert y["loss"] == pytest.approx(x["loss"], rel=1e-5, abs=1e-6)
    # A fresh start from step 2's adapter alone (no optimizer state) would not give the same step 4.
    assert ra[1]["lr"] != ra[3]["lr"]


def test_merge_matches_base_plus_adapter(tmp_path, data, llama):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    out = tmp_path / "run"
    Q.run(cfg(data, llama, out, max_steps=3, save_steps=0))
    from train.merge import merge

    merged_dir = merge(None, out / "adapter", tmp_path / "merged", dtype="fp32")
    ids = torch.tensor([[1, 5, 9, 20, 33, 40, 7]])
    base = AutoModelForCausalLM.from_pretrained(llama, dtype=torch.float32).eval()
    with torch.no_grad():
        plain = base(ids).logits
        with_adapter = PeftModel.from_pretrained(base, out / "adapter").eval()(ids).logits
        merged = AutoModelForCausalLM.from_pretrained(merged_dir, dtype=torch.float32).eval()(ids).logits
    assert (with_adapter - plain).abs().max() > 1e-3  # the adapter learned something
    torch.testing.assert_close(merged, with_adapter, rtol=1e-4, atol=1e-4)
    with pytest.raises(TrainError, match="refusing to merge into a 4-bit model"):
        merge(None, out / "adapter", tmp_path / "m4", bits=4)


def test_log_plot_and_checkpoint_contents(tmp_path, data, llama):
    out = tmp_path / "run"
    Q.run(cfg(data, llama, out, max_steps=2, save_steps=1, save_total_limit=1))
    assert [c.name for c in Q.checkpoints(out)] == ["checkpoint-2"]  # older ones pruned
    files = {p.name for p in (out / "checkpoint-2").iterdir()}
    assert {"adapter_model.safetensors", "adapter_config.json", Q.STATE_FILE, "rank0.pt"} <= files
    assert not any(n.startswith("model") for n in files)  # adapter weights only, never the base
    state = torch.load(out / "checkpoint-2" / Q.STATE_FILE, weights_only=False)
    assert state["step"] == 2 and state["optimizer"]["state"] and state["world"] == 1
    mine = torch.load(out / "checkpoint-2" / "rank0.pt", weights_only=False)
    assert "rng" in mine and "data" in mine
    assert not list(out.glob(".checkpoint-*"))  # no half-written folder left behind
    assert (out / "loss.png").read_bytes()[:4] == b"\x89PNG"
    r = log(out)[-1]
    assert r["tokens_per_s"] > 0 and r["tokens"] > r["target_tokens"] > 0


def test_deepspeed_config_keeps_our_autocast_batch_and_clipping(tmp_path):
    """DeepSpeed switches torch.autocast off inside its engine unless its config says otherwise:
    the config we hand it must carry our compute dtype (as DeepSpeed itself parses it) and our flags."""
    from deepspeed.runtime.config import get_lower_precision_safe_modules, get_torch_autocast_dtype, get_torch_autocast_enabled

    from train.distributed import deepspeed_config

    ds = deepspeed_config("zero2", micro_batch=4, grad_accum=2, max_grad_norm=0.3, world=2, autocast=torch.bfloat16)
    assert get_torch_autocast_enabled(ds) and get_torch_autocast_dtype(ds) == torch.bfloat16
    assert get_lower_precision_safe_modules(ds) == []  # LoRA gradients reduced in fp32, as under DDP
    assert (ds["train_batch_size"], ds["train_micro_batch_size_per_gpu"], ds["gradient_accumulation_steps"], ds["gradient_clipping"]) == (16, 4, 2, 0.3)
    assert ds["zero_optimization"]["stage"] == 2
    assert "torch_autocast" not in deepspeed_config("zero2", micro_batch=4, grad_accum=1, max_grad_norm=0.3, world=1)  # fp32 on the CPU
    theirs = tmp_path / "ds.json"
    theirs.write_text(json.dumps({"zero_optimization": {"stage": 2}, "torch_autocast": {"enabled": False}}))
    with pytest.raises(TrainError, match="remove the 'torch_autocast' section"):
        deepspeed_config(str(theirs), micro_batch=4, grad_accum=1, max_grad_norm=0.3, world=1)



def test_missing_deepspeed_is_named_before_the_model_loads(monkeypatch, tmp_path, data, llama):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "deepspeed" else real(name, *a))
    monkeypatch.setattr(M, "load_base", lambda *a, **k: pytest.fail("the model was loaded before the missing package was named"))
    with pytest.raises(TrainError, match=r"--deepspeed needs the deepspeed package: pip install 'datagen\[deepspeed\]'"):
        Q.prepare(cfg(data, llama, tmp_path / "o", deepspeed="zero2"))
