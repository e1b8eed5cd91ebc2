"""The FastAPI application: ``/v1/completions``, ``/v1/chat/completions`` (streamed as server-sent events or
whole), ``/v1/models`` and ``/health``, over one :class:`~selfdistill.serve.scheduler.Scheduler`.

Every request is parsed and planned (:mod:`selfdistill.serve.plan`) before it reaches the scheduler, so bad input
costs no model work and gets a 4xx with an OpenAI-style error body. A client that disconnects has its rows
cancelled: while streaming, Starlette cancels the response generator (whose ``finally`` cancels them); otherwise a
watcher on the connection does.
"""

from __future__ import annotations

import asyncio
import copy
import functools
import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException

from selfdistill.decode.registry import Strategy
from selfdistill.decode.engine import strategy_for
from selfdistill.serve.plan import Plan, ServeContext, plan_chat, plan_completion
from selfdistill.serve.responses import (FINISH_REASONS, TextStream, chunk_body, completion_body, new_id,
                                         usage_chunk)
from selfdistill.serve.scheduler import Scheduler
from selfdistill.serve.schemas import APIError, ChatRequest, CompletionRequest, parse_body

log = logging.getLogger("selfdistill.serve")
#: Default cap on a request body: ample for any context this engine serves (a 2,048-token prompt is ~10 KB).
MAX_BODY_BYTES = 1 << 20


def create_app(model, tokenizer, *, model_name: str, strategy: Strategy, max_batch: int = 16,
               max_engines: int = 4, chat_template: str | None = None, default_max_tokens: int = 256,
               max_body_bytes: int = MAX_BODY_BYTES) -> FastAPI:
    """The server over ``model`` (eval mode, on its device). The scheduler thread starts with the app's lifespan
    (uvicorn) and stops with it. A request body over ``max_body_bytes`` is a 413; parsing, templating and
    tokenizing run on one planner thread, off the event loop, so a long prompt never stalls other requests."""
    strategy = strategy_for(model, strategy)  # as the model decodes it (a no-op for one built so already)
    scheduler = Scheduler(model, tokenizer, strategy, max_batch=max_batch, max_engines=max_engines)
    planner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="selfdistill-plan")  # one tokenizer user
    ctx = ServeContext(model_name=model_name, tokenizer=copy.deepcopy(tokenizer), strategy=strategy,
                       max_positions=getattr(model.config, "max_position_embeddings", None),
                       check_setting=scheduler.check_setting, chat_template=chat_template,
                       default_max_tokens=default_max_tokens,
                       vocab_size=model.get_input_embeddings().weight.shape[0],
                       resolve=functools.partial(strategy_for, model))
    created = int(time.time())

    @asynccontextmanager
    async def lifespan(_app):
        scheduler.start()
        try:
            yield
        finally:
            scheduler.stop()
            planner.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="selfdistill", lifespan=lifespan)
    app.state.scheduler, app.state.ctx = scheduler, ctx
    _error_handlers(app)

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": model_name, "strategy": strategy.setting_name} | scheduler.stats()

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [_model_card(model_name, created)]}

    @app.get("/v1/models/{model_id:path}")
    async def model_card(model_id: str):
        if model_id != model_name:
            raise APIError(404, f"the model {model_id!r} does not exist", param="model", code="model_not_found")
        return _model_card(model_name, created)

    async def planned(request: Request, cls, plan_fn) -> Plan:
        raw = await _read_body(request, max_body_bytes)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(planner, lambda: plan_fn(parse_body(raw, cls), ctx))

    @app.post("/v1/completions")
    async def completions(request: Request):
        return await _serve(request, await planned(request, CompletionRequest, plan_completion), scheduler, ctx,
                            chat=False)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        return await _serve(request, await planned(request, ChatRequest, plan_chat), scheduler, ctx, chat=True)

    return app


async def _read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with a 413 as soon as it is known to exceed ``limit`` bytes (by its
    Content-Length, or while it streams in)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise APIError(413, f"the request body ({declared} bytes) exceeds this server's limit of {limit} bytes "
                       "(--max-body-bytes)", code="request_too_large")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise APIError(413, f"the request body exceeds this server's limit of {limit} bytes (--max-body-bytes)",
                           code="request_too_large")
        chunks.append(chunk)
    return b"".join(chunks)


