"""The embedded model through llama.cpp in-process: several sequences decoded together in one context.

Same engine interface as the transformers engine in local.py (`load()`, `generate(prompts)`,
`count_tokens`, `context_window`, `engine`, `device`), and the same contract: one user turn in the
model's own chat template (the GGUF's `tokenizer.chat_template`, rendered like transformers renders
it), each prompt's own `max_tokens`, temperature and top_p, its stop strings cut from the text,
`tokens_in` the prompt tokens, `tokens_out` the tokens the model produced (the end-of-turn token
not counted).

How it batches: the context holds one KV stream per sequence (`n_seq_max` slots, not unified), so
a sequence attends only to its own tokens. Each step is one `llama_decode` of a batch that holds one
new token for every sequence that is decoding plus the prompt tokens of sequences being admitted;
a sequence that ends frees its slot at once and a waiting prompt takes it in the next step. One feed
thread steps the context while anything is running or waiting; `submit` (and so `complete` and
`generate`, from any thread or several at once) only queues, so prompts sent while a batch runs
join it instead of waiting for it to end (continuous batching). Sampling runs in llama.cpp
(one sampler chain per sequence), so greedy output is llama.cpp's own argmax, token for token the
same as `Llama.create_completion(temperature=0)` on the same formatted prompt (tests/test_llamacpp_engine.py).

Sampling follows transformers' order (temperature, top-k 50, top-p, then draw), which is what
the transformers engine does with the same settings.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from datagen import config
from datagen.errors import FatalBackendError

if TYPE_CHECKING:
    from datagen.records import Generation, Prompt

TOP_K = 50  # transformers' GenerationConfig default, so both engines sample from the same set


@dataclass
class _Seq:
    index: int  # position in the caller's list
    tokens: list[int]  # prompt tokens
    max_tokens: int
    temperature: float
    top_p: float
    stop: list[bytes]
    seed: int
    done: threading.Event = field(default_factory=threading.Event)
    slot: int = -1
    fed: int = 0  # prompt tokens already in the KV cache
    out: list[int] = field(default_factory=list)
    text: bytes = b""
    finish: str = "length"
    sampler: object = None
    t0: float = 0.0
    latency: float = 0.0
    error: BaseException | None = None

    @property
    def pos(self) -> int:  # position of the next token to feed
        return self.fed + max(0, len(self.out) - 1)


class LlamaCppBackend:
    name = "local"
    engine = "llama.cpp"
    continuous = True  # calls from several threads join the running batch (see the module docstring)

    def __init__(
        self,
        model: str | None = None,
        *,
        batch_size: int = 8,
        context_window: int | None = None,
        threads: int | None = None,
        seed: int | None = None,
        weights: str | None = None,
    ):
        from datagen.backends.local import resolve_model

        path, gguf = resolve_model(model)
        if not gguf:
            raise FatalBackendError(f"the llama.cpp engine needs a .gguf model, not the HF directory {path} (use --engine transformers)")
        self.source = path / gguf
        self.weights = weights or config.LLAMACPP_WEIGHTS
        if self.weights not in WEIGHTS:
            raise FatalBackendError(f"unknown llama.cpp weights {self.weights!r}: use {', '.join(WEIGHTS)}")
        self.file: Path | None = None  # the file loaded: the source, or its conversion (see weights_file)
        self.model = model or "smollm2-135m-instruct"
        self.max_batch = max(1, batch_size)
        self._context_window = context_window
        self._threads = threads
        self._seed = seed
        self.device = "cpu"
        self.dtype: str | None = None
        self._model = None  # llama_cpp._internals.LlamaModel
        self._ctx = None
        self._batch = None
        self._template = None
        self._load_lock = threading.Lock()
        self._running = False  # a feed thread is stepping the context
        self._queue: list[_Seq] = []  # submitted, not yet in a slot
        self._queue_lock = threading.Lock()
        self._free: list[int] = []
        self._active: dict[int, _Seq] = {}
        self._n_seed = 0

    # -------------------------------------------------------------- loading
    def load_tokenizer(self) -> None:
        """The model file's vocabulary and chat template (weights are memory-mapped, so this is cheap)."""
        if self._model is not None:
            return
        with self._load_lock:
            if self._model is not None:
                return
            from llama_cpp._internals import LlamaModel
            from llama_cpp.llama_chat_format import Jinja2ChatFormatter

            from llama_cpp._logger import set_verbose

            set_verbose(False)  # llama.cpp logs every load to stderr; only its errors reach a run's output
            self.file = weights_file(self.source, self.weights)
            params = LlamaModel.default_params()
            params.n_gpu_layers = 0
            try:
                m = LlamaModel(path_model=str(self.file), params=params, verbose=False)
            except Exception as exc:  # noqa: BLE001 - one line is what the user needs
                raise FatalBackendError(f"llama.cpp cannot load {self.file}: {exc}".splitlines()[0]) from None
            meta = m.metadata()
            tpl = meta.get("tokenizer.chat_template")
            piece = lambda t: m.token_get_text(t) if t >= 0 else ""  # noqa: E731
            self._template = Jinja2ChatFormatter(tpl, eos_token=piece(m.token_eos()), bos_token=piece(m.token_bos())) if tpl else None
            self._add_bos = bool(m.add_bos_token())
            self.dtype = _file_type(meta)
            self._n_ctx_train = m.n_ctx_train()
            self._model = m

    @property
    def seq_ctx(self) -> int:
        """KV cells per sequence: --context-window, else the model's own window capped (config.LLAMACPP_SEQ_CTX)."""
        if self._context_window:
            return self._context_window
        self.load_tokenizer()
        return min(self._n_ctx_train, config.LLAMACPP_SEQ_CTX)

    @property
    def context_window(self) -> int:
        return self.seq_ctx

    def load(self) -> None:
        self.load_tokenizer()
        if self._ctx is not None:
            return
        with self._load_lock:
            if self._ctx is not None:
                return
            from llama_cpp import llama_cpp as C
            from llama_cpp._internals import LlamaBatch, LlamaContext

            threads = self._threads or config.engine_threads(every_core=True)
            n = self.max_batch
            p = LlamaContext.default_params()
            p.n_seq_max = n
            p.kv_unified = False  # one stream per sequence: attention never spans the other sequences
            p.n_ctx = self.seq_ctx * n
            p.n_batch = config.LLAMACPP_STEP_TOKENS
            p.n_ubatch = config.LLAMACPP_STEP_TOKENS
            p.n_threads = p.n_threads_batch = threads
            p.flash_attn_type = C.LLAMA_FLASH_ATTN_TYPE_DISABLED  # as Llama() does by default: same numerics as its completion
            p.no_perf = True
            try:
                ctx = LlamaContext(model=self._model, params=p, verbose=False)
            except Exception as exc:  # noqa: BLE001
                raise FatalBackendError(f"llama.cpp cannot make a context for {n} sequences of {self.seq_ctx} tokens: {exc}".splitlines()[0]) from None
            self._batch = LlamaBatch(n_tokens=config.LLAMACPP_STEP_TOKENS, embd=0, n_seq_max=1, verbose=False)
            self._free = list(range(n))[::-1]
            self._ctx = ctx

    # -------------------------------------------------------------- tokens
    def chat_format(self, text: str) -> str:
        self.load_tokenizer()
        if self._template is None:
            return text
        return self._template(messages=[{"role": "user", "content": text}]).prompt

    def tokenize(self, text: str) -> list[int]:
        """Token ids of one prompt in the chat template, as llama.cpp's completion would tokenize it."""
        self.load_tokenizer()
        return self._model.tokenize(self.chat_format(text).encode("utf-8"), add_bos=self._add_bos, special=True)

    def count_tokens(self, text: str) -> int:
        return len(self.tokenize(text))

    # -------------------------------------------------------------- protocol
    async def check(self) -> None:
        await asyncio.to_thread(self.load)

    async def complete(self, prompts: list[Prompt]) -> list[Generation]:
        """Prompts join the running batch (no lock): several calls in flight keep the slots full."""
        from datagen.records import Generation

        return [Generation(**g) for g in await asyncio.to_thread(self.generate_raw, prompts)]

    def generate(self, prompts: list[Prompt]) -> list[Generation]:
        from datagen.records import Generation

        return [Generation(**g) for g in self.generate_raw(prompts)]

    def generate_raw(self, prompts) -> list[dict]:
        """Generation fields as plain dicts (the bench runs this without pydantic)."""
        seqs = [self.submit(p, i) for i, p in enumerate(prompts)]
        for s in seqs:
            s.done.wait()
        return [self.result(s) for s in seqs]

    # -------------------------------------------------------------- the feed
    def submit(self, prompt, index: int = 0) -> _Seq:
        """Queue one prompt; the feed thread admits it as soon as a slot is free. Wait on `.done`, then `result()`."""
        self.load()
        toks = self.tokenize(prompt.text)
        budget = self.seq_ctx - len(toks)
        if budget < 1:
            raise FatalBackendError(f"prompt of {len(toks)} tokens does not fit the context window of {self.seq_ctx}")
        seed = self._seed if self._seed is not None else int.from_bytes(os.urandom(4), "little")
        s = _Seq(index=index, tokens=toks, max_tokens=min(prompt.max_tokens, budget), temperature=prompt.temperature,
                 top_p=prompt.top_p, stop=[x.encode("utf-8") for x in (prompt.stop or []) if x], seed=seed, t0=time.perf_counter())
        if s.max_tokens < 1:
            s.done.set()
            return s
        with self._queue_lock:
            self._queue.append(s)
            if not self._running:  # the feed thread ends when idle; the first prompt after that starts one
                self._running = True
                threading.Thread(target=self._feed, name="llamacpp-feed", daemon=True).start()
        return s

    def result(self, s: _Seq) -> dict:
        if s.error is not None:
            raise s.error
        text = s.text.decode("utf-8", errors="ignore")
        return dict(text=text, finish_reason=s.finish, tokens_in=len(s.tokens), tokens_out=len(s.out), latency_s=s.latency)

    def _feed(self) -> None:
        """The one thread that steps the context: admit waiting prompts into free slots, decode, repeat, until idle."""
        try:
            while True:
                with self._queue_lock:
                    if not self._active and not self._queue:
                        self._running = False
                        return
                self._admit()
                self._step()
        except BaseException as exc:  # noqa: BLE001 - every waiting caller gets the failure
            from datagen.errors import BackendError

            err = BackendError(f"llama.cpp engine failed: {exc}", retryable=True)
            with self._queue_lock:
                waiting = list(self._active.values()) + self._queue
                self._queue.clear()
                self._running = False
            for s in waiting:
                if s.slot >= 0 and s.slot in self._active:
                    self._finish(s, "error")
                s.error = err
                s.done.set()

    def _admit(self) -> None:
        with self._queue_lock:
            while self._queue and self._free:
                s = self._queue.pop(0)
                s.slot = self._free.pop()
                s.sampler = self._sampler(s)
                self._active[s.slot] = s

    def _sampler(self, s: _Seq):
        from llama_cpp._internals import LlamaSampler

        smp = LlamaSampler()
        if s.temperature <= 0:
            smp.add_greedy()
        else:
            smp.add_temp(s.temperature)
            smp.add_top_k(TOP_K)
            smp.add_top_p(s.top_p, 1)
            smp.add_dist(s.seed)
        return smp

    def _step(self) -> None:
        """One llama_decode: a token for every decoding sequence, then prompt tokens while room is left."""
        from llama_cpp import llama_cpp as C

        b = self._batch.batch
        room = config.LLAMACPP_STEP_TOKENS
        n = 0
        outputs: list[tuple[int, _Seq]] = []  # (batch index, sequence) whose logits this step yields

        def put(tok: int, pos: int, slot: int, logits: bool) -> None:
            nonlocal n
            b.token[n], b.pos[n], b.n_seq_id[n], b.logits[n] = tok, pos, 1, logits
            b.seq_id[n][0] = slot
            n += 1

        decoding = [s for s in self._active.values() if s.fed == len(s.tokens)]
        for s in decoding:
            put(s.out[-1], s.pos, s.slot, True)
            outputs.append((n - 1, s))
        room -= len(decoding)
        for s in self._active.values():
            if s.fed == len(s.tokens) or room <= 0:
                continue
            take = min(room, len(s.tokens) - s.fed)
            for j in range(take):
                last = s.fed + j == len(s.tokens) - 1
                put(s.tokens[s.fed + j], s.fed + j, s.slot, last)
            s.fed += take
            room -= take
            if s.fed == len(s.tokens):
                outputs.append((n - 1, s))
        b.n_tokens = n
        rc = C.llama_decode(self._ctx.ctx, b)
        if rc != 0:
            raise RuntimeError(f"llama_decode returned {rc}")
        vocab = self._model.vocab
        for i, s in outputs:
            tok = s.sampler.sample(self._ctx, i)
            s.sampler.accept(tok)
            if C.llama_vocab_is_eog(vocab, tok):
                self._finish(s, "stop")
                continue
            s.out.append(tok)
            s.text += self._piece(tok)
            hit = [x for x in s.stop if x in s.text]
            if hit:
                s.text = s.text[: min(s.text.index(x) for x in hit)]
                self._finish(s, "stop")
            elif len(s.out) >= s.max_tokens:
                self._finish(s, "length")

    def _piece(self, tok: int) -> bytes:
        from llama_cpp import llama_cpp as C

        buf = self._piecebuf = getattr(self, "_piecebuf", None) or ctypes.create_string_buffer(256)
        k = C.llama_token_to_piece(self._model.vocab, tok, buf, len(buf), 0, False)
        return bytes(buf[: max(0, k)])

    def _finish(self, s: _Seq, reason: str) -> None:
        from llama_cpp import llama_cpp as C

        s.finish = reason
        s.latency = time.perf_counter() - s.t0
        C.llama_memory_seq_rm(self._ctx.memory, s.slot, -1, -1)
        del self._active[s.slot]
        self._free.append(s.slot)
        s.sampler.close()
        s.sampler = None
        s.done.set()

    async def aclose(self) -> None:
        self._ctx = None


