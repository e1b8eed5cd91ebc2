"""The OpenAI-compatible server with real clients on 127.0.0.1: the ``openai`` package (completions and chat,
streamed and not), ``httpx`` for raw bodies and disconnects, 16 concurrent clients, bad requests beside good ones.

One server (``conftest.py``: the shipped tiny student in float64, so that batched rows are bit-identical to rows
alone) is started in a background thread for the folder's tests and stopped after them.
"""

import asyncio
import json
import time

import httpx
import pytest
import torch
from serving import CHAT_TEMPLATE, NAME, prompts

openai = pytest.importorskip("openai")
pytest.importorskip("fastapi")

VERIFY = {"strategy": "verify", "k_max": 8}


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=60)


def async_client(server):
    """An async client for one ``asyncio.run`` (its connections belong to that event loop)."""
    return openai.AsyncOpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=60)


def health(server) -> dict:
    return httpx.get(f"{server.url}/health", timeout=10).json()


def complete(client, prompt, *, stream=False, **kw):
    """``(text, finish_reason, usage)`` of one completion, joined from the chunks when streamed."""
    out = client.completions.create(model=NAME, prompt=prompt, stream=stream, **kw)
    if not stream:
        return out.choices[0].text, out.choices[0].finish_reason, out.usage.model_dump()
    text, reason, usage = "", None, None
    for chunk in out:
        if chunk.choices:
            text += chunk.choices[0].text
            reason = chunk.choices[0].finish_reason or reason
        usage = chunk.usage.model_dump() if chunk.usage else usage
    return text, reason, usage


def test_models_and_health(server, client):
    assert [m.id for m in client.models.list().data] == [NAME]
    assert client.models.retrieve(NAME).id == NAME
    state = health(server)
    # the setting as the model decodes it, built once at start: the tiny student has a confidence map (calibrated)
    assert state["status"] == "ok" and state["strategy"] == "conf_adapt_0.9_kmax16_cal"


def test_completions_streamed_equal_whole_with_usage(client):
    for prompt in prompts(3):
        text, reason, usage = complete(client, prompt, max_tokens=24)
        s_text, s_reason, s_usage = complete(client, prompt, max_tokens=24, stream=True,
                                             stream_options={"include_usage": True})
        assert (s_text, s_reason, s_usage) == (text, reason, usage) and text
        assert usage["tokens_per_forward"] == pytest.approx(usage["completion_tokens"] / usage["forward_passes"])
        assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
        assert usage["draft_checked"] >= 0  # emitted mask tokens a later pass checked; precision null without any
        assert (usage["draft_precision"] is None) == (usage["draft_checked"] == 0)
        assert usage["draft_precision"] is None or 0.0 <= usage["draft_precision"] <= 1.0


def test_stop_strings_cut_the_text_streamed_and_whole(client):
    prompt = prompts(1)[0]
    free, _, _ = complete(client, prompt, max_tokens=32)
    stop = free.strip().split(" ")[1]  # a word the free run emits
    cut = free[:free.index(stop)]
    assert complete(client, prompt, max_tokens=32, stop=[stop])[:2] == (cut, "stop")
    assert complete(client, prompt, max_tokens=32, stop=[stop], stream=True)[:2] == (cut, "stop")


def test_chat_streamed_equals_whole(client, loaded):
    messages = [{"role": "user", "content": prompts(1)[0]}]
    whole = client.chat.completions.create(model=NAME, messages=messages, max_tokens=20)
    pieces = client.chat.completions.create(model=NAME, messages=messages, max_tokens=20, stream=True)
    chunks = list(pieces)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == whole.choices[0].message.content
    assert chunks[-1].choices[0].finish_reason == whole.choices[0].finish_reason == "length"
    # the prompt is the template's rendering, without added specials
    tok = loaded[1]
    ids = tok(tok.apply_chat_template(messages, chat_template=CHAT_TEMPLATE, tokenize=False,
                                      add_generation_prompt=True), add_special_tokens=False).input_ids
    assert whole.usage.prompt_tokens == len(ids)


