"""`train` as a user runs it: a whole qlora -> generate -> merge loop on a tiny model, a config file,
and bad input answered with one line and a non-zero exit, never a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.train_helpers import make_llama, write_alpaca

REPO = Path(__file__).resolve().parents[1]


def train_cli(*args: str, input: str | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "train.cli", *args], cwd=REPO, env=env, capture_output=True, text=True,
                          input=input, timeout=timeout)


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    return make_llama(tmp_path_factory.mktemp("llama"), chatml=True)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_alpaca(tmp_path_factory.mktemp("data") / "train.json", n=12)


def in_process(*args: str, input: str | None = None) -> subprocess.CompletedProcess:
    """`train ARGS` through the same Typer app in this process: generate, chat and merge load a model
    either way, and a process would add importing torch and transformers (3-5 s each) to each call."""
    from typer.testing import CliRunner

    from train.cli import app

    saved = dict(os.environ)
    try:
        r = CliRunner().invoke(app, list(args), input=input)
    finally:  # train sets HF_HUB_OFFLINE and the like for its own process; later tests' children must not inherit them
        os.environ.clear()
        os.environ.update(saved)
    assert r.exception is None or isinstance(r.exception, SystemExit), (args, r.exception)
    return subprocess.CompletedProcess(["train", *args], r.exit_code, r.stdout, r.stderr)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, llama, data):
    """One real `train qlora` process, shared by the tests that need an adapter: (its result, its output dir)."""
    out = tmp_path_factory.mktemp("trained") / "run"
    r = train_cli("qlora", "--data", str(data), "--model-name-or-path", str(llama), "--output-dir", str(out), "--bits", "16",
                  "--max-steps", "3", "--per-device-batch-size", "4", "--lora-rank", "8", "--packing", "--learning-rate", "5e-3")
    return r, out


def test_qlora_then_generate_chat_and_merge(tmp_path, trained):
    r, out = trained
    assert r.returncode == 0, r.stderr
    assert "device cpu" in r.stderr and "float32" in r.stderr and "template chatml" in r.stderr  # says what it runs on
    rows = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [x["step"] for x in rows] == [1, 2, 3]
    assert (out / "loss.png").is_file() and (out / "adapter" / "adapter_model.safetensors").is_file()

    g = in_process("generate", "--adapter", str(out / "adapter"), "--prompt", "repeat the words sky moon", "--max-new-tokens", "8")
    assert g.returncode == 0, g.stderr
    # Random weights say nothing in particular, but greedy decoding is deterministic, and the run's
    # output dir names the same adapter as its adapter/ folder.
    g_dir = in_process("generate", "--adapter", str(out), "--prompt", "repeat the words sky moon", "--max-new-tokens", "8")
    assert g_dir.returncode == 0 and g_dir.stdout == g.stdout and g.stdout.endswith("\n"), g_dir.stderr
    c = in_process("chat", "--adapter", str(out / "adapter"), "--max-new-tokens", "4", input="hello\nsecond turn\n\n")
    assert c.returncode == 0, c.stderr
    assert c.stdout.count("bot> ") == 2 and "chatml template" in c.stderr

    m = in_process("merge", "--adapter", str(out), "--out", str(tmp_path / "merged"), "--dtype", "fp32")  # the output dir itself
    assert m.returncode == 0, m.stderr
    assert (tmp_path / "merged" / "config.json").is_file()
    g2 = in_process("generate", "--base", str(tmp_path / "merged"), "--prompt", "repeat the words sky moon", "--max-new-tokens", "8")
    assert g2.returncode == 0 and g2.stdout == g.stdout  # merged model, same template, same greedy answer


def test_config_file_and_flags_override(tmp_path, llama, data):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"data: {data}\nmodel-name-or-path: {llama}\noutput_dir: {tmp_path / 'run'}\nbits: 16\nmax_steps: 5\n"
                   "lora_rank: 4\nper_device_batch_size: 2\n")
    r = in_process("qlora", "--config", str(cfg), "--max-steps", "2")
    assert r.returncode == 0, r.stderr
    rows = (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()
    assert len(rows) == 2  # the flag beat the file's max_steps 5
    args = json.loads((tmp_path / "run" / "train_args.json").read_text())
    assert args["lora_rank"] == 4 and args["per_device_batch_size"] == 2


def _bad_cases(tmp_path, llama, data):
    bad_json = tmp_path / "bad.json"
    bad_json.write_text('[{"instruction": "x", "output": "y"},')
    empty = tmp_path / "empty.json"
    empty.write_text("[]")
    bad_cfg = tmp_path / "bad.yaml"
    bad_cfg.write_text("data: x\nlearning_rat: 1\n")
    base = ["--model-name-or-path", str(llama), "--output-dir", str(tmp_path / "o"), "--bits", "16"]

    def ds_file(cfg: dict, n=iter(range(100))) -> Path:
        f = tmp_path / f"ds{next(n)}.json"
        f.write_text(json.dumps(cfg))
        return f

    return [
        (["qlora", "--data", str(tmp_path / "missing.json"), *base], "data file not found"),
        (["qlora", "--data", str(bad_json), *base], "malformed JSON"),
        (["qlora", "--data", str(empty), *base], "no records"),
        (["qlora", "--data", str(data), *base, "--template", "vicuna"], "unknown template 'vicuna'"),
        (["qlora", "--data", str(data), "--model-name-or-path", str(tmp_path / "nope"), "--output-dir", str(tmp_path / "o")], "model not found"),
        (["qlora", "--config", str(bad_cfg)], "unknown keys .*learning_rat"),
        (["qlora", "--data", str(data), "--output-dir", str(tmp_path / "o")], "--model-name-or-path is required"),
        (["merge", "--adapter", str(tmp_path), "--out", str(tmp_path / "m")], "no adapter in"),
        (["qlora", "--data", str(data), *base, "--deepspeed", "zero9"], "give zero2, zero1 or a DeepSpeed JSON file"),
        (["qlora", "--data", str(data), *base, "--deepspeed", str(ds_file({"zero_optimization": {"stage": 3}}))], "ZeRO stage 3 is not supported"),
        (["qlora", "--data", str(data), *base, "--deepspeed", str(ds_file({"bf16": {"enabled": True}}))], "remove bf16.enabled"),
        (["qlora", "--data", str(data), *base, "--deepspeed", str(ds_file({"train_micro_batch_size_per_gpu": 3}))],
         "train_micro_batch_size_per_gpu is 3 in the config but 8 from the flags"),
    ]


def test_bad_input_is_one_line_no_traceback(tmp_path, llama, data):
    import re

    # In-process for speed (each case would otherwise pay for importing torch); one real process below.
    for args, msg in _bad_cases(tmp_path, llama, data):
        r = in_process(*args)
        assert r.returncode not in (0, None), args
        lines = [line for line in r.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: ") and re.search(msg, lines[0]), (args, r.stderr)
    p = train_cli("qlora", "--data", str(tmp_path / "missing.json"), "--model-name-or-path", str(llama), "--output-dir", str(tmp_path / "o"))
    assert p.returncode == 1 and p.stderr == f"error: data file not found: {tmp_path / 'missing.json'}\n"


def test_merge_into_4bit_is_refused(tmp_path, trained):
    _, out = trained
    r = in_process("merge", "--adapter", str(out / "adapter"), "--out", str(tmp_path / "m"), "--bits", "4")
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert r.stderr.strip().startswith("error: refusing to merge into a 4-bit model")
    assert not (tmp_path / "m").exists()


def _torchrun(out: Path, llama: Path, data: Path, *extra: str, port: int) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "COLUMNS": "400"}  # no wrapped lines
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port), "-m", "train.cli",
                           "qlora", "--data", str(data), "--model-name-or-path", str(llama), "--output-dir", str(out), "--bits", "4",
                           "--per-device-batch-size", "2", "--grad-accum", "2", "--lora-rank", "4", "--learning-rate", "5e-3", *extra],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def _log(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]


def test_two_processes_ddp_and_deepspeed_zero2(tmp_path, llama, data):
    """The torchrun paths, two ranks (gloo on the CPU) over a 4-bit base: plain DDP, and DeepSpeed
    ZeRO-2 stopped after 2 steps and resumed to 4. Both average the same gradients, so the losses
    must agree step by step; ZeRO-2 must also leave one optimizer shard per rank and no base weights."""
    ddp = tmp_path / "ddp"
    r = _torchrun(ddp, llama, data, "--max-steps", "4", port=29533)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "DDP over 2 processes" in r.stderr
    assert [x["step"] for x in _log(ddp)] == [1, 2, 3, 4]  # rank 0 alone writes the log
    assert (ddp / "adapter" / "adapter_model.safetensors").is_file()

    zero = tmp_path / "zero2"
    r = _torchrun(zero, llama, data, "--max-steps", "2", "--save-steps", "2", "--deepspeed", "zero2", port=29534)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "DeepSpeed ZeRO-2 over 2 processes" in r.stderr
    assert "Setting accelerator" not in r.stderr and "kernels-community" not in r.stderr  # no third-party noise
    shards = sorted(p.name for p in (zero / "checkpoint-2" / "deepspeed").iterdir())
    assert shards == ["mp_rank_00_model_states.pt", "zero_pp_rank_0_mp_rank_00_optim_states.pt", "zero_pp_rank_1_mp_rank_00_optim_states.pt"]
    import torch

    kept = torch.load(zero / "checkpoint-2" / "deepspeed" / "mp_rank_00_model_states.pt", weights_only=False)["module"]
    assert kept and all(".lora_" in k for k in kept)  # adapter weights only: no 4-bit base, no quantization state

    r = _torchrun(zero, llama, data, "--max-steps", "4", "--save-steps", "2", "--deepspeed", "zero2", "--resume", port=29535)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "resumed from checkpoint-2 at step 2" in r.stderr
    a, b = _log(ddp), _log(zero)
    assert [x["step"] for x in b] == [1, 2, 3, 4]
    for x, y in zip(a, b):
        assert y["loss"] == pytest.approx(x["loss"], rel=1e-5) and y["tokens"] == x["tokens"]
        assert y["grad_norm"] == pytest.approx(x["grad_norm"], rel=1e-4)
    assert a[-1]["loss"] < a[0]["loss"]

    wrong = train_cli("qlora", "--data", str(data), "--model-name-or-path", str(llama), "--output-dir", str(zero), "--bits", "4",
                      "--max-steps", "5", "--resume")
    assert wrong.returncode == 1 and wrong.stderr.strip().splitlines()[-1] == "error: checkpoint-4 was written with --deepspeed: resume it the same way"
