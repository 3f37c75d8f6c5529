"""A pool of Ray actors, each holding one model replica, behind the backend protocol.

Only inference leaves this process. The coordinator (the pipeline's decisions, the exact ROUGE-L
index, the database writes, the request ledger) stays here unchanged: to it the pool is one
more backend whose `complete(prompts)` sends a batch to the least busy replica.

    datagen generate --api local --model smollm2 --ray auto --replicas 2
    datagen generate --api local --model /models/llama --ray 10.0.0.5:6379 --replicas 8 --gpus-per-replica 1

Replicas are placed by Ray's scheduler from their reservation (`num_cpus` = threads per replica,
`num_gpus` = GPUs per replica), spread over nodes. Every node needs datagen and the model path.

Faults: a replica whose process or node dies is restarted by Ray (`max_restarts`), reloading its
model. Ray itself never re-runs a call (`max_task_retries=0`): the batch that was in flight fails
here as a retryable BackendError, so the client retries it (on another replica while this one is
down) and the ledger holds one row per attempt. Each prompt gets exactly one answer.

Replicas are named actors in namespace "datagen": datagen-<host>-<driver pid>-<i>, so an operator
(or a test) can find one with `ray.get_actor(name, namespace="datagen")`.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import os
import socket
import threading
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Callable

from datagen.backends.local import LocalBackend
from datagen.errors import BackendError, FatalBackendError
from datagen.records import Generation, Prompt

NAMESPACE = "datagen"
# Calls a replica runs at once: `info` beside the batches, and for a continuous engine the batches together.
MAX_CONCURRENCY = 32
EXTRA = "pip install 'datagen[ray]'"


def import_ray():
    """Ray is an optional extra; the core imports it only here, only for --ray."""
    try:
        import ray
    except ImportError:
        raise FatalBackendError(f"--ray needs Ray, which is not installed: {EXTRA}") from None
    return ray


def replica_name(i: int, pid: int | None = None, host: str | None = None) -> str:
    return f"datagen-{host or socket.gethostname()}-{pid or os.getpid()}-{i}"


def make_engine(model: str | None, *, engine: str, batch_size: int, context_window: int | None, threads: int, gpus: float):
    """The engine a replica holds. auto: vLLM when it is importable on the worker and the replica has a GPU."""
    if engine == "auto":
        engine = "vllm" if gpus > 0 and importlib.util.find_spec("vllm") else "transformers"
    if engine == "vllm":
        from datagen.backends.vllm_engine import VLLMEngine

        return VLLMEngine(model, context_window=context_window, tensor_parallel=max(1, int(gpus)))
    if engine == "llamacpp":
        from datagen.backends.llamacpp import LlamaCppBackend

        return LlamaCppBackend(model, batch_size=batch_size, context_window=context_window, threads=threads)
    if engine == "transformers":
        return LocalBackend(model, batch_size=batch_size, context_window=context_window, threads=threads,
                            device_map="auto" if gpus > 1 else None)
    raise FatalBackendError(f"unknown --engine {engine!r}: use auto, transformers, llamacpp or vllm")


class Replica:
    """The actor: one engine, loaded in the constructor, so a restarted replica is ready once it answers.

    Ray runs several calls at a time in it (MAX_CONCURRENCY) so `info` answers while a batch runs.
    An engine that feeds continuously (the slot engine on CUDA, llama.cpp: `continuous`) takes every
    call at once, so prompts of a later batch join rows as earlier ones finish; any other engine's
    batches take turns.
    """

    def __init__(self, factory: Callable[[], Any]):
        self._engine = factory()
        self._engine.load()
        self._lock = threading.Lock()
        self._count = threading.Lock()
        self._busy = 0

    def info(self) -> dict:
        import ray  # inside a Ray worker, so always there

        e = self._engine
        return {"pid": os.getpid(), "host": socket.gethostname(), "node": ray.get_runtime_context().get_node_id(),
                "engine": e.engine, "loop": getattr(e, "loop", None), "device": e.device, "busy": self._busy}

    def generate(self, prompts: list[Prompt]) -> list[Generation]:
        with self._count:
            self._busy += 1
        try:
            with nullcontext() if getattr(self._engine, "continuous", False) else self._lock:
                return self._engine.generate(prompts)
        finally:
            with self._count:
                self._busy -= 1


@dataclass
class _Slot:
    index: int
    handle: Any
    info: dict = field(default_factory=dict)
    inflight: int = 0
    calls: int = 0
    down: bool = False  # lost; Ray is restarting it, a watcher marks it up again
    dead: bool = False  # not back within restart_wait: out of the pool


class RayPool:
    """`Backend` over N Ray replicas. Tokens are counted here with the model's tokenizer (no weights)."""

    name = "local"

    def __init__(
        self,
        model: str | None,
        *,
        address: str = "auto",
        replicas: int = 1,
        gpus_per_replica: float = 0.0,
        threads_per_replica: int = 1,
        batch_size: int = 16,
        context_window: int | None = None,
        engine: str = "auto",
        max_restarts: int = 3,
        restart_wait: float = 600.0,
        engine_factory: Callable[[], Any] | None = None,
    ):
        self.ray = import_ray()
        if replicas < 1 or threads_per_replica < 1 or gpus_per_replica < 0:
            raise ValueError("--replicas and --threads-per-replica must be >= 1, --gpus-per-replica >= 0")
        self.address = address
        self.replicas = replicas
        self.gpus = gpus_per_replica
        self.threads = threads_per_replica
        self.max_batch = max(1, batch_size)
        self.max_restarts = max_restarts
        self.restart_wait = restart_wait
        self._driver_side = LocalBackend(model, batch_size=batch_size, context_window=context_window)  # never loads weights
        self.model = self._driver_side.model
        self._factory = engine_factory or partial(
            make_engine, model, engine=engine, batch_size=batch_size, context_window=context_window,
            threads=threads_per_replica, gpus=gpus_per_replica,
        )
        self._slots: list[_Slot] = []
        self._watchers: set[asyncio.Task] = set()
        self._started_ray = False

    # ------------------------------------------------------------ protocol

    @property
    def context_window(self) -> int:
        return self._driver_side.context_window

    def count_tokens(self, text: str) -> int:
        return self._driver_side.count_tokens(text)

    async def check(self) -> None:
        ray = self.ray
        if not ray.is_initialized():
            # auto: a local Ray instance, or the cluster in RAY_ADDRESS (set for `ray job submit` entrypoints).
            # An address: a driver on the head node joins through the GCS (host:6379); ray://host:10001 is Ray Client.
            kw: dict[str, Any] = {"logging_level": logging.ERROR, "log_to_driver": False}  # errors reach us as exceptions
            if self.address not in (None, "", "auto"):
                kw["address"] = self.address
            try:
                ray.init(**kw)
            except Exception as exc:
                raise FatalBackendError(f"cannot start or join Ray at {self.address}: {exc}".splitlines()[0]) from None
            self._started_ray = True
        have = ray.cluster_resources()
        for res, per in (("CPU", self.threads), ("GPU", self.gpus)):
            need = per * self.replicas
            if need > have.get(res, 0):
                raise FatalBackendError(
                    f"{self.replicas} replicas need {need:g} {res}s and the Ray cluster has {have.get(res, 0):g}: "
                    "lower --replicas, --threads-per-replica or --gpus-per-replica, or add nodes"
                )
        # The tokenizer here; for a GGUF model this also converts it once, before the replicas would race to.
        await asyncio.to_thread(self._driver_side.load_tokenizer)
        actor = ray.remote(Replica)
        for i in range(self.replicas):
            handle = actor.options(
                name=replica_name(i), namespace=NAMESPACE, num_cpus=self.threads, num_gpus=self.gpus,
                max_restarts=self.max_restarts, max_task_retries=0, max_concurrency=MAX_CONCURRENCY, scheduling_strategy="SPREAD",
            ).remote(self._factory)
            self._slots.append(_Slot(i, handle))
        try:
            infos = await asyncio.gather(*(s.handle.info.remote() for s in self._slots))
        except Exception as exc:
            await self.aclose()
            cause = getattr(exc, "cause", None) or exc
            raise FatalBackendError(f"a Ray replica failed to start: {cause}".splitlines()[0]) from None
        for s, info in zip(self._slots, infos):
            s.info = info

    async def complete(self, prompts: list[Prompt]) -> list[Generation]:
        ex = self.ray.exceptions
        s = self._pick()
        s.inflight += 1
        s.calls += 1
        try:
            return await s.handle.generate.remote(prompts)
        except ex.RayActorError as exc:  # its process or node died: Ray restarts it, the client retries the batch
            self._lost(s)
            raise BackendError(f"replica {s.index} lost: {exc.__class__.__name__}", retryable=True) from None
        except ex.RayTaskError as exc:  # the engine raised inside the replica
            cause = exc.cause if getattr(exc, "cause", None) is not None else exc
            if isinstance(cause, FatalBackendError):
                raise FatalBackendError(str(cause)) from None
            raise BackendError(f"replica {s.index}: {cause.__class__.__name__}: {cause}".splitlines()[0][:300], retryable=True) from None
        except ex.RayError as exc:  # object lost, node died, out of memory: all worth another try
            self._lost(s)
            raise BackendError(f"replica {s.index} lost: {exc.__class__.__name__}", retryable=True) from None
        finally:
            s.inflight -= 1

    async def aclose(self) -> None:
        for t in self._watchers:
            t.cancel()
        for s in self._slots:
            try:
                self.ray.kill(s.handle)
            except Exception:  # already gone
                pass
        self._slots = []
        if self._started_ray:
            self.ray.shutdown()
            self._started_ray = False

    # ------------------------------------------------------------ routing and recovery

    def describe(self) -> list[dict]:
        """Per replica: where it runs and on what (engine, device, host, node, pid); kept in the run's config."""
        return [{"index": s.index, **{k: v for k, v in s.info.items() if k != "busy"}} for s in self._slots]

    def _pick(self) -> _Slot:
        alive = [s for s in self._slots if not s.dead]
        if not alive:
            raise FatalBackendError(f"all {self.replicas} Ray replicas died and none came back within {self.restart_wait:.0f} s")
        up = [s for s in alive if not s.down] or alive  # none up: queue on one Ray is restarting
        return min(up, key=lambda s: (s.inflight, s.calls))

    def _lost(self, s: _Slot) -> None:
        if s.down:
            return
        s.down = True
        t = asyncio.create_task(self._watch(s))
        self._watchers.add(t)
        t.add_done_callback(self._watchers.discard)

    async def _watch(self, s: _Slot) -> None:
        """Ping a lost replica until Ray has restarted it (its model loaded), or give it up."""
        deadline = time.monotonic() + self.restart_wait
        while time.monotonic() < deadline:
            try:
                s.info = await asyncio.wait_for(s.handle.info.remote(), timeout=max(1.0, deadline - time.monotonic()))
                s.down = False
                return
            except asyncio.TimeoutError:
                break
            except self.ray.exceptions.RayError:
                await asyncio.sleep(1.0)
        s.dead = True
