"""A small OpenAI-compatible server for tests and benchmarks: fixed latency, a rate limit, faults.

It answers the four self-instruct prompts with plausible, varied text (numbered task lists,
yes/no, Input/Output examples) and can inject what real servers do on bad days: 429 with
Retry-After, 500s, hangs, malformed or truncated bodies, wrong keys. Never a stand-in for a
real model in a feature; it exists to prove retries, accounting and throughput.

    python scripts/devserver.py --port 8001 --latency 1 --rpm 600 --faults 429,500,malformed
    python scripts/devserver.py --slots 1 --single-prompt      # like llama.cpp's server
    python scripts/devserver.py --faults timeout --fault-rate 1 --fault-after 40 --hang 3600   # goes silent
    python scripts/devserver.py --batch-delay 5 --line-error-every 10 --expire-batches 1 --expire-after 3  # batches
    python scripts/devserver.py --faults 500,timeout --fault-rate 1 --route-faults --fault-after 1  # flaky batch routes
    python scripts/devserver.py --judge-answers --judge-bad-every 5   # a score line for judge prompts, every 5th unusable

It also serves OpenAI's Files and Batch API (/v1/files, /v1/batches) in memory: a batch moves through
validating, in_progress and finalizing over --batch-delay seconds and answers each line as the synchronous
route would (latency, rate limit and --faults do not apply to batch lines); output lines come shuffled.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import itertools
import json
import random
import hashlib
import re
import secrets
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


# The last lines of datagen's judge rubrics (datagen/prompts/judge/): the scale the answer must be on.
_JUDGE_ASK = re.compile(r"Score: <a number from (?P<lo>\d+(?:\.\d+)?) to (?P<hi>\d+(?:\.\d+)?)>"
                        r"|分数：<(?P<zlo>\d+(?:\.\d+)?) 到 (?P<zhi>\d+(?:\.\d+)?) 之间的数字>")


def judge_value(prompt: str, lo: float, hi: float) -> float:
    """The stub's verdict on a prompt: a fixed function of its text, on the scale in half steps."""
    h = int.from_bytes(hashlib.sha256(prompt.encode("utf-8")).digest()[:8], "big")
    return lo + (h % (int(2 * (hi - lo)) + 1)) / 2


def judge_reply(prompt: str) -> str | None:
    """A judge's answer to a rubric prompt in one of the shapes models write (None: not a judge prompt)."""
    m = _JUDGE_ASK.search(prompt[-400:])
    if not m:
        return None
    zh = m.group("zlo") is not None
    lo, hi = float(m.group("zlo") if zh else m.group("lo")), float(m.group("zhi") if zh else m.group("hi"))
    v = judge_value(prompt, lo, hi)
    if zh:
        return f"分数：{v:g}分\n理由：回答切题，内容基本正确（存根的判断）。"
    style = int(hashlib.sha256(prompt.encode("utf-8")).hexdigest()[-2:], 16) % 3
    if style == 0:
        return f"Score: {v:g}\nReason: The response addresses the task (stub verdict)."
    if style == 1:
        return f"**Rating:** {v:g}/{hi:g}\n**Reason:** Mostly correct and on topic (stub verdict)."
    return f"Sure, here is my assessment.\n\nScore: {v:g}\nReason: It answers the instruction (stub verdict).\n\nLet me know if you need more."


def _error(status: int, message: str, code: str | None = None, param: str | None = None) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": "invalid_request_error", "param": param, "code": code}},
                        status)


def _multipart(body: bytes, content_type: str) -> dict[str, tuple[str | None, bytes]]:
    """name -> (filename, bytes) of a multipart/form-data body; stdlib only (python-multipart is not a dependency)."""
    m = re.search(r'boundary="?([^";]+)"?', content_type)
    if not m:
        raise ValueError("no multipart boundary")
    parts: dict[str, tuple[str | None, bytes]] = {}
    for chunk in body.split(b"--" + m.group(1).encode())[1:]:
        if chunk.startswith(b"--"):
            break
        head, _, data = chunk.partition(b"\r\n\r\n")
        head_text = head.decode("utf-8", "replace")
        name, fname = re.search(r'\bname="([^"]*)"', head_text), re.search(r'\bfilename="([^"]*)"', head_text)
        if name:
            parts[name.group(1)] = (fname.group(1) if fname else None, data[:-2] if data.endswith(b"\r\n") else data)
    return parts