def test_verify_over_http_equals_generate(client, loaded):
    model, tok = loaded
    for prompt in prompts(3):
        ids = tok(prompt, return_tensors="pt").input_ids
        with torch.no_grad():
            ref = model.generate(ids, max_new_tokens=30, do_sample=False, pad_token_id=tok.pad_token_id)
        want = tok.decode(ref[0, ids.shape[1]:], skip_special_tokens=True)
        text, _, usage = complete(client, prompt, max_tokens=30, extra_body={"selfdistill": VERIFY})
        assert text == want and usage["completion_tokens"] == ref.shape[1] - ids.shape[1]


async def _one(aclient, prompt, *, stream, options=None, passes=False):
    """The text of one completion (and with ``passes`` the forward passes it took)."""
    kw = {"extra_body": {"selfdistill": options}} if options else {}
    if stream:
        kw["stream_options"] = {"include_usage": True}
    out = await aclient.completions.create(model=NAME, prompt=prompt, max_tokens=24, stream=stream, **kw)
    if not stream:
        text, usage = out.choices[0].text, out.usage
    else:
        chunks = [c async for c in out]
        text, usage = "".join(c.choices[0].text for c in chunks if c.choices), chunks[-1].usage
    return (text, usage.model_extra["forward_passes"]) if passes else text


def test_sixteen_concurrent_clients_get_what_each_gets_alone(server):
    cases = [(p, i % 2 == 0, VERIFY if i % 4 == 1 else None) for i, p in enumerate(prompts(16))]

    async def run():
        aclient = async_client(server)
        alone = [await _one(aclient, p, stream=s, options=o, passes=True) for p, s, o in cases]
        before = health(server)["engines"]
        together = await asyncio.gather(*[_one(aclient, p, stream=s, options=o, passes=True) for p, s, o in cases])
        await aclient.close()
        return alone, before, together

    alone, before, together = asyncio.run(run())
    assert together == alone
    calls = {e["setting"]: e["model_calls"] for e in health(server)["engines"]}
    # the rows shared passes: the model was called far less often than the passes the requests took
    new_calls = sum(calls[e["setting"]] - e["model_calls"] for e in before)
    assert new_calls < sum(p for _, p in alone) / 4


def test_a_client_that_disconnects_mid_stream_changes_nothing_for_the_others(server):
    others = prompts(4)[1:]
    body = {"model": NAME, "prompt": prompts(1)[0], "max_tokens": 400, "stream": True}

    async def quitter():
        async with httpx.AsyncClient(timeout=60) as http:
            async with http.stream("POST", f"{server.url}/v1/completions", json=body) as resp:
                async for line in resp.aiter_lines():
                    if line.startswith("data: {"):
                        return json.loads(line[6:])["choices"][0]["text"]  # leave after the first chunk

    async def run():
        aclient = async_client(server)
        alone = [await _one(aclient, p, stream=True) for p in others]
        cancelled = health(server)["cancelled"]
        first, *together = await asyncio.gather(quitter(), *[_one(aclient, p, stream=True) for p in others])
        await aclient.close()
        return alone, cancelled, first, together

    alone, cancelled, first, together = asyncio.run(run())
    assert first is not None and together == alone
    for _ in range(200):  # bounded: the server notices the closed connection within a pass or two
        state = health(server)
        if state["cancelled"] > cancelled and state["running"] == 0:
            break
        time.sleep(0.05)
    assert state["cancelled"] == cancelled + 1 and state["running"] == 0 and state["waiting"] == 0


