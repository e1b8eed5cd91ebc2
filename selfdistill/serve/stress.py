"""A bounded stress run of the server on 127.0.0.1: many mixed concurrent requests (decoding settings, streamed
and whole), some of whose clients leave abruptly, then the server's own record of what it did for them.

The checks: every request whose client stayed is answered (HTTP 200, text); every client that left is accounted for
(cancelled, finished before it left, or gone before its request was admitted); nothing is left running; and no
cancelled row took part in more than one pass after its client left (``/health``'s ``max_passes_after_cancel``: the
pass already running when the client left may finish).
"""

from __future__ import annotations

import asyncio
import json
import random
import time

#: The decoding settings the requests cycle through (``selfdistill`` request options).
SETTINGS = ({"strategy": "conf_adapt", "threshold": 0.9}, {"strategy": "verify"}, {"strategy": "static", "k": 2},
            {"strategy": "static", "k": 3})


def plan(n_requests: int, n_leave: int, *, model: str, prompts: list[str], max_tokens: int, seed: int) -> list[dict]:
    """The requests: ``body`` (cycling through prompts, settings and streamed/whole) and ``leave_after`` (seconds
    after which the client leaves, ``None`` to stay), the leavers drawn under ``seed``."""
    rng = random.Random(seed)
    leavers = set(rng.sample(range(n_requests), n_leave))
    return [{"body": {"model": model, "prompt": prompts[i % len(prompts)], "max_tokens": max_tokens,
                      "stream": i % 2 == 0, "selfdistill": SETTINGS[i % len(SETTINGS)]},
             "leave_after": rng.uniform(0.0, 0.5) if i in leavers else None} for i in range(n_requests)]


async def _send(http, url: str, request: dict) -> dict:
    body, leave = request["body"], request["leave_after"]
    task = asyncio.create_task(_complete(http, f"{url}/v1/completions", body))
    if leave is None:
        return await task
    await asyncio.sleep(leave)
    task.cancel()  # the connection closes under the server
    try:
        return await task  # it may have finished first
    except asyncio.CancelledError:
        return {"left": True}


async def _complete(http, url: str, body: dict) -> dict:
    if not body["stream"]:
        resp = await http.post(url, json=body)
        text = resp.json()["choices"][0]["text"] if resp.status_code == 200 else ""
        return {"status": resp.status_code, "text": text}
    text = ""
    async with http.stream("POST", url, json=body) as resp:
        async for line in resp.aiter_lines():
            if line.startswith("data: {"):
                choices = json.loads(line[6:])["choices"]
                text += choices[0].get("text", "") if choices else ""
        return {"status": resp.status_code, "text": text}


def run(url: str, requests: list[dict], *, timeout: float = 300.0) -> dict:
    """Send ``requests`` at once, wait for the server to go idle (bounded by ``timeout``), and check it."""
    import httpx

    async def send_all():
        async with httpx.AsyncClient(timeout=timeout) as http:
            return await asyncio.wait_for(asyncio.gather(*[_send(http, url, r) for r in requests]), timeout)

    start = time.monotonic()
    results = asyncio.run(send_all())
    deadline = time.monotonic() + 60
    while True:
        state = httpx.get(f"{url}/health", timeout=10).json()
        if (state["running"] == 0 and state["waiting"] == 0) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    stayed = [r for q, r in zip(requests, results) if q["leave_after"] is None]
    left = sum("left" in r for r in results)
    report = {"requests": len(requests), "clients_left": left, "answered": sum(r.get("status") == 200 and bool(
        r.get("text")) for r in stayed), "stayed": len(stayed), "seconds": round(time.monotonic() - start, 1),
              "server": {k: state[k] for k in ("running", "waiting", "completed", "cancelled",
                                               "max_passes_after_cancel")}}
    # a leaver is cancelled, or finished before it left, or left before its request was admitted (never counted)
    report["leavers_never_admitted"] = left - state["cancelled"] - (state["completed"] - len(stayed))
    report["ok"] = (report["answered"] == len(stayed) and state["running"] == 0 and state["waiting"] == 0
                    and report["leavers_never_admitted"] >= 0 and state["max_passes_after_cancel"] <= 1)
    return report