def _parsed(lines: list[str]) -> list[dict]:
    """The lines of an unvalidated input file that have a custom_id (a batch cancelled while validating)."""
    out = []
    for ln in lines:
        try:
            req = json.loads(ln)
        except ValueError:
            continue
        if isinstance(req, dict) and isinstance(req.get("custom_id"), str):
            out.append(req)
    return out


class Batches:
    """OpenAI's Files and Batch API, in memory. Each batch is run by one asyncio task:
    validating 0.2*delay, in_progress 0.6*delay (lines finish evenly spread), finalizing 0.2*delay."""

    MAX_LINES, MAX_BYTES = 50_000, 200 * 1024 * 1024  # OpenAI's limits per batch input file
    CANCELLING = 0.5  # seconds a cancelled batch stays `cancelling`, at most
    ENDPOINTS = ("/v1/chat/completions", "/v1/completions")

    def __init__(self, stub: "Stub", delay: float = 1.0, line_error_every: int = 0, expire_batches: int = 0,
                 expire_after: int = 0, fail_batches: int = 0):
        self.stub = stub
        self.delay = delay
        self.line_error_every = line_error_every  # every K-th processed line (one counter for all batches) fails
        self.expire_batches = expire_batches  # the first N batches created expire ...
        self.expire_after = expire_after  # ... once this many of their lines are done
        self.fail_batches = fail_batches  # the first N batches created fail validation
        self.files: dict[str, dict] = {}
        self.contents: dict[str, bytes] = {}
        self.batches: dict[str, dict] = {}  # insertion order = creation order
        self.tasks: dict[str, asyncio.Task] = {}  # strong references, or the loop may drop a running task
        self.cancel_requested: set[str] = set()
        self.lines_processed = 0
        self.files_uploaded = 0
        self.files_deleted = 0
        self.batch_lines = 0
        self.custom_ids: collections.Counter = collections.Counter()
        self.custom_ids_answered: collections.Counter = collections.Counter()
        self.usage = {"prompt_tokens": 0, "completion_tokens": 0}
        self.lines_answered = 0

    def _id(self, prefix: str) -> str:
        return f"{prefix}{secrets.token_hex(12)}"

    def _store_file(self, data: bytes, filename: str, purpose: str) -> dict:
        f = {"id": self._id("file-"), "object": "file", "bytes": len(data), "created_at": int(time.time()),
             "filename": filename, "purpose": purpose, "status": "processed", "expires_at": None, "status_details": None}
        self.files[f["id"]] = f
        self.contents[f["id"]] = data
        return f

    def stats(self) -> dict:
        return {"files_uploaded": self.files_uploaded, "files_deleted": self.files_deleted,
                "batches_created": len(self.batches), "batch_lines": self.batch_lines, "custom_ids": dict(self.custom_ids),
                "custom_ids_answered": dict(self.custom_ids_answered), "batch_usage": dict(self.usage),
                "batch_lines_answered": self.lines_answered}

    # --- HTTP routes

    async def upload(self, request: Request) -> Response:
        try:
            parts = _multipart(await request.body(), request.headers.get("content-type", ""))
        except ValueError:
            return _error(400, "Expected a multipart/form-data body with 'file' and 'purpose'.")
        if "file" not in parts or "purpose" not in parts:
            return _error(400, "Missing required parameter: 'file' and 'purpose' are required.",
                          "missing_required_parameter", "file" if "file" not in parts else "purpose")
        purpose = parts["purpose"][1].decode("utf-8", "replace")
        if purpose != "batch":  # the only purpose this stub has a use for
            return _error(400, f"Invalid purpose {purpose!r}; the stub accepts 'batch'.", "invalid_value", "purpose")
        self.files_uploaded += 1
        return JSONResponse(self._store_file(parts["file"][1], parts["file"][0] or "upload.jsonl", purpose))

    def file(self, request: Request) -> Response:
        f = self.files.get(request.path_params["file_id"])
        return JSONResponse(f) if f else _error(404, f"No such File object: {request.path_params['file_id']}")

    def delete(self, request: Request) -> Response:
        fid = request.path_params["file_id"]
        if fid not in self.files:
            return _error(404, f"No such File object: {fid}")
        del self.files[fid], self.contents[fid]
        self.files_deleted += 1
        return JSONResponse({"id": fid, "object": "file", "deleted": True})

    def content(self, request: Request) -> Response:
        fid = request.path_params["file_id"]
        if fid not in self.contents:
            return _error(404, f"No such File object: {fid}")
        return Response(self.contents[fid], media_type="application/octet-stream")

    async def create(self, request: Request) -> Response:
        try:
            req = await request.json()
            assert isinstance(req, dict)
        except (ValueError, AssertionError):
            return _error(400, "The request body must be a JSON object.")
        fid, endpoint, window = req.get("input_file_id"), req.get("endpoint"), req.get("completion_window")
        if fid not in self.files:
            return _error(400, f"No such File object: {fid}", "invalid_value", "input_file_id")
        if endpoint not in self.ENDPOINTS:
            return _error(400, f"Invalid endpoint {endpoint!r}; expected one of {', '.join(self.ENDPOINTS)}.",
                          "invalid_value", "endpoint")
        if window != "24h":
            return _error(400, f"Invalid completion_window {window!r}; only '24h' is supported.",
                          "invalid_value", "completion_window")
        now = int(time.time())
        b = {"id": self._id("batch_"), "object": "batch", "endpoint": endpoint, "errors": None, "input_file_id": fid,
             "completion_window": window, "status": "validating", "output_file_id": None, "error_file_id": None,
             "created_at": now, "in_progress_at": None, "expires_at": now + 86400, "finalizing_at": None,
             "completed_at": None, "failed_at": None, "expired_at": None, "cancelling_at": None, "cancelled_at": None,
             "request_counts": {"total": 0, "completed": 0, "failed": 0}, "metadata": req.get("metadata"),
             "model": None, "usage": {"input_tokens": 0, "input_tokens_details": {"cached_tokens": 0},
                                      "output_tokens": 0, "output_tokens_details": {"reasoning_tokens": 0},
                                      "total_tokens": 0}}
        n = len(self.batches)
        self.batches[b["id"]] = b
        data = self.contents[fid]  # read now: the client may delete the input file while the batch runs
        lines = [ln for ln in data.decode("utf-8", "replace").splitlines() if ln.strip()]
        self.batch_lines += len(lines)
        # counted on creation, what a client could be billed for at worst
        self.custom_ids.update({req["custom_id"] for req in _parsed(lines)})
        expire = self.expire_after if n < self.expire_batches else None
        fail = n < self.fail_batches
        self.tasks[b["id"]] = asyncio.create_task(self._run(b, lines, len(data), fail=fail, expire=expire))
        return JSONResponse(b)

    def retrieve(self, request: Request) -> Response:
        b = self.batches.get(request.path_params["batch_id"])
        return JSONResponse(b) if b else _error(404, f"No batch found with id '{request.path_params['batch_id']}'.")

    def list(self, request: Request) -> Response:
        try:
            limit = min(max(int(request.query_params.get("limit", 20)), 1), 100)
        except ValueError:
            return _error(400, "limit must be an integer between 1 and 100.", "invalid_value", "limit")
        newest = list(reversed(self.batches.values()))
        after = request.query_params.get("after")
        if after:
            ids = [b["id"] for b in newest]
            newest = newest[ids.index(after) + 1:] if after in ids else []
        page = newest[:limit]
        return JSONResponse({"object": "list", "data": page, "first_id": page[0]["id"] if page else None,
                             "last_id": page[-1]["id"] if page else None, "has_more": len(newest) > limit})

    def cancel(self, request: Request) -> Response:
        b = self.batches.get(request.path_params["batch_id"])
        if not b:
            return _error(404, f"No batch found with id '{request.path_params['batch_id']}'.")
        if b["status"] in ("validating", "in_progress", "finalizing") and b["id"] not in self.cancel_requested:
            if b["status"] == "finalizing":  # too late: every line is done
                return _error(409, "Cannot cancel a batch that is finalizing.")
            self.cancel_requested.add(b["id"])
            b["status"], b["cancelling_at"] = "cancelling", int(time.time())
        elif b["status"] not in ("cancelling", "cancelled"):
            return _error(409, f"Cannot cancel a batch with status '{b['status']}'.")
        return JSONResponse(b)

    # --- the work

    def _validate(self, b: dict, lines: list[str], nbytes: int) -> list[dict] | None:
        def err(code: str, message: str, line: int | None = None, param: str | None = None) -> list[dict]:
            return [{"code": code, "message": message, "line": line, "param": param}]
        if len(lines) > self.MAX_LINES:
            return err("too_many_requests", f"The input file has {len(lines)} requests; the limit is {self.MAX_LINES}.")
        if nbytes > self.MAX_BYTES:
            return err("file_too_large", "The input file is larger than 200 MB.")
        if not lines:
            return err("empty_file", "The input file has no requests.")
        seen: set[str] = set()
        for n, ln in enumerate(lines, 1):
            try:
                req = json.loads(ln)
                assert isinstance(req, dict)
            except (ValueError, AssertionError):
                return err("invalid_json_line", "This line is not a JSON object.", n)
            cid = req.get("custom_id")
            if not isinstance(cid, str) or not cid:
                return err("missing_required_parameter", "Missing custom_id.", n, "custom_id")
            if cid in seen:
                return err("duplicate_custom_id", f"The custom_id {cid!r} appears more than once.", n, "custom_id")
            seen.add(cid)
            if req.get("method") != "POST":
                return err("invalid_value", "Only the POST method is supported.", n, "method")
            if req.get("url") != b["endpoint"]:
                return err("mismatched_endpoint", f"The url {req.get('url')!r} does not match the batch's endpoint "
                           f"{b['endpoint']!r}.", n, "url")
            if not isinstance(req.get("body"), dict) or not req["body"].get("model"):
                return err("missing_required_parameter", "Missing body.model.", n, "body.model")
        return None

    def _line(self, req: dict) -> dict:
        """Answer one request line; returns its output record (status 200) or error record (400)."""
        self.lines_processed += 1
        rec = {"id": self._id("batch_req_"), "custom_id": req["custom_id"], "response": None, "error": None}
        rid = self._id("req_")
        if self.line_error_every and self.lines_processed % self.line_error_every == 0:
            message = "stub: injected line error"
        else:
            try:
                body = self.stub.answer(req["body"], f"stub-batch-{self.lines_processed}")
            except (KeyError, TypeError, ValueError, IndexError, AttributeError):
                message = "stub: the request body is not a valid completion request"
            else:
                rec["response"] = {"status_code": 200, "request_id": rid, "body": body}
                self.lines_answered += 1
                self.custom_ids_answered[req["custom_id"]] += 1
                for k in self.usage:
                    self.usage[k] += body["usage"][k]
                return rec
        rec["response"] = {"status_code": 400, "request_id": rid, "body": {"error": {
            "message": message, "type": "invalid_request_error", "param": None, "code": None}}}
        return rec

    def _write(self, b: dict, out: list[dict], errs: list[dict]) -> None:
        # shuffled: the order of output lines says nothing, clients must join on custom_id
        for recs, key, name in ((out, "output_file_id", "output"), (errs, "error_file_id", "errors")):
            if recs:
                self.stub.rng.shuffle(recs)
                data = "".join(json.dumps(r) + "\n" for r in recs).encode()
                b[key] = self._store_file(data, f"batch_{b['id']}_{name}.jsonl", "batch_output")["id"]

    async def _pause(self, b: dict, seconds: float) -> None:
        """Sleep, cut short by a cancel: a cancelled batch stops validating and running at once."""
        end = time.monotonic() + seconds
        while b["id"] not in self.cancel_requested and (left := end - time.monotonic()) > 0:
            await asyncio.sleep(min(left, 0.05))

    async def _run(self, b: dict, lines: list[str], nbytes: int, fail: bool, expire: int | None) -> None:
        d = self.delay
        await self._pause(b, 0.2 * d)
        cancelled_early = b["id"] in self.cancel_requested
        errors = None if cancelled_early else (
            [{"code": "invalid_request", "message": "stub: injected validation failure", "line": 1, "param": None}]
            if fail else self._validate(b, lines, nbytes))
        if errors:
            b["status"], b["failed_at"], b["errors"] = "failed", int(time.time()), {"object": "list", "data": errors}
            return
        reqs = [json.loads(ln) for ln in lines] if not cancelled_early else _parsed(lines)
        if b["id"] not in self.cancel_requested:
            b["status"], b["in_progress_at"] = "in_progress", int(time.time())
            b["model"] = reqs[0]["body"]["model"]
        b["request_counts"]["total"] = len(reqs)
        out, errs = [], []
        start, n = time.monotonic(), len(reqs)
        for i, req in enumerate(reqs):
            if b["id"] in self.cancel_requested or (expire is not None and i >= expire):
                break
            wait = start + 0.6 * d * (i + 1) / n - time.monotonic()
            if wait > 0:
                await self._pause(b, wait)
            elif i % 100 == 0:
                await asyncio.sleep(0)  # a long batch must not starve the HTTP routes
            if b["id"] in self.cancel_requested:
                break
            rec = self._line(req)
            ok = rec["response"]["status_code"] == 200
            (out if ok else errs).append(rec)
            b["request_counts"]["completed" if ok else "failed"] += 1
            if ok:
                u, bu = rec["response"]["body"]["usage"], b["usage"]
                bu["input_tokens"] += u["prompt_tokens"]
                bu["output_tokens"] += u["completion_tokens"]
                bu["total_tokens"] += u["total_tokens"]
        rest = reqs[len(out) + len(errs):]
        if b["id"] in self.cancel_requested:
            await asyncio.sleep(min(0.2 * d, self.CANCELLING))  # long delays stand for slow lines, not a slow stop
            code, final = "batch_cancelled", "cancelled"
            message = "This request was not executed because the batch was cancelled."
        elif rest:
            code, final = "batch_expired", "expired"
            message = "This request could not be executed before the completion window expired."
        else:
            b["status"], b["finalizing_at"] = "finalizing", int(time.time())
            await asyncio.sleep(0.2 * d)
            code, message, final = "", "", "completed"
        errs += [{"id": self._id("batch_req_"), "custom_id": r["custom_id"], "response": None,
                  "error": {"code": code, "message": message}} for r in rest]
        self._write(b, out, errs)
        b["status"], b[f"{final}_at"] = final, int(time.time())


