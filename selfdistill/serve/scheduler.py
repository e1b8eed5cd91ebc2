"""One thread drives the decoding engines; HTTP handlers submit requests to it and read their events.

There is one :class:`~selfdistill.decode.engine.DecodeEngine` per distinct decoding setting (a validated, hashable
:class:`~selfdistill.decode.registry.Strategy`): the server's own, plus one per per-request setting, created on
demand and at most ``max_engines`` at once (an idle one is evicted to make room; when all are busy the request is
refused with a 503). All engines share the one model and run on the one scheduler thread, one pass each in turn, so
a pass never mixes settings and every request decodes exactly as it would alone.

A request joins its engine's running batch at the engine's next step (``DecodeEngine.add`` is thread-safe) and
leaves when it finishes or is cancelled (``DecodeEngine.cancel``: its row is dropped before the next pass; the
other rows never notice). Each step's :class:`~selfdistill.decode.results.Update` is handed to the request's
asyncio queue on the event loop that submitted it (``loop.call_soon_threadsafe``). An engine that raises fails its
own requests with an error event and is replaced; the others keep going.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
from dataclasses import dataclass

from selfdistill.decode.engine import DecodeEngine, check_engine_setting
from selfdistill.decode.registry import Strategy
from selfdistill.serve.schemas import APIError

log = logging.getLogger("selfdistill.serve")


@dataclass
class Handle:
    """One submitted request: its engine id, the index of its choice, and where its events go. Events are
    ``(index, "tokens", list[int])``, ``(index, "done", Completion)`` and ``(index, "error", str)``."""

    request_id: int
    index: int
    queue: asyncio.Queue
    loop: asyncio.AbstractEventLoop
    engine: DecodeEngine

    def push(self, kind: str, payload) -> None:
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, (self.index, kind, payload))
        except RuntimeError:  # the client's event loop is gone (server shutting down)
            pass


class Scheduler:
    """Engines per setting and the thread that steps them; see the module docstring."""

    def __init__(self, model, tokenizer, strategy: Strategy, *, max_batch: int = 16, max_engines: int = 4):
        if max_engines < 1:
            raise ValueError(f"max_engines must be >= 1, got {max_engines}")
        self.model, self.tokenizer, self.default = model, tokenizer, strategy
        self.max_batch, self.max_engines = max_batch, max_engines
        self._engines: dict[Strategy, DecodeEngine] = {}
        self._handles: dict[int, Handle] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._ids = itertools.count()
        self._stopping = False
        self.cancelled = 0
        self.completed = 0
        self._evicted_passes_after_cancel = 0  # evicted engines' most passes after a cancel, kept for /health
        with self._lock:
            self._engine_for(strategy)  # a strategy the model cannot run fails at start-up
        self._thread = threading.Thread(target=self._loop, name="selfdistill-scheduler", daemon=True)

    # ---- the HTTP side (event-loop thread) --------------------------------------------------------------------
    def check_setting(self, strategy: Strategy) -> None:
        """Refuse a setting the model cannot decode (e.g. masks on a model without ``<mtp>``), before any work."""
        if strategy not in self._engines:
            check_engine_setting(self.model, strategy)

    def submit(self, prompt: list[int], *, max_new_tokens: int, stops: list[str], strategy: Strategy,
               queue: asyncio.Queue, index: int = 0) -> Handle:
        with self._lock:
            engine = self._engine_for(strategy)
            rid = next(self._ids)
            handle = Handle(rid, index, queue, asyncio.get_running_loop(), engine)
            engine.add(prompt, max_new_tokens=max_new_tokens, stop_strings=stops or None, request_id=rid)
            self._handles[rid] = handle
        self._wake.set()
        return handle

    def cancel(self, handle: Handle) -> None:
        """Drop a request that has not finished (no effect on one that has)."""
        with self._lock:
            if self._handles.pop(handle.request_id, None) is not None:
                handle.engine.cancel(handle.request_id)
                self.cancelled += 1

    def stats(self) -> dict:
        with self._lock:
            engines = [{"setting": s.setting_name, "running": e.running, "waiting": e.waiting,
                        "model_calls": e.model_calls} for s, e in self._engines.items()]
            late = max([self._evicted_passes_after_cancel, *(e.passes_after_cancel for e in self._engines.values())])
        return {"running": sum(e["running"] for e in engines), "waiting": sum(e["waiting"] for e in engines),
                "completed": self.completed, "cancelled": self.cancelled, "max_passes_after_cancel": late,
                "engines": engines}

    def _engine_for(self, strategy: Strategy) -> DecodeEngine:
        """The engine of ``strategy`` (caller holds the lock), made on demand, evicting an idle one if full."""
        if strategy in self._engines:
            return self._engines[strategy]
        if len(self._engines) >= self.max_engines:
            idle = [s for s, e in self._engines.items() if not e.has_work and s != self.default]
            if not idle:
                raise APIError(503, f"all {self.max_engines} decoding settings are busy; retry, or use the "
                               "server's default setting", param="selfdistill", code="engines_busy",
                               type="server_error")
            self._evicted_passes_after_cancel = max(self._evicted_passes_after_cancel,
                                                    self._engines[idle[0]].passes_after_cancel)
            del self._engines[idle[0]]
        engine = DecodeEngine(self.model, strategy, max_batch=self.max_batch, tokenizer=self.tokenizer,
                              pad_token_id=self.tokenizer.pad_token_id)
        self._engines[strategy] = engine
        return engine

    # ---- the scheduler thread ---------------------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)

    def _loop(self) -> None:
        while not self._stopping:
            with self._lock:
                busy = [e for e in self._engines.values() if e.has_work]
            if not busy:
                self._wake.wait(timeout=0.5)
                self._wake.clear()
                continue
            for engine in busy:  # one pass per engine in turn
                try:
                    updates = engine.step()
                except Exception as err:  # noqa: BLE001  (one engine's failure must not stop the server)
                    log.exception("decoding failed; failing the requests of setting %s", engine.strategy)
                    self._fail(engine, f"decoding failed: {type(err).__name__}: {err}")
                    continue
                self._deliver(updates)

    def _deliver(self, updates) -> None:
        with self._lock:
            routed = [(self._handles.get(u.request_id), u) for u in updates]
            for handle, u in routed:
                if handle is not None and u.finished:
                    del self._handles[u.request_id]
                    self.completed += 1
        for handle, u in routed:
            if handle is None:  # cancelled meanwhile
                continue
            if u.new_tokens:
                handle.push("tokens", u.new_tokens)
            if u.finished:
                handle.push("done", u.completion)

    def _fail(self, engine: DecodeEngine, message: str) -> None:
        with self._lock:
            failed = [h for h in self._handles.values() if h.engine is engine]
            for h in failed:
                del self._handles[h.request_id]
            if self._engines.get(engine.strategy) is engine:
                del self._engines[engine.strategy]
        for h in failed:
            h.push("error", message)
