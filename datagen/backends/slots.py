"""Continuous batching for LLaMA-family transformers models: a static KV cache and CUDA graphs.

transformers' `generate` runs one fixed batch to its end and spends most of a decode step in Python
and kernel launches (issue 23: 24 ms a step at batch 256 on an H200 for a 1B model whose weights take
0.5 ms to read). This engine keeps the model's own modules and weights (embeddings, norms,
projections, rotary embedding, MLP) and drives them with its own loop:

- The KV cache is one preallocated tensor per layer, `slots` rows of `seq_ctx` positions. A prompt
  takes a free slot, its prefill writes positions 0..n-1 of that row, and each decode step writes one
  position per row; a row attends only to its own positions up to its current one (a mask), so rows at
  different positions decode in the same step.
- On CUDA the decode step (`chunk` steps unrolled, sampling included) is captured once per
  (rows, attended length) bucket as a CUDA graph and replayed: one launch per `chunk` tokens per row,
  one device-to-host copy per replay. Graphs for every bucket are captured at load (`warm_up`), so the
  first real call runs at the steady-state speed. On the CPU the same step runs eagerly.
- A feed thread steps the engine while anything is running or waiting; `submit` only queues, so a
  prompt sent while others decode takes the first free slot (prompts join as earlier ones finish).
- Sampling runs on the device with transformers' order and defaults (temperature, top-k 50, top-p,
  then a draw), per row, so greedy and sampled rows share a step; greedy is the argmax of the logits.

Models whose layers are not LLaMA-shaped (Baichuan, BLOOM) keep transformers' `generate` (local.py).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

TOP_K = 50  # transformers' GenerationConfig default (llamacpp.py samples with the same)
ARCHITECTURES = {"llama", "mistral", "qwen2"}  # pre-norm, RoPE, GQA, gated MLP: the layer the step below computes


def supported(lm) -> bool:
    """Whether the step below computes this model's layers (else local.py keeps transformers' generate)."""
    cfg = lm.config
    rope = getattr(cfg, "rope_parameters", None) or getattr(cfg, "rope_scaling", None) or {}
    # The rotary module computes cos/sin from positions for static RoPE kinds (default, linear, llama3, yarn);
    # "dynamic" and "longrope" change with the sequence length, which a captured step cannot follow.
    return (getattr(cfg, "model_type", None) in ARCHITECTURES and rope.get("rope_type", "default") not in ("dynamic", "longrope")
            and not getattr(cfg, "sliding_window", None) and hasattr(lm, "model") and hasattr(lm.model, "rotary_emb"))


@dataclass
class Seq:
    index: int
    tokens: list[int]
    max_tokens: int
    temperature: float
    top_p: float
    stop: list[str]
    done: threading.Event = field(default_factory=threading.Event)
    slot: int = -1
    out: list[int] = field(default_factory=list)
    text: str = ""
    finish: str = "length"
    t0: float = 0.0
    latency: float = 0.0
    error: BaseException | None = None


def _rotate(x, cos, sin):
    """RoPE as LLaMA applies it (rotate the two halves of each head)."""
    import torch

    half = x.shape[-1] // 2
    return x * cos + torch.cat((-x[..., half:], x[..., :half]), dim=-1) * sin


class SlotEngine:
    """`slots` rows of KV cache over one model; `submit` a prompt's tokens, wait on the returned Seq's `done`."""

    def __init__(self, lm, tok, *, slots: int, seq_ctx: int, chunk: int = 8, graphs: bool | None = None,
                 tok_lock: threading.Lock | None = None):
        import torch

        self.lm, self.tok = lm, tok
        # The tokenizer is shared with the backend's callers (local.py encodes under this lock, issue 19):
        # the feed thread decodes under it too.
        self.tok_lock = tok_lock or threading.Lock()
        cfg = lm.config
        self.slots, self.seq_ctx, self.chunk = slots, seq_ctx, chunk
        self.device = lm.device
        self.graphs = self.device.type == "cuda" if graphs is None else graphs
        m = lm.model
        self.layers = list(m.layers)
        self.n_heads = cfg.num_attention_heads
        self.n_kv = getattr(cfg, "num_key_value_heads", None) or self.n_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // self.n_heads
        dt = next(lm.parameters()).dtype
        shape = (len(self.layers), slots, self.n_kv, seq_ctx, self.head_dim)
        self.k = torch.zeros(shape, dtype=dt, device=self.device)
        self.v = torch.zeros(shape, dtype=dt, device=self.device)
        eos = lm.generation_config.eos_token_id if lm.generation_config else None
        eos = eos if eos is not None else tok.eos_token_id
        self.eos = set(eos if isinstance(eos, list) else [eos]) - {None}
        # The step's inputs live in fixed tensors, so a captured graph reads whatever they hold at replay.
        dev = self.device
        self.cur = torch.zeros(slots, dtype=torch.long, device=dev)  # last token of each row
        self.pos = torch.zeros(slots, dtype=torch.long, device=dev)  # its position
        self.temp = torch.zeros(slots, dtype=torch.float32, device=dev)  # <= 0: greedy
        self.top_p = torch.ones(slots, dtype=torch.float32, device=dev)
        self.hist = torch.zeros(slots, chunk, dtype=torch.long, device=dev)  # tokens of the last replay
        self._graphs: dict[tuple[int, int], object] = {}
        self._pool = None
        self._lock = threading.Lock()  # the queue and the running flag
        self._queue: list[Seq] = []
        self._active: dict[int, Seq] = {}
        self._free = list(range(slots))[::-1]  # pop() takes the lowest row, so busy rows stay packed low
        self._running = False

    # ------------------------------------------------------------------ the model, one step
    def _forward(self, ids, pos, rows, width: int):
        """Hidden states (after the final norm) of `ids` [n, T] at positions `pos` [n, T], writing their K/V into
        cache rows `rows` [n] (rows 0..n-1 when None). Attention covers each row's positions < width."""
        import torch
        import torch.nn.functional as F

        m = self.lm.model
        n, T = ids.shape
        h = m.embed_tokens(ids)
        cos, sin = m.rotary_emb(h, pos)
        cos, sin = cos[:, None], sin[:, None]
        keys = torch.arange(width, device=ids.device)
        mask = (keys[None, None, :] <= pos[:, :, None])[:, None]  # [n, 1, T, width]: a query sees its row up to itself
        at = torch.arange(n, device=ids.device)[:, None]
        for i, layer in enumerate(self.layers):
            a = layer.self_attn
            x = layer.input_layernorm(h)
            q = a.q_proj(x).view(n, T, self.n_heads, self.head_dim).transpose(1, 2)
            k = a.k_proj(x).view(n, T, self.n_kv, self.head_dim).transpose(1, 2)
            v = a.v_proj(x).view(n, T, self.n_kv, self.head_dim).transpose(1, 2)
            q, k = _rotate(q, cos, sin), _rotate(k, cos, sin)
            if rows is None:  # a view of the first n rows: written in place, read without a copy
                kc, vc = self.k[i][:n], self.v[i][:n]
                kc[at, :, pos], vc[at, :, pos] = k.transpose(1, 2), v.transpose(1, 2)
                kk, vv = kc[:, :, :width], vc[:, :, :width]
            else:
                self.k[i][rows[:, None], :, pos] = k.transpose(1, 2)
                self.v[i][rows[:, None], :, pos] = v.transpose(1, 2)
                kk, vv = self.k[i][rows, :, :width], self.v[i][rows, :, :width]
            o = F.scaled_dot_product_attention(q, kk, vv, attn_mask=mask, scale=a.scaling, enable_gqa=self.n_kv != self.n_heads)
            h = h + a.o_proj(o.transpose(1, 2).reshape(n, T, -1))
            h = h + layer.mlp(layer.post_attention_layernorm(h))
        return m.norm(h)

    def _sample(self, logits, temp, top_p):
        """Next token per row: argmax where temp <= 0, else transformers' temperature -> top-k -> top-p -> draw."""
        import torch

        greedy = logits.argmax(-1)
        vals, idx = (logits.float() / temp.clamp_min(1e-5)[:, None]).topk(min(TOP_K, logits.shape[-1]), dim=-1)
        probs = vals.softmax(-1)
        probs = probs * ((probs.cumsum(-1) - probs) < top_p[:, None])  # keep the smallest head reaching top_p
        draw = (probs / torch.empty_like(probs).exponential_()).argmax(-1)  # a draw from probs (exponential race)
        return torch.where(temp > 0, idx.gather(1, draw[:, None])[:, 0], greedy)

    def _steps(self, rows: int, width: int) -> None:
        """`chunk` decode steps of the first `rows` rows, attending over `width` positions; tokens into hist."""
        for j in range(self.chunk):
            cur, pos = self.cur[:rows], self.pos[:rows]
            logits = self.lm.lm_head(self._forward(cur[:, None], pos[:, None], None, width)[:, 0])
            nxt = self._sample(logits, self.temp[:rows], self.top_p[:rows])
            self.hist[:rows, j] = nxt
            cur.copy_(nxt)
            pos.add_(1)

    # ------------------------------------------------------------------ graphs
    def _buckets(self):
        rows, r = [], self.slots
        while r >= 1:
            rows.append(r)
            r //= 4
        widths, w = [], self.seq_ctx
        while w >= 64:
            widths.append(w)
            w //= 2
        return sorted(rows), sorted(widths)

    def _bucket(self, need_rows: int, need_width: int) -> tuple[int, int]:
        rows, widths = self._buckets()
        return next(r for r in rows if r >= need_rows), next((w for w in widths if w >= need_width), self.seq_ctx)

    def warm_up(self) -> None:
        """Capture every bucket's graph now (CUDA), so no real call pays for capture."""
        import torch

        if not self.graphs:
            return
        rows, widths = self._buckets()
        with torch.inference_mode():
            for r in rows:
                for w in widths:
                    self._graph(r, w)

    def _graph(self, rows: int, width: int):
        import torch

        key = (rows, width)
        if key not in self._graphs:
            # Capture runs the steps (once eagerly on a side stream, as torch's graph guide asks, then
            # recorded): keep the rows' state as it was, so a capture in the middle of a run changes nothing.
            saved = self.cur.clone(), self.pos.clone()
            s = torch.cuda.Stream()
            s.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(s):
                self._steps(rows, width)
            torch.cuda.current_stream().wait_stream(s)
            self.cur.copy_(saved[0]), self.pos.copy_(saved[1])
            g = torch.cuda.CUDAGraph()
            with torch.cuda.graph(g, pool=self._pool):
                self._steps(rows, width)
            self.cur.copy_(saved[0]), self.pos.copy_(saved[1])
            self._pool = g.pool()
            self._graphs[key] = g
        return self._graphs[key]

    # ------------------------------------------------------------------ the feed
    def submit(self, tokens: list[int], *, max_tokens: int, temperature: float, top_p: float, stop: list[str], index: int = 0) -> Seq:
        if len(tokens) + self.chunk >= self.seq_ctx:
            from datagen.errors import FatalBackendError

            raise FatalBackendError(f"prompt of {len(tokens)} tokens does not fit the context window of {self.seq_ctx - self.chunk}")
        s = Seq(index=index, tokens=tokens, max_tokens=min(max_tokens, self.seq_ctx - self.chunk - len(tokens)),
                temperature=temperature, top_p=top_p, stop=[x for x in stop or [] if x], t0=time.perf_counter())
        if s.max_tokens < 1:
            s.done.set()
            return s
        with self._lock:
            self._queue.append(s)
            if not self._running:
                self._running = True
                threading.Thread(target=self._feed, name="slots-feed", daemon=True).start()
        return s

    def _feed(self) -> None:
        import torch

        try:
            with torch.inference_mode():
                while True:
                    with self._lock:
                        if not self._active and not self._queue:
                            self._running = False
                            return
                        admit = []
                        while self._queue and self._free:
                            s = self._queue.pop(0)
                            s.slot = self._free.pop()
                            admit.append(s)
                            self._active[s.slot] = s
                    if admit:
                        self._prefill(admit)
                    if self._active:
                        self._step()
        except BaseException as exc:  # noqa: BLE001 - every waiting caller gets the failure
            from datagen.errors import BackendError

            err = BackendError(f"local engine failed: {exc}", retryable=True)
            with self._lock:
                waiting = list(self._active.values()) + self._queue
                self._queue.clear()
                self._active.clear()
                self._free = list(range(self.slots))[::-1]
                self._running = False
            for s in waiting:
                s.error = err
                s.done.set()

    def _prefill(self, seqs: list[Seq]) -> None:
        """Each new prompt's K/V into its row (right-padded together), and its first token."""
        import torch

        dev = self.device
        T = max(len(s.tokens) for s in seqs)
        ids = torch.tensor([s.tokens + [0] * (T - len(s.tokens)) for s in seqs], device=dev)
        lens = torch.tensor([len(s.tokens) for s in seqs], device=dev)
        pos = torch.arange(T, device=dev)[None].expand(len(seqs), T)
        rows = torch.tensor([s.slot for s in seqs], device=dev)
        width = self._bucket(1, T)[1]
        # Each row's logits at its own last prompt token (lens - 1). The padded tail writes K/V past the
        # prompt, which decoding overwrites before any query may attend to it (the mask stops at a query's own position).
        h = self._forward(ids, pos, rows, width)
        logits = self.lm.lm_head(h[torch.arange(len(seqs), device=dev), lens - 1])
        temp = torch.tensor([s.temperature for s in seqs], dtype=torch.float32, device=dev)
        top_p = torch.tensor([s.top_p for s in seqs], dtype=torch.float32, device=dev)
        first = self._sample(logits, temp, top_p)
        self.cur[rows], self.pos[rows] = first, lens
        self.temp[rows], self.top_p[rows] = temp, top_p
        for s, t in zip(seqs, first.tolist()):
            self._take(s, [t])

    def _step(self) -> None:
        import torch

        top = max(self._active) + 1
        width_need = max(int(len(s.tokens) + len(s.out)) for s in self._active.values()) + self.chunk
        rows, width = self._bucket(top, width_need)
        idle = [r for r in range(rows) if r not in self._active]
        if idle:  # free rows decode garbage at position 0 of their own row: harmless, and in bounds
            i = torch.tensor(idle, device=self.device)
            self.pos[i], self.temp[i] = 0, 0.0
        if self.graphs:
            self._graph(rows, width).replay()
        else:
            self._steps(rows, width)
        got = self.hist[:rows].tolist()  # the one sync per chunk
        for slot, s in list(self._active.items()):
            self._take(s, got[slot])

    def _take(self, s: Seq, toks: list[int]) -> None:
        """Append a row's new tokens up to an end: end of text, a stop string, or its budget."""
        for t in toks:
            if t in self.eos:
                return self._finish(s, "stop")
            s.out.append(t)
            if s.stop:
                tail = self._decode(s.out[-(self.chunk + 16):])
                if any(x in tail for x in s.stop):
                    text = self._decode(s.out)
                    cut = min(text.index(x) for x in s.stop if x in text)
                    s.text = text[:cut]
                    return self._finish(s, "stop", decoded=True)
            if len(s.out) >= s.max_tokens:
                return self._finish(s, "length")

    def _decode(self, ids: list[int]) -> str:
        with self.tok_lock:
            return self.tok.decode(ids, skip_special_tokens=True)

    def _finish(self, s: Seq, reason: str, decoded: bool = False) -> None:
        if not decoded:
            s.text = self._decode(s.out)
        s.finish, s.latency = reason, time.perf_counter() - s.t0
        with self._lock:
            del self._active[s.slot]
            self._free.append(s.slot)
            self._free.sort(reverse=True)
        s.done.set()