class Stub:
    def __init__(self, latency: float = 0.0, rpm: int | None = None, faults: list[str] | None = None,
                 fault_rate: float = 0.0, api_key: str | None = None, seed: int = 0, hang: float = 30.0,
                 fault_after: int = 0, slots: int | None = None, single_prompt: bool = False,
                 route_faults: bool = False, judge: bool = False, judge_bad_every: int = 0, **batch: float):
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
        self.route_faults = route_faults  # --faults also hit the files/batches routes (own request count)
        self.route_requests = 0
        self.batches = Batches(self, **batch)  # the Files and Batch API; none of the above applies to its lines
        self.judge = judge  # answer datagen's judge rubric prompts with a score line (opt-in: tests of the judge)
        self.judge_bad_every = judge_bad_every  # ... except every K-th judge answer, which has no score
        self.judge_answers = 0

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

    def _fault(self, count: int | None = None) -> str | None:
        if not self.faults or (self.received if count is None else count) <= self.fault_after:
            return None
        if self._cycle is not None:
            fault = next(self._cycle)
            return None if fault == "none" else fault
        return self.rng.choice(self.faults) if self.rng.random() < self.fault_rate else None

    def _unauthorized(self, request: Request) -> Response | None:
        if self.api_key and request.headers.get("authorization") != f"Bearer {self.api_key}":
            return JSONResponse({"error": {"message": "Incorrect API key provided", "type": "invalid_request_error"}}, 401)
        return None

    def _keyed(self, route):
        """A route behind the same Bearer key check as the model routes."""
        async def guarded(request: Request) -> Response:
            denied = self._unauthorized(request)
            if denied:
                return denied
            fault = None
            if self.route_faults:
                self.route_requests += 1
                fault = self._fault(self.route_requests)
                if fault:
                    self.injected[fault] += 1
            if early := self._refusal(fault):
                return early
            result = route(request)
            result = await result if asyncio.iscoroutine(result) else result
            if fault == "timeout":  # done, then the answer is lost: a retried create makes a second batch
                await asyncio.sleep(self.hang)
            if fault == "malformed":
                return Response('{"id": "x", "object": ', media_type="application/json")
            return result
        return guarded

    @staticmethod
    def _refusal(fault: str | None) -> Response | None:
        """The faults answered at once, before any work: a 429 with Retry-After, or a 500."""
        if fault == "429":
            return JSONResponse({"error": {"message": "slow down"}}, 429, headers={"retry-after": "0.2"})
        if fault == "500":
            return JSONResponse({"error": {"message": "internal error"}}, 500)
        return None

    async def handle(self, request: Request) -> Response:
        if denied := self._unauthorized(request):
            return denied
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
        if early := self._refusal(fault):
            return early
        if fault == "timeout":
            await asyncio.sleep(self.hang)
        if self.slots:
            async with self.slots:
                await asyncio.sleep(self.latency)
        else:
            await asyncio.sleep(self.latency)
        if fault == "malformed":
            return Response('{"id": "x", "choices": [', media_type="application/json")
        self.served += 1
        return JSONResponse(self.answer(body, f"stub-{self.served}", truncated=fault == "truncated"))

    def answer(self, body: dict, rid: str, truncated: bool = False) -> dict:
        """The response dict for one request body, shared by the synchronous routes and batch lines."""
        chat = "messages" in body
        prompts = [body["messages"][-1]["content"]] if chat else body["prompt"]
        prompts = [prompts] if isinstance(prompts, str) else prompts
        max_tokens = int(body.get("max_tokens") or 256)
        choices, tin, tout = [], 0, 0
        for i, p in enumerate(prompts):
            verdict = judge_reply(p) if self.judge else None
            if verdict is not None:
                self.judge_answers += 1
                if self.judge_bad_every and self.judge_answers % self.judge_bad_every == 0:
                    verdict = "I would rather not give this one a number."
                text, finish = verdict, "stop"
            else:
                text, finish = reply_for(p, self.rng, max_tokens)
            if truncated:
                text, finish = text[: max(1, len(text) // 2)], "length"
            tin += len(p) // 4
            tout += len(text) // 4
            if chat:
                choices.append({"index": i, "message": {"role": "assistant", "content": text}, "finish_reason": finish})
            else:
                choices.append({"index": i, "text": text, "finish_reason": finish, "logprobs": None})
        return {
            "id": rid, "object": "chat.completion" if chat else "text_completion",
            "created": int(time.time()), "model": body.get("model", "stub"), "choices": choices,
            "usage": {"prompt_tokens": tin, "completion_tokens": tout, "total_tokens": tin + tout},
        }

    def stats(self, _request: Request) -> Response:
        return JSONResponse({"served": self.served, "received": self.received, "rate_limited": self.rejected,
                             "injected": dict(self.injected), "judge_answers": self.judge_answers, **self.batches.stats()})

    def app(self) -> Starlette:
        routes = [Route(p, self.handle, methods=["GET", "POST"]) for p in ("/v1/models", "/v1/chat/completions", "/v1/completions")]
        routes.append(Route("/stats", self.stats))
        b = self.batches
        routes += [Route("/v1/files", self._keyed(b.upload), methods=["POST"]),
                   Route("/v1/files/{file_id}", self._keyed(b.file)),
                   Route("/v1/files/{file_id}", self._keyed(b.delete), methods=["DELETE"]),
                   Route("/v1/files/{file_id}/content", self._keyed(b.content)),
                   Route("/v1/batches", self._keyed(b.create), methods=["POST"]),
                   Route("/v1/batches", self._keyed(b.list)),
                   Route("/v1/batches/{batch_id}", self._keyed(b.retrieve)),
                   Route("/v1/batches/{batch_id}/cancel", self._keyed(b.cancel), methods=["POST"])]
        return Starlette(routes=routes)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8001)
    ap.add_argument("--latency", type=float, default=0.0)
    ap.add_argument("--rpm", type=int, default=None)
    ap.add_argument("--faults", default="", help="comma list of 429,500,timeout,malformed,truncated; none = a clean answer (to space faults in a --fault-rate 1 cycle)")
    ap.add_argument("--fault-rate", type=float, default=0.0, help="share of requests that get a fault; 1 cycles through the list")
    ap.add_argument("--api-key", default=None)
    ap.add_argument("--hang", type=float, default=30.0, help="seconds a 'timeout' fault holds the request")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--fault-after", type=int, default=0, help="serve this many model requests cleanly before any fault")
    ap.add_argument("--slots", type=int, default=None, help="model requests worked on at once; the rest wait (server-side queue)")
    ap.add_argument("--single-prompt", action="store_true", help="answer a list of prompts with HTTP 500, like llama.cpp's server")
    ap.add_argument("--batch-delay", type=float, default=1.0,
                    help="seconds a batch takes: validating 20%%, in_progress 60%%, finalizing 20%%")
    ap.add_argument("--line-error-every", type=int, default=0,
                    help="every K-th batch line processed (one count over all batches) gets a 400; 0 = none")
    ap.add_argument("--expire-batches", type=int, default=0, help="the first N batches created expire ...")
    ap.add_argument("--expire-after", type=int, default=0, help="... after this many of their lines are done")
    ap.add_argument("--fail-batches", type=int, default=0, help="the first N batches created fail validation")
    ap.add_argument("--judge-answers", action="store_true",
                    help="answer datagen's judge rubric prompts with a score and a reason (in varied shapes)")
    ap.add_argument("--judge-bad-every", type=int, default=0, help="with --judge-answers: every K-th judge answer has no score")
    ap.add_argument("--route-faults", action="store_true",
                    help="--faults also hit the /v1/files and /v1/batches routes (a timeout acts, then hangs)")
    a = ap.parse_args()
    stub = Stub(a.latency, a.rpm, [f for f in a.faults.split(",") if f], a.fault_rate, a.api_key, a.seed, a.hang,
                a.fault_after, a.slots, a.single_prompt, a.route_faults, a.judge_answers, a.judge_bad_every, delay=a.batch_delay,
                line_error_every=a.line_error_every, expire_batches=a.expire_batches, expire_after=a.expire_after,
                fail_batches=a.fail_batches)
    uvicorn.run(stub.app(), host=a.host, port=a.port, log_level="warning", backlog=4096, limit_concurrency=None)


if __name__ == "__main__":
    main()
