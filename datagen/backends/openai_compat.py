"""Chat and Completion APIs of OpenAI or any compatible server, through the official async client."""

from __future__ import annotations

import re
import time

from datagen import config
from datagen.backends.base import estimate_tokens
from datagen.errors import BackendError, BatchRefused, FatalBackendError
from datagen.records import Generation, Prompt

_G = config.GenerateOptions.model_fields


def _retry_after(exc) -> float | None:
    resp = getattr(exc, "response", None)
    if resp is None:
        return None
    ms = resp.headers.get("retry-after-ms")
    if ms:
        try:
            return float(ms) / 1000
        except ValueError:
            pass
    value = resp.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        from email.utils import parsedate_to_datetime

        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else exc.__class__.__name__)[:300]


class OpenAIBackend:
    """Chat or Completion API through the official SDK; any OpenAI-compatible server via base_url."""

    def __init__(
        self,
        mode: str,
        model: str,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        timeout: float = _G["timeout"].default,
        prompts_per_request: int = _G["prompts_per_request"].default,
        context_window: int = config.CONTEXT_WINDOW,
    ):
        import httpx
        import openai

        if mode not in ("chat", "completion"):
            raise ValueError(mode)
        self._openai = openai
        self.name = mode
        self.model = model
        self.context_window = context_window
        # The Chat API takes one conversation per request; the Completion API takes a list of prompts.
        self.max_batch = 1 if mode == "chat" else max(1, prompts_per_request)
        self._batch_ok = False  # a multi-prompt request has been answered in full
        base_url = base_url or config.env("openai_base_url")
        if base_url and not re.match(r"^https?://[^/\s]+", base_url):
            raise FatalBackendError(f"bad base URL {base_url!r}: expected http(s)://host[:port]/v1")
        key = api_key or config.env("openai_api_key")
        if not key:
            if not base_url:
                raise FatalBackendError("no API key: set OPENAI_API_KEY, or pass --base-url for a local server, or use --api local")
            key = "no-key"  # local servers accept anything; the SDK insists on a value
        self.base_url = base_url
        # Retries are ours (they are logged and honour Retry-After globally), so the SDK's are off.
        self.client = openai.AsyncOpenAI(
            api_key=key,
            base_url=base_url,
            max_retries=0,
            timeout=httpx.Timeout(timeout, connect=10.0),
            http_client=httpx.AsyncClient(limits=httpx.Limits(max_connections=1000, max_keepalive_connections=200)),
        )

    def count_tokens(self, text: str) -> int:
        return estimate_tokens(text)

    def classify(self, exc: Exception) -> Exception:
        o = self._openai
        where = self.base_url or "the OpenAI API"
        if isinstance(exc, o.AuthenticationError):
            return FatalBackendError(f"authentication failed at {where}: check OPENAI_API_KEY")
        if isinstance(exc, o.PermissionDeniedError):
            return FatalBackendError(f"permission denied at {where}: {_first_line(exc)}")
        if isinstance(exc, o.NotFoundError):
            return FatalBackendError(f"model {self.model!r} or endpoint not found at {where}")
        if isinstance(exc, o.RateLimitError):
            return BackendError("rate limited (429)", retryable=True, retry_after=_retry_after(exc))
        if isinstance(exc, o.APITimeoutError):
            return BackendError("timeout", retryable=True)
        if isinstance(exc, o.APIConnectionError):
            return BackendError(f"connection error: {_first_line(exc.__cause__ or exc)}", retryable=True)
        if isinstance(exc, o.APIStatusError):
            status = exc.status_code
            retry = status >= 500 or status in (408, 409)
            return BackendError(f"HTTP {status}: {_first_line(exc)}", retryable=retry, retry_after=_retry_after(exc))
        # Malformed or truncated bodies surface as decode/validation errors: the next try may be fine.
        return BackendError(f"bad response: {exc.__class__.__name__}: {_first_line(exc)}", retryable=True)

    def _refused(self, why: str) -> BatchRefused:
        self.max_batch = 1
        return BatchRefused(f"{self.base_url or 'the server'} does not take several prompts per request ({why})")

    async def check(self) -> None:
        try:
            await self.client.models.list()
        except self._openai.APIConnectionError as exc:
            raise FatalBackendError(f"cannot reach {self.base_url or 'the OpenAI API'}: {_first_line(exc.__cause__ or exc)}") from None
        except self._openai.NotFoundError:
            return  # some compatible servers have no /models; the first real call will tell
        except Exception as exc:
            err = self.classify(exc)
            if isinstance(err, FatalBackendError):
                raise err from None

    @property
    def endpoint(self) -> str:
        return "/v1/chat/completions" if self.name == "chat" else "/v1/completions"

    def body(self, prompts: list[Prompt]) -> dict:
        """The request body for these prompts: what complete() sends, and what a batch line carries."""
        p0 = prompts[0]
        if self.name == "chat":
            body = dict(model=self.model, messages=[{"role": "user", "content": p0.text}], max_tokens=p0.max_tokens)
        else:
            body = dict(model=self.model, prompt=[p.text for p in prompts] if len(prompts) > 1 else p0.text,
                        max_tokens=max(p.max_tokens for p in prompts))
        body.update(temperature=p0.temperature, top_p=p0.top_p)
        if p0.stop:
            body["stop"] = p0.stop[:4]
        return body

    def generations(self, resp, prompts: list[Prompt], latency: float = 0.0) -> list[Generation]:
        """One Generation per prompt from a response (an SDK object, or a batch line's body as a dict)."""
        if isinstance(resp, dict):  # a batch result line: validate it into the SDK's own type
            types = self._openai.types
            resp = (types.chat.ChatCompletion if self.name == "chat" else types.Completion).model_validate(resp)
        if self.name == "chat":
            choice = resp.choices[0]
            texts = [(choice.message.content or "", choice.finish_reason)]
        else:
            by_index = {c.index: c for c in resp.choices}
            if len(by_index) < len(prompts):  # some servers read only the first prompt of a list
                raise self._refused(f"answered {len(by_index)} of {len(prompts)} prompts sent in one request")
            self._batch_ok = self._batch_ok or len(prompts) > 1
            texts = [(by_index[i].text or "", by_index[i].finish_reason) for i in range(len(prompts))]
        usage = getattr(resp, "usage", None)
        est_in = [self.count_tokens(p.text) for p in prompts]
        est_out = [self.count_tokens(t) for t, _ in texts]
        # Usage comes per request; a batched request's totals are shared out by estimated length.
        tin = usage.prompt_tokens if usage and usage.prompt_tokens else sum(est_in)
        tout = usage.completion_tokens if usage and usage.completion_tokens is not None else sum(est_out)
        return [
            Generation(
                text=text,
                finish_reason=finish,
                tokens_in=round(tin * ei / max(1, sum(est_in))),
                tokens_out=round(tout * eo / max(1, sum(est_out))) if sum(est_out) else 0,
                latency_s=latency,
            )
            for (text, finish), ei, eo in zip(texts, est_in, est_out)
        ]

    async def complete(self, prompts: list[Prompt]) -> list[Generation]:
        t0 = time.perf_counter()
        try:
            if self.name == "chat":
                resp = await self.client.chat.completions.create(**self.body(prompts))
            else:
                resp = await self.client.completions.create(**self.body(prompts))
            return self.generations(resp, prompts, time.perf_counter() - t0)
        except (BackendError, FatalBackendError):
            raise
        except Exception as exc:
            err = self.classify(exc)
            # llama.cpp's server answers a list of prompts with HTTP 500; retrying it 150 times helped no one.
            # Until one multi-prompt request has worked, a refusal of one means the server takes one prompt.
            status = getattr(exc, "status_code", None)
            if len(prompts) > 1 and not self._batch_ok and status is not None and status >= 400 and status not in (401, 403, 404, 408, 409, 429):
                raise self._refused(str(err)) from None
            raise err from None

    async def aclose(self) -> None:
        await self.client.close()
