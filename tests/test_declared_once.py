"""Each default and rule declared once (datagen/config.py, train/config.py), and read from there."""

from __future__ import annotations

import inspect
import re
from dataclasses import fields

import typer.main

from conftest import REPO
from datagen.config import GENERATE_PARAMS, JOB_PARAMS, GenerateOptions


def test_the_environment_is_read_only_in_config():
    reads = re.compile(r"os\.environ\.get\(|os\.getenv\(|os\.environ\[")
    found = [f"{p.relative_to(REPO)}:{n}" for p in (REPO / "datagen").rglob("*.py") if p.name != "config.py"
             for n, line in enumerate(p.read_text().splitlines(), 1) if reads.search(line)]
    assert found == []


def test_the_cli_and_the_job_parser_take_the_same_options():
    """`datagen KIND` (typer) and a job of that kind (plain click, no CLI loaded) parse alike."""
    from datagen.cli import app
    from datagen.jobs import kinds

    cli = typer.main.get_command(app).commands
    for kind in JOB_PARAMS:
        typer_side = {p.name: (sorted(p.opts + p.secondary_opts), None if p.required else p.default, p.required) for p in cli[kind].params}
        job_side = {p.name: (sorted(p.opts + p.secondary_opts), None if p.required else p.default, p.required) for p in kinds.command(kind).params}
        assert typer_side == job_side, kind
    assert {p.name for p in GENERATE_PARAMS} >= {"num_instructions", "batch_size", "max_tokens", "progress"}


def test_backends_take_their_defaults_from_the_options():
    from datagen.backends.local import LocalBackend
    from datagen.backends.openai_compat import OpenAIBackend

    opts = GenerateOptions()
    assert inspect.signature(LocalBackend).parameters["batch_size"].default == opts.batch_size == 16
    sig = inspect.signature(OpenAIBackend).parameters
    assert (sig["timeout"].default, sig["prompts_per_request"].default) == (opts.timeout, opts.prompts_per_request)


def test_train_qlora_flags_are_the_config_fields():
    from train.cli import app
    from train.config import Config

    params = {p.name: p for p in typer.main.get_command(app).commands["qlora"].params}
    flagged = [f for f in fields(Config) if f.metadata.get("flag")]
    assert len(flagged) == 29  # the 29 flags train qlora has always had (plus --config)
    for f in flagged:
        assert params[f.name].default == f.default, f.name
        assert params[f.name].opts[0] == "--" + f.name.replace("_", "-")
    assert "weight_decay" not in params and "config" in params  # a config-file key only; the file option itself