def _model_card(name: str, created: int) -> dict:
    return {"id": name, "object": "model", "created": created, "owned_by": "selfdistill"}


def _error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def api_error(_request, err: APIError):
        return JSONResponse(err.body(), status_code=err.status)

    @app.exception_handler(HTTPException)
    async def http_error(_request, err: HTTPException):  # unknown route, wrong method
        kind = "not_found" if err.status_code == 404 else "invalid_request_error"
        return JSONResponse(APIError(err.status_code, str(err.detail), type=kind).body(), status_code=err.status_code)

    @app.exception_handler(Exception)
    async def internal_error(_request, err: Exception):
        log.exception("request failed")
        body = APIError(500, f"internal error: {type(err).__name__}: {err}", type="server_error").body()
        return JSONResponse(body, status_code=500)


async def _serve(request: Request, plan: Plan, scheduler: Scheduler, ctx: ServeContext, *, chat: bool):
    queue: asyncio.Queue = asyncio.Queue()
    handles = []
    try:
        for i, prompt in enumerate(plan.prompts):
            handles.append(scheduler.submit(prompt, max_new_tokens=plan.max_new_tokens, stops=plan.stops,
                                            strategy=plan.strategy, queue=queue, index=i))
    except BaseException:
        _cancel(scheduler, handles)
        raise
    rid = new_id("chatcmpl" if chat else "cmpl")
    if plan.stream:
        events = _stream(plan, queue, handles, scheduler, ctx, rid=rid, chat=chat)
        return StreamingResponse(events, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
    try:
        completions = await _collect(request, queue, len(handles))
    finally:
        _cancel(scheduler, handles)
    if completions is None:  # the client is gone: nobody reads this
        return Response(status_code=499)
    return JSONResponse(completion_body(rid, ctx.model_name, completions, plan.prompt_tokens, chat=chat))


def _cancel(scheduler: Scheduler, handles) -> None:
    for h in handles:
        scheduler.cancel(h)  # no effect on a finished request


async def _collect(request: Request, queue: asyncio.Queue, n: int):
    """Every choice's :class:`Completion`, or ``None`` if the client disconnected first."""
    done = [None] * n
    watcher = asyncio.create_task(_disconnected(request))
    try:
        while any(d is None for d in done):
            getter = asyncio.create_task(queue.get())
            finished, _ = await asyncio.wait({getter, watcher}, return_when=asyncio.FIRST_COMPLETED)
            if getter not in finished:
                getter.cancel()
                return None
            index, kind, payload = getter.result()
            if kind == "error":
                raise APIError(500, payload, type="server_error", code="decode_failed")
            if kind == "done":
                done[index] = payload
        return done
    finally:
        watcher.cancel()


async def _disconnected(request: Request) -> None:
    """Returns once the client has closed the connection (the body was read already)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _stream(plan: Plan, queue: asyncio.Queue, handles, scheduler: Scheduler, ctx: ServeContext, *, rid: str,
                  chat: bool):
    """Server-sent events in OpenAI's chunk format, ending with ``data: [DONE]``."""
    name = ctx.model_name
    texts = [TextStream(ctx.tokenizer, plan.stops) for _ in handles]
    done = [None] * len(handles)
    try:
        if chat:
            for i in range(len(handles)):
                yield _sse(chunk_body(rid, name, i, chat=True, role=True))
        while any(d is None for d in done):
            index, kind, payload = await queue.get()
            if kind == "error":
                yield _sse(APIError(500, payload, type="server_error", code="decode_failed").body())
                break
            if kind == "tokens":
                text = texts[index].push(payload)
            else:
                done[index], text = payload, texts[index].finish(payload.text)
            if text:
                yield _sse(chunk_body(rid, name, index, chat=chat, text=text))
            if kind == "done":
                yield _sse(chunk_body(rid, name, index, chat=chat, finish_reason=FINISH_REASONS[payload.finish_reason]))
        else:
            if plan.include_usage:
                yield _sse(usage_chunk(rid, name, plan.prompt_tokens, done, chat=chat))
        yield "data: [DONE]\n\n"
    finally:  # finished, failed, or cancelled because the client went away
        _cancel(scheduler, handles)


def _sse(payload: dict) -> str:
    return f"data: {json.dumps(payload)}\n\n"