# --weights: "file" runs the GGUF as it is; "f16"/"f32" run a copy converted once by llama.cpp itself
# (llama_model_quantize) and cached. On a CPU the quantized file's matmuls cost as much per token
# batched as alone, while f16/f32 go through llama.cpp's batched GEMM: bench/local_cpu.py measures it.
WEIGHTS = {"file": None, "f16": 1, "f32": 0}  # llama_ftype of the conversion


def weights_file(gguf: Path, weights: str) -> Path:
    """The GGUF to load: the source itself, or its f16/f32 conversion in the cache (temp file, then rename)."""
    if WEIGHTS[weights] is None:
        return gguf
    import tempfile

    from llama_cpp import llama_cpp as C

    st = gguf.stat()
    target = config.cache_dir() / "models" / f"{gguf.stem}-{st.st_size}.{weights}.gguf"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".convert-", suffix=".gguf", dir=target.parent)
    os.close(fd)
    try:
        p = C.llama_model_quantize_default_params()
        p.ftype, p.allow_requantize, p.nthread = WEIGHTS[weights], True, 1
        if C.llama_model_quantize(str(gguf).encode(), tmp.encode(), ctypes.byref(p)) != 0:
            raise FatalBackendError(f"llama.cpp could not convert {gguf} to {weights}")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def _file_type(meta: dict) -> str | None:
    from llama_cpp import llama_cpp as C

    ft = meta.get("general.file_type")
    names = {getattr(C, k): k.split("_")[-1].lower() if k.startswith("LLAMA_FTYPE_ALL_") else k.removeprefix("LLAMA_FTYPE_MOSTLY_").lower()
             for k in dir(C) if k.startswith(("LLAMA_FTYPE_MOSTLY_", "LLAMA_FTYPE_ALL_"))}
    try:
        return names.get(int(ft), ft) if ft is not None else None
    except ValueError:
        return ft