BAD = [  # (endpoint, body, status, param or None)
    ("completions", b"{not json", 400, None),
    ("completions", b"[1, 2]", 400, None),
    ("completions", {"model": "no-such-model", "prompt": "x"}, 404, "model"),
    ("completions", {"model": NAME, "prompt": "x", "max_tokens": -3}, 400, "max_tokens"),
    ("completions", {"model": NAME, "prompt": "x", "max_tokens": 0}, 400, "max_tokens"),
    ("completions", {"model": NAME, "prompt": "x" * 3000, "max_tokens": 8}, 400, "prompt"),
    ("completions", {"model": NAME, "prompt": "x", "max_tokens": 5000}, 400, "prompt"),
    ("completions", {"model": NAME, "prompt": "x", "n": 2}, 400, "n"),
    ("completions", {"model": NAME, "prompt": "x", "logprobs": 1}, 400, "logprobs"),
    ("completions", {"model": NAME, "prompt": "x", "echo": True}, 400, "echo"),
    ("completions", {"model": NAME, "prompt": "x", "temperature": 0.7}, 400, "temperature"),
    ("completions", {"model": NAME, "prompt": "x", "top_p": 0.5}, 400, "top_p"),
    ("completions", {"model": NAME, "prompt": "x", "frobnicate": 1}, 400, "frobnicate"),
    ("completions", {"model": NAME, "prompt": ""}, 400, "prompt"),
    ("completions", {"model": NAME, "prompt": [5, 99999]}, 400, "prompt"),
    ("completions", {"model": NAME, "prompt": "x", "selfdistill": {"strategy": "verify", "k": 2}}, 400, "selfdistill"),
    ("completions", {"model": NAME, "prompt": "x", "selfdistill": {"threshold": float("nan")}}, 400, "selfdistill"),
    ("completions", {"model": NAME, "prompt": "x", "selfdistill": {"threshold": 2}}, 400, "selfdistill"),  # [0, 1]
    ("completions", {"model": NAME, "prompt": "x", "selfdistill": {"strategy": "generate"}}, 400, "selfdistill"),
    ("completions", {"model": NAME, "prompt": "x", "selfdistill": {"strategy": "beam"}}, 400, "selfdistill"),
    ("chat/completions", {"model": NAME, "messages": []}, 400, "messages"),
    ("chat/completions", {"model": NAME, "messages": [{"role": "robot", "content": "x"}]}, 400, "messages.0.role"),
    ("chat/completions", {"model": NAME, "messages": [{"role": "user", "content": "x"}], "tools": [{}]}, 400,
     "tools"),
    # chat over the context with no max_tokens: a 400 about the messages (no max_new_tokens the user never set)
    ("chat/completions", {"model": NAME, "messages": [{"role": "user", "content": "x " * 3000}]}, 400, "messages"),
    # a lone surrogate is valid JSON but not text: a 400 naming the field, not a 500
    ("completions", b'{"model": "%s", "prompt": "\\ud800 hi"}' % NAME.encode(), 400, "prompt"),
    ("chat/completions", b'{"model": "%s", "messages": [{"role": "user", "content": "a\\udc00"}]}' % NAME.encode(),
     400, "messages.0.content"),
]


def test_bad_requests_get_openai_errors_while_a_good_one_runs(server, client):
    prompt = prompts(1)[0]
    alone = complete(client, prompt, max_tokens=200, stream=True)[0]

    async def bad(http, endpoint, body):
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        return await http.post(f"{server.url}/v1/{endpoint}", content=raw,
                               headers={"content-type": "application/json"})

    async def run():
        aclient = async_client(server)
        async with httpx.AsyncClient(timeout=60) as http:
            good = asyncio.create_task(aclient.completions.create(model=NAME, prompt=prompt, max_tokens=200,
                                                                  stream=True))
            answers = [await bad(http, e, b) for e, b, _, _ in BAD]
            stream = await good
            text = "".join([c.choices[0].text async for c in stream if c.choices])
        await aclient.close()
        return answers, text

    answers, text = asyncio.run(run())
    for (endpoint, body, status, param), resp in zip(BAD, answers):
        err = resp.json()["error"]
        assert (resp.status_code, err["param"]) == (status, param), (body, err)
        assert "max_new_tokens=1" not in err["message"]
        assert set(err) == {"message", "type", "param", "code"} and err["message"]
    assert text == alone
    assert complete(client, prompt, max_tokens=8)[0]  # and it keeps serving
    with pytest.raises(openai.BadRequestError, match="greedy"):
        client.completions.create(model=NAME, prompt=prompt, temperature=1.0)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])


def test_an_oversized_body_is_a_413_and_the_server_stays_responsive(server):
    """A body over the limit (default 1 MiB) is refused before it is parsed or tokenized; /health answers."""
    from selfdistill.serve.app import MAX_BODY_BYTES

    big = json.dumps({"model": NAME, "prompt": "x " * (MAX_BODY_BYTES // 2 + 10)}).encode()
    resp = httpx.post(f"{server.url}/v1/completions", content=big, headers={"content-type": "application/json"},
                      timeout=60)
    assert resp.status_code == 413 and resp.json()["error"]["code"] == "request_too_large"
    assert httpx.get(f"{server.url}/health", timeout=10).json()["status"] == "ok"
