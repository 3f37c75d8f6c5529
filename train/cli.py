"""`train`: qlora, merge, chat, generate. A thin shell: parse options, call one function, and turn
user errors into one line on stderr and a non-zero exit."""

from __future__ import annotations

import inspect
import os
import sys
from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="Fine-tune on exported data (QLoRA), merge adapters, chat with the result.")


def fail(msg: str, code: int = 1) -> None:
    print(f"error: {msg}", file=sys.stderr)
    raise typer.Exit(code)


def _quiet() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for a hub: models are local paths
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import logging

    import torch

    # Our first line says which device runs; third-party notices about it are noise: DeepSpeed's
    # accelerator auto-detection warning on the CPU (set before transformers, whose import may load
    # DeepSpeed and detect), bitsandbytes' optional CPU kernels, and the kernels hub's "skipping
    # publisher trust check" line in offline mode (transformers 5.2x fetches bitsandbytes kernels through it).
    if not torch.cuda.is_available():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    for name in ("bitsandbytes", "kernels"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _guard(fn):
    from datagen.errors import TrainError

    try:
        return fn()
    except TrainError as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        fail("interrupted", 130)
    except (OSError, ValueError) as exc:
        fail(f"{type(exc).__name__}: {exc}".splitlines()[0])


def _declared_by_config(fn):
    """qlora's options are train.config.Config's fields (their defaults and help), plus ctx and --config."""
    from dataclasses import fields
    from typing import get_type_hints

    from datagen.cli.options import typer_param
    from datagen.config import Param, plain_type
    from train.config import Config

    hints = get_type_hints(Config)
    params = [inspect.Parameter("ctx", inspect.Parameter.KEYWORD_ONLY, annotation=typer.Context),
              inspect.Parameter("config", inspect.Parameter.KEYWORD_ONLY, annotation=Optional[Path], default=typer.Option(
                  None, "--config", help="YAML/JSON file with the same keys as these options; flags given here win."))]
    for f in fields(Config):
        if f.metadata.get("flag"):
            ann, default = typer_param(Param(f.name, ("--" + f.name.replace("_", "-"),), plain_type(hints[f.name]), f.default, f.metadata["help"]))
            params.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, annotation=ann, default=default))
    fn.__signature__ = inspect.Signature(params)
    fn.__annotations__ = {p.name: p.annotation for p in params}
    return fn


@app.command()
@_declared_by_config
def qlora(ctx: typer.Context, config: Optional[Path], **_) -> None:
    """QLoRA fine-tuning of a causal LM on exported instruction data."""
    from train.config import Config, load_config_file
    from train.qlora import run

    def go():
        values = {k: v for k, v in ctx.params.items() if k != "config"}
        if config is not None:
            for k, v in load_config_file(config).items():
                src = ctx.get_parameter_source(k)
                if src is None or src.name in ("DEFAULT", "DEFAULT_MAP"):  # by name: click 8.5 moved the enum
                    values[k] = v
        for need in ("data", "model_name_or_path", "output_dir"):
            if not values.get(need):
                fail(f"--{need.replace('_', '-')} is required (as a flag or in --config)")
        _quiet()
        run(Config(**values))

    _guard(go)


@app.command()
def merge(
    base: Optional[str] = typer.Option(None, "--base", help="The 16-bit base model [default: the one the adapter was trained on]."),
    adapter: Path = typer.Option(..., "--adapter", help="Adapter directory: a run's output dir, its adapter/, or a checkpoint-N/."),
    out: Path = typer.Option(..., "--out", help="Directory for the merged model."),
    dtype: str = typer.Option("bf16", "--dtype", help="bf16 | fp16 | fp32"),
    bits: int = typer.Option(16, "--bits", help="Precision of the base to merge into; 4 and 8 are refused."),
) -> None:
    """Fold a LoRA adapter into its base model (never into a 4-bit model)."""
    from train.merge import merge as do_merge

    def go():
        _quiet()
        where = do_merge(base, adapter, out, dtype=dtype, bits=bits)
        print(f"merged model written to {where}")

    _guard(go)


def _chat(base, adapter, template, bits):
    from train.chat import Chat

    _quiet()
    return Chat(base, str(adapter) if adapter else None, template=template, bits=bits)


@app.command()
def generate(
    prompt: str = typer.Option(..., "--prompt", help="The user message."),
    base: Optional[str] = typer.Option(None, "--base"),
    adapter: Optional[Path] = typer.Option(None, "--adapter"),
    template: Optional[str] = typer.Option(None, "--template", help="[default: the one used in training]"),
    max_new_tokens: int = typer.Option(256, "--max-new-tokens"),
    temperature: float = typer.Option(0.0, "--temperature", help="0: greedy."),
    bits: int = typer.Option(16, "--bits"),
) -> None:
    """One reply to --prompt, with the training template."""
    _guard(lambda: print(_chat(base, adapter, template, bits).reply(prompt, max_new_tokens=max_new_tokens, temperature=temperature)))


@app.command()
def chat(
    base: Optional[str] = typer.Option(None, "--base"),
    adapter: Optional[Path] = typer.Option(None, "--adapter"),
    template: Optional[str] = typer.Option(None, "--template"),
    max_new_tokens: int = typer.Option(256, "--max-new-tokens"),
    temperature: float = typer.Option(0.0, "--temperature"),
    bits: int = typer.Option(16, "--bits"),
) -> None:
    """Interactive chat; the conversation so far is the context. Empty line or Ctrl-D ends it; /reset clears it."""

    def go():
        c = _chat(base, adapter, template, bits)
        print(f"chat ({c.template.name} template); empty line or Ctrl-D to quit, /reset to start over", file=sys.stderr)
        while True:
            try:
                text = input("you> ")
            except EOFError:
                break
            if not text.strip():
                break
            if text.strip() == "/reset":
                c.history.clear()
                continue
            print(f"bot> {c.reply(text, max_new_tokens=max_new_tokens, temperature=temperature)}", flush=True)

    _guard(go)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
