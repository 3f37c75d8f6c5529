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


def test_qlora_then_generate_chat_and_merge(tmp_path, llama, data):
    out = tmp_path / "run"
    r = train_cli("qlora", "--data", str(data), "--model-name-or-path", str(llama), "--output-dir", str(out), "--bits", "16",
                  "--max-steps", "3", "--per-device-batch-size", "4", "--lora-rank", "8", "--packing", "--learning-rate", "5e-3")
    assert r.returncode == 0, r.stderr
    assert "device cpu" in r.stderr and "float32" in r.stderr and "template chatml" in r.stderr  # says what it runs on
    rows = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [x["step"] for x in rows] == [1, 2, 3]
    assert (out / "loss.png").is_file() and (out / "adapter" / "adapter_model.safetensors").is_file()

    g = train_cli("generate", "--adapter", str(out / "adapter"), "--prompt", "repeat the words sky moon", "--max-new-tokens", "8")
    assert g.returncode == 0, g.stderr
    assert g.stdout.strip() != "" or g.stdout == "\n"  # random weights: any text, but the command completes
    c = train_cli("chat", "--adapter", str(out / "adapter"), "--max-new-tokens", "4", input="hello\nsecond turn\n\n")
    assert c.returncode == 0, c.stderr
    assert c.stdout.count("bot> ") == 2 and "chatml template" in c.stderr

    m = train_cli("merge", "--adapter", str(out / "adapter"), "--out", str(tmp_path / "merged"), "--dtype", "fp32")
    assert m.returncode == 0, m.stderr
    assert (tmp_path / "merged" / "config.json").is_file()
    g2 = train_cli("generate", "--base", str(tmp_path / "merged"), "--prompt", "repeat the words sky moon", "--max-new-tokens", "8")
    assert g2.returncode == 0 and g2.stdout == g.stdout  # merged model, same template, same greedy answer


def test_config_file_and_flags_override(tmp_path, llama, data):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"data: {data}\nmodel-name-or-path: {llama}\noutput_dir: {tmp_path / 'run'}\nbits: 16\nmax_steps: 5\n"
                   "lora_rank: 4\nper_device_batch_size: 2\n")
    r = train_cli("qlora", "--config", str(cfg), "--max-steps", "2")
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
    return [
        (["qlora", "--data", str(tmp_path / "missing.json"), *base], "data file not found"),
        (["qlora", "--data", str(bad_json), *base], "malformed JSON"),
        (["qlora", "--data", str(empty), *base], "no records"),
        (["qlora", "--data", str(data), *base, "--template", "vicuna"], "unknown template 'vicuna'"),
        (["qlora", "--data", str(data), "--model-name-or-path", str(tmp_path / "nope"), "--output-dir", str(tmp_path / "o")], "model not found"),
        (["qlora", "--config", str(bad_cfg)], "unknown keys .*learning_rat"),
        (["qlora", "--data", str(data), "--output-dir", str(tmp_path / "o")], "--model-name-or-path is required"),
        (["merge", "--adapter", str(tmp_path), "--out", str(tmp_path / "m")], "no adapter in"),
    ]


def test_bad_input_is_one_line_no_traceback(tmp_path, llama, data):
    import re

    from typer.testing import CliRunner

    from train.cli import app

    # In-process for speed (each case would otherwise pay for importing torch); one real process below.
    runner = CliRunner()
    for args, msg in _bad_cases(tmp_path, llama, data):
        r = runner.invoke(app, args)
        assert r.exit_code not in (0, None), args
        assert r.exception is None or isinstance(r.exception, SystemExit), (args, r.exception)  # no escaped exception
        lines = [line for line in r.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: ") and re.search(msg, lines[0]), (args, r.stderr)
    p = train_cli("qlora", "--data", str(tmp_path / "missing.json"), "--model-name-or-path", str(llama), "--output-dir", str(tmp_path / "o"))
    assert p.returncode == 1 and p.stderr == f"error: data file not found: {tmp_path / 'missing.json'}\n"


def test_merge_into_4bit_is_refused(tmp_path, llama, data):
    out = tmp_path / "run"
    assert train_cli("qlora", "--data", str(data), "--model-name-or-path", str(llama), "--output-dir", str(out), "--bits", "16",
                     "--max-steps", "1", "--lora-rank", "4").returncode == 0
    r = train_cli("merge", "--adapter", str(out / "adapter"), "--out", str(tmp_path / "m"), "--bits", "4")
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert r.stderr.strip().startswith("error: refusing to merge into a 4-bit model")
    assert not (tmp_path / "m").exists()


def test_two_processes_ddp(tmp_path, llama, data):
    """The torchrun path: two ranks (gloo on the CPU), one share of the data each, one adapter written."""
    out = tmp_path / "ddp"
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533", "-m", "train.cli",
                        "qlora", "--data", str(data), "--model-name-or-path", str(llama), "--output-dir", str(out), "--bits", "16",
                        "--max-steps", "2", "--per-device-batch-size", "2", "--lora-rank", "4"],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "2 processes" in r.stderr
    rows = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [x["step"] for x in rows] == [1, 2]  # rank 0 alone writes the log
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
