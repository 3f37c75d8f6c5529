"""A small OpenAI-compatible server for tests and benchmarks: fixed latency, a rate limit, faults.

It answers the four self-instruct prompts with plausible, varied text (numbered task lists,
yes/no, Input/Output examples) and can inject what real servers do on bad days: 429 with
Retry-After, 500s, hangs, malformed or truncated bodies, wrong keys. Never a stand-in for a
real model in a feature; it exists to prove retries, accounting and throughput.

    python scripts/devserver.py --port 8001 --latency 1 --rpm 600 --faults 429,500,malformed
    python scripts/devserver.py --slots 1 --single-prompt      # like llama.cpp's server
    python scripts/devserver.py --faults timeout --fault-rate 1 --fault-after 40 --hang 3600   # goes silent
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import itertools
import json
import random
import time

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

VERBS = ["Write", "Explain", "Summarize", "List", "Describe", "Suggest", "Compare", "Plan", "Create", "Draft",
         "Outline", "Rewrite", "Classify", "Translate", "Evaluate", "Design", "Brainstorm", "Identify", "Propose", "Compose"]
THINGS = ["a short story", "three tips", "a haiku", "a product description", "a polite email", "a lesson plan",
          "a recipe", "a workout routine", "a budget", "a cover letter", "a riddle", "a limerick", "a checklist",
          "a travel itinerary", "a SQL query", "a Python function", "an analogy", "a debate argument", "a slogan",
          "a job posting", "a quiz question", "a book blurb", "a weekly schedule", "a toast", "a tweet",
          "a bedtime story", "five interview questions", "a persuasive paragraph", "a packing list", "a sonnet",
          "a customer apology", "a meeting agenda", "a trivia question", "a grocery list", "a press release",
          "a one-act play", "a mnemonic", "a safety notice", "a thank-you note", "a motivational speech"]
TOPICS = ["volcanoes", "urban gardening", "the French Revolution", "black holes", "remote work", "coffee brewing",
          "renewable energy", "chess openings", "honeybees", "the stock market", "sleep hygiene", "medieval castles",
          "machine learning", "ocean tides", "jazz improvisation", "climate migration", "public libraries",
          "electric bicycles", "ancient Rome", "photosynthesis", "street food", "first aid", "tax returns",
          "marathon training", "password security", "origami", "the water cycle", "museum etiquette", "penguins",
          "home insulation", "the printing press", "meditation", "board games", "supply chains", "wildfires",
          "glaciers", "bread baking", "quantum computing", "vaccines", "bird migration", "the Silk Road",
          "composting", "solar panels", "volunteering", "lighthouses", "credit scores", "desert plants",
          "container shipping", "sign language", "the Olympic Games", "coral reefs", "typography", "tea ceremonies",
          "earthquakes", "budget airlines", "beekeeping", "the human heart", "public speaking", "city parks"]
FOR = ["for a ten-year-old", "for a busy parent", "for a nervous beginner", "for a retired engineer",
       "for a high school class", "for a small bakery", "for a hiking club", "for new employees", "for a podcast audience",
       "for a skeptical investor", "in under fifty words", "using only simple words", "in a cheerful tone",
       "as a numbered list", "with one concrete example", "in the style of a news report", "without using jargon",
       "for a rural clinic", "for a chess club newsletter", "for first-year students", "for a wedding guest",
       "for a night-shift nurse", "for a startup founder", "in exactly three sentences", "with a surprising twist",
       "from the point of view of a cat", "for a museum audio guide", "for a radio advert", "for a science fair"]


def _instruction(rng: random.Random) -> str:
    return f"{rng.choice(VERBS)} {rng.choice(THINGS)} about {rng.choice(TOPICS)} {rng.choice(FOR)}."


def reply_for(prompt: str, rng: random.Random, max_tokens: int) -> tuple[str, str]:
    """Pick a plausible answer from the shape of the prompt; returns (text, finish_reason)."""
    tail = prompt.rstrip()[-40:]
    if tail.endswith(("Classification:", "是否分类：")):
        return rng.choice(["Yes", "No", "No", "No"]), "stop"
    if tail.endswith(("Class label:", "类别：")):
        text = " Positive\nInput: I loved every minute of it.\n\nClass label: Negative\nInput: The battery died after a day."
        return text, "stop"
    if tail.endswith(("Input:", "输入：")):
        topic = rng.choice(TOPICS)
        text = (f" <noinput>\nOutput: Here is a clear answer about {topic}, with one example and one tip.\n\n"
                f"Example 2\nInput: {rng.choice(FOR)}\nOutput: A second, different answer about {topic}.")
        return text, "stop"
    m = prompt.rstrip().rsplit("\n", 1)[-1].strip().rstrip(".")
    start = int(m) if m.isdigit() else 1
    items = [_instruction(rng) for _ in range(8)]
    text = " " + items[0] + "".join(f"\n{start + i}. {t}" for i, t in enumerate(items[1:], 1))
    if max_tokens < len(text) // 4:  # what a server does when the budget runs out mid-list
        return text[: max_tokens * 4], "length"
    return text, "stop"


class Stub:
    def __init__(self, latency: float = 0.0, rpm: int | None = None, faults: list[str] | None = None,
                 fault_rate: float = 0.0, api_key: str | None = None, seed: int = 0, hang: float = 30.0,
                 fault_after: int = 0, slots: int | None = None, single_prompt: bool = False):
        self.latency = latency
        self.rpm = rpm
        self.faults = faults or []
        self.fault_rate = fault_rate
        self.api_key = api_key
        self.rng = random.Random(seed)
        self.hang = hang
        self.fault_after = fault_after  # faults start after this many model requests (an outage mid-run)
        self.slots = asyncio.Semaphore(slots) if slots else None  # requests worked on at once; the rest queue
        self.single_prompt = single_prompt  # refuse a list of prompts with a 500, as llama.cpp's server does
        self.received = 0  # model requests that reached the server, counted on arrival
        self.window: collections.deque[float] = collections.deque()
        self.served = 0
        self.rejected = 0
        self.injected = collections.Counter()
        self._cycle = itertools.cycle(self.faults) if self.faults and fault_rate >= 1 else None

    def _limited(self) -> float | None:
        """Seconds until a slot frees in the sliding minute, or None if this request may pass."""
        if not self.rpm:
            return None
        now = time.monotonic()
        while self.window and now - self.window[0] >= 60:
            self.window.popleft()
        if len(self.window) >= self.rpm:
            return 60 - (now - self.window[0])
        self.window.append(now)
        return None

    def _fault(self) -> str | None:
        if not self.faults or self.received <= self.fault_after:
            return None
        if self._cycle is not None:
            return next(self._cycle)
        return self.rng.choice(self.faults) if self.rng.random() < self.fault_rate else None

    async def handle(self, request: Request) -> Response:
        if self.api_key and request.headers.get("authorization") != f"Bearer {self.api_key}":
            return JSONResponse({"error": {"message": "Incorrect API key provided", "type": "invalid_request_error"}}, 401)
        if request.url.path.endswith("/models"):
            return JSONResponse({"object": "list", "data": [{"id": "stub", "object": "model", "owned_by": "datagen"}]})
        self.received += 1
        wait = self._limited()
        if wait is not None:
            self.rejected += 1
            return JSONResponse({"error": {"message": "Rate limit reached", "type": "rate_limit"}}, 429,
                                headers={"retry-after": f"{max(wait, 0.05):.3f}"})
        body = await request.json()
        if self.single_prompt and isinstance(body.get("prompt"), list) and len(body["prompt"]) > 1:
            return JSONResponse({"error": {"code": 500, "message": "\"prompt\" must be a string, an array of tokens or an "
                                           "array of strings with one element", "type": "server_error"}}, 500)
        fault = self._fault()
        if fault:
            self.injected[fault] += 1
        if fault == "429":
            return JSONResponse({"error": {"message": "slow down"}}, 429, headers={"retry-after": "0.2"})
        if fault == "500":
            return JSONResponse({"error": {"message": "internal error"}}, 500)
        if fault == "timeout":
            await asyncio.sleep(self.hang)
        if self.slots:
            async with self.slots:
                await asyncio.sleep(self.latency)
        else:
            await asyncio.sleep(self.latency)
        if fault == "malformed":
            return Response('{"id": "x", "choices": [', media_type="application/json")
        chat = "messages" in body
        prompts = [body["messages"][-1]["content"]] if chat else body["prompt"]
        prompts = [prompts] if isinstance(prompts, str) else prompts
        max_tokens = int(body.get("max_tokens") or 256)
        choices, tin, tout = [], 0, 0
        for i, p in enumerate(prompts):
            text, finish = reply_for(p, self.rng, max_tokens)
            if fault == "truncated":
                text, finish = text[: max(1, len(text) // 2)], "length"
            tin += len(p) // 4
            tout += len(text) // 4
            if chat:
                choices.append({"index": i, "message": {"role": "assistant", "content": text}, "finish_reason": finish})
            else:
                choices.append({"index": i, "text": text, "finish_reason": finish, "logprobs": None})
        self.served += 1
        return JSONResponse({
            "id": f"stub-{self.served}", "object": "chat.completion" if chat else "text_completion",
            "created": int(time.time()), "model": body.get("model", "stub"), "choices": choices,
            "usage": {"prompt_tokens": tin, "completion_tokens": tout, "total_tokens": tin + tout},
        })

    def stats(self, _request: Request) -> Response:
        return JSONResponse({"served": self.served, "received": self.received, "rate_limited": self.rejected,
                             "injected": dict(self.injected)})

    def app(self) -> Starlette:
        routes = [Route(p, self.handle, methods=["GET", "POST"]) for p in ("/v1/models", "/v1/chat/completions", "/v1/completions")]
        routes.append(Route("/stats", self.stats))
        return Starlette(routes=routes)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8001)
    ap.add_argument("--latency", type=float, default=0.0)
    ap.add_argument("--rpm", type=int, default=None)
    ap.add_argument("--faults", default="", help="comma list of 429,500,timeout,malformed,truncated")
    ap.add_argument("--fault-rate", type=float, default=0.0, help="share of requests that get a fault; 1 cycles through the list")
    ap.add_argument("--api-key", default=None)
    ap.add_argument("--hang", type=float, default=30.0, help="seconds a 'timeout' fault holds the request")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--fault-after", type=int, default=0, help="serve this many model requests cleanly before any fault")
    ap.add_argument("--slots", type=int, default=None, help="model requests worked on at once; the rest wait (server-side queue)")
    ap.add_argument("--single-prompt", action="store_true", help="answer a list of prompts with HTTP 500, like llama.cpp's server")
    a = ap.parse_args()
    stub = Stub(a.latency, a.rpm, [f for f in a.faults.split(",") if f], a.fault_rate, a.api_key, a.seed, a.hang,
                a.fault_after, a.slots, a.single_prompt)
    uvicorn.run(stub.app(), host=a.host, port=a.port, log_level="warning", backlog=4096, limit_concurrency=None)


if __name__ == "__main__":
    main()
