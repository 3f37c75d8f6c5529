"""Prompt templates, kept as data in templates.toml; `auto` picks one from the model and tokenizer."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from datagen.errors import TrainError

TEMPLATE_FILE = Path(__file__).with_name("templates.toml")

# model_type (config.json) -> template, for `--template auto` when the tokenizer gives no hint.
BY_MODEL_TYPE = {"baichuan": "baichuan", "bloom": "bloomz", "llama": "llama2", "qwen2": "chatml", "qwen3": "chatml"}


@dataclass(frozen=True)
class Template:
    name: str
    system: str = ""
    system_format: str = "{content}"
    user: str = "{system}{content}"
    assistant: str = "{content}{eos}"
    sep: str = ""
    stop: list[str] = field(default_factory=list)

    def user_piece(self, content: str, *, first: bool, system: str | None, bos: str, eos: str) -> str:
        sys_text = system if system is not None else self.system
        rendered = self.system_format.format(content=sys_text) if (first and sys_text) else ""
        piece = self.user.format(system=rendered, content=content, bos=bos, eos=eos)
        return piece if first else self.sep + piece

    def assistant_piece(self, content: str, *, bos: str, eos: str) -> str:
        return self.assistant.format(content=content, bos=bos, eos=eos)


def load_all(path: Path = TEMPLATE_FILE) -> dict[str, Template]:
    with open(path, "rb") as f:
        raw = tomllib.load(f)
    return {name: Template(name=name, **spec) for name, spec in raw.items()}


def names() -> list[str]:
    return ["auto", *load_all()]


def get(name: str, *, model_type: str | None = None, tokenizer=None) -> Template:
    """The template called `name`; for 'auto', the one that fits this model and tokenizer."""
    table = load_all()
    if name == "auto":
        name = pick(model_type, tokenizer)
    if name not in table:
        raise TrainError(f"unknown template {name!r}: use one of {', '.join(['auto', *table])}")
    return table[name]


def pick(model_type: str | None, tokenizer=None) -> str:
    # A tokenizer that knows <|im_start|> was trained for ChatML (SmolLM2, Qwen), whatever its architecture.
    if tokenizer is not None and "<|im_start|>" in tokenizer.get_vocab():
        return "chatml"
    return BY_MODEL_TYPE.get((model_type or "").lower(), "alpaca")
