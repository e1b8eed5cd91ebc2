"""The prefill window over HTTP: while a request's first pass runs it is in no queue, yet it is the engine's work.

A forward hook holds every long prefill (more than 64 fed positions) for a moment, so the window is wide and the
tests do not depend on timing luck:
- with two engine slots, a second setting arriving during the first one's prefill must not evict its engine (the
  first request was never answered): the first is answered, the second is answered or told to retry (503);
- a streaming client that disconnects during its prefill costs at most that pass: its row decodes nothing more.
"""

import asyncio
import time

import httpx
import pytest
from serving import NAME, ServerThread

pytest.importorskip("fastapi")

HOLD_S = 0.6


@pytest.fixture
def slow_prefill_server(loaded):
    from selfdistill.decode.registry import make_strategy
    from selfdistill.serve.app import create_app

    model, tok = loaded

    def hold(module, args, kwargs):
        ids = kwargs.get("input_ids")
        if ids is not None and ids.shape[1] > 64:
            time.sleep(HOLD_S)

    handle = model.register_forward_pre_hook(hold, with_kwargs=True)
    app = create_app(model, tok, model_name=NAME, strategy=make_strategy("conf_adapt", threshold=0.9), max_batch=4,
                     max_engines=2)
    try:
        with ServerThread(app) as running:
            yield running
    finally:
        handle.remove()


def _long_prompt() -> str:
    return "Question: " + " ".join(f"Tom has {i} apples." for i in range(40)) + " How many?\nAnswer:"


def test_an_engine_is_not_evicted_while_its_request_prefills(slow_prefill_server):
    url = slow_prefill_server.url

    async def run():
        async with httpx.AsyncClient(timeout=60) as http:
            first = asyncio.create_task(http.post(f"{url}/v1/completions", json={
                "model": NAME, "prompt": _long_prompt(), "max_tokens": 8, "selfdistill": {"strategy": "static",
                                                                                        "k": 2}}))
            await asyncio.sleep(HOLD_S / 3)  # inside the first request's prefill
            second = await http.post(f"{url}/v1/completions", json={
                "model": NAME, "prompt": "hi", "max_tokens": 4, "selfdistill": {"strategy": "static", "k": 3}})
            return await asyncio.wait_for(first, timeout=30), second

    first, second = asyncio.run(run())
    assert first.status_code == 200 and first.json()["choices"][0]["text"] is not None
    assert second.status_code in (200, 503), second.text
    if second.status_code == 503:
        assert second.json()["error"]["code"] == "engines_busy"


def test_a_client_that_leaves_during_prefill_costs_at_most_that_pass(slow_prefill_server):
    url = slow_prefill_server.url
    body = {"model": NAME, "prompt": _long_prompt(), "max_tokens": 400, "stream": True,
            "selfdistill": {"strategy": "static", "k": 2}}

    async def leave_during_prefill():
        async with httpx.AsyncClient(timeout=60) as http:
            request = asyncio.create_task(http.post(f"{url}/v1/completions", json=body))
            await asyncio.sleep(HOLD_S / 3)
            request.cancel()  # the connection closes while the prompt's first pass runs
            try:
                await request
            except (asyncio.CancelledError, httpx.HTTPError):
                pass

    asyncio.run(leave_during_prefill())
    time.sleep(HOLD_S + 1.0)  # the held prefill is over; a row still decoding would now be many passes in
    state = httpx.get(f"{url}/health", timeout=10).json()
    engine = next(e for e in state["engines"] if e["setting"] == "static_k2")
    assert state["cancelled"] == 1 and state["running"] == 0 and state["waiting"] == 0
    assert state["max_passes_after_cancel"] <= 1  # the engine's own record: the pass already running, no more
    assert 1 <= engine["model_calls"] <= 2  # its prefill, and at most one more: not 200 passes to its budget
    time.sleep(0.5)
    later = next(e for e in httpx.get(f"{url}/health", timeout=10).json()["engines"] if e["setting"] == "static_k2")
    assert later["model_calls"] == engine["model_calls"]
