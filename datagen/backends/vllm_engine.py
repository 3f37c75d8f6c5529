"""vLLM's offline engine (`vllm.LLM`) inside a Ray replica, when `vllm` is importable there.

Same engine interface as the transformers engine in local.py (`load()`, `generate(prompts)`,
`engine`, `device`), so a replica drives either; the coordinator counts tokens itself. vLLM
schedules the batch itself (continuous batching, paged KV cache), so each prompt keeps its own
sampling settings and budget.
Needs a CUDA GPU; never run on this project's CPU-only machines (see README, "Scale out on Ray").
"""

from __future__ import annotations

import time

from datagen.backends.local import chat_format, model_dir, quiet_transformers, resolve_model
from datagen.errors import FatalBackendError
from datagen.records import Generation, Prompt


class VLLMEngine:
    engine = "vllm"

    def __init__(self, model: str | None = None, *, context_window: int | None = None, tensor_parallel: int = 1):
        self.path, self.gguf = resolve_model(model)
        self.model = model or "smollm2-135m-instruct"
        self._context_window = context_window
        self._tp = max(1, tensor_parallel)
        self._llm = None
        self._tok = None
        self.device: str | None = None

    def load(self) -> None:
        if self._llm is not None:
            return
        from vllm import LLM

        quiet_transformers()
        try:
            # A GGUF model is served from the same cached HF conversion the transformers engine uses.
            llm = LLM(model=str(model_dir(self.path, self.gguf)), tensor_parallel_size=self._tp, dtype="auto",
                      max_model_len=self._context_window)
        except Exception as exc:
            raise FatalBackendError(f"vLLM cannot load {self.path / (self.gguf or '')}: {exc}".splitlines()[0]) from None
        self._llm, self._tok, self.device = llm, llm.get_tokenizer(), f"cuda x{self._tp}"

    def generate(self, prompts: list[Prompt]) -> list[Generation]:
        from vllm import SamplingParams

        self.load()
        t0 = time.perf_counter()
        params = [
            SamplingParams(
                max_tokens=p.max_tokens,
                temperature=p.temperature,
                top_p=p.top_p if p.temperature > 0 else 1.0,
                stop=list(p.stop) or None,
            )
            for p in prompts
        ]
        texts = [chat_format(self._tok, p.text) for p in prompts]
        outs = self._llm.generate(texts, params, use_tqdm=False)
        latency = time.perf_counter() - t0
        gens = []
        for out in outs:  # vLLM returns outputs in the order of the inputs
            o = out.outputs[0]
            gens.append(
                Generation(
                    text=o.text,
                    finish_reason="length" if o.finish_reason == "length" else "stop",
                    tokens_in=len(out.prompt_token_ids or []),
                    tokens_out=len(o.token_ids),
                    latency_s=latency,
                )
            )
        return gens
