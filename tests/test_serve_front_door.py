"""The gateway as a front door, tried as a careless client and as an attacker would, on loopback: clients see only
what passed, every bad request is a 4xx before any model runs, abandoned work stops, nobody holds the primary.

The upstream is the scripted OpenAI-compatible server (its requests are recorded, so "before any upstream call" is
checked, and its faults are real HTTP faults); the local primary is the embedded SmolLM2 on llama.cpp."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

openai = pytest.importorskip("openai")
pytest.importorskip("uvicorn")

from supervisor.integrations.serve import GatewayConfig  # noqa: E402
from tests.openai_servers import Reply, ScriptedOpenAIServer, free_port  # noqa: E402
from tests.test_serve import RAINBOW, RunningGateway, audited  # noqa: E402

pytestmark = pytest.mark.integration

FAST = {"checkpoint_every": 4, "window_tokens": 8, "upstream_backoff_s": 0.0}
VALID: dict[str, Any] = {"model": "scripted", "messages": RAINBOW, "max_tokens": 16}


def post(port: int, path: str, body: bytes | dict[str, Any], *, timeout: float = 30,
         headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """A raw POST (any bytes): status, headers (lower-case names), body."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("POST", path, body=data, headers={"Content-Type": "application/json", **(headers or {})})
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


def health_ms(port: int) -> float:
    started = time.perf_counter()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.request("GET", "/health")
    assert connection.getresponse().status == 200
    connection.close()
    return (time.perf_counter() - started) * 1000


def error_of(body: bytes) -> dict[str, Any]:
    error = json.loads(body)["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return dict(error)


@pytest.fixture(scope="module")
def scripted() -> Iterator[tuple[ScriptedOpenAIServer, RunningGateway]]:
    with ScriptedOpenAIServer([], echo=1) as upstream, RunningGateway(GatewayConfig(
            upstream=upstream.url, scorer="lexical", continuation="prefill", policy=FAST,
            max_tokens=256)) as gateway:
        yield upstream, gateway


# -- 1. clients see only what passed ---------------------------------------------------------------------------
def test_removed_text_reaches_no_client_unless_the_route_reveals_it(caplog: pytest.LogCaptureFixture) -> None:
    insult = "Honestly you are a stupid idiot and everyone knows it"
    replies = [Reply(pieces=[" " + w for w in insult.split()]), Reply(pieces=[" a fair question."])] * 4
    caplog.set_level("INFO", logger="supervisor.audit")
    tenants = [{"api_key": "hidden-key-1234", "name": "hidden"},
               {"api_key": "reveal-key-1234", "name": "demo", "reveal_removed_text": True}]
    with ScriptedOpenAIServer(replies) as upstream, RunningGateway(GatewayConfig(
            upstream=upstream.url, scorer="lexical", continuation="prefill", policy=FAST, tenants=tenants)) as gw:
        for stream in (True, False):
            status, headers, raw = post(gw.port, "/v1/chat/completions", {**VALID, "stream": stream},
                                        headers={"Authorization": "Bearer hidden-key-1234"})
            assert status == 200 and b"rollback" in raw
            assert b"idiot" not in raw and b"stupid" not in raw, raw  # not in the text, the events, the report
            [mine] = audited(caplog, headers["x-request-id"])
            assert mine["tenant"] == "hidden" and "hidden-key-1234" not in json.dumps(mine)
            assert any("idiot" in e["removed_text"] for e in mine["supervision"]["events"])  # operators have it
        status, _, raw = post(gw.port, "/v1/chat/completions", {**VALID, "stream": True},
                              headers={"Authorization": "Bearer reveal-key-1234"})
        comments = [json.loads(line[len(": supervision "):]) for line in raw.decode().splitlines()
                    if line.startswith(": supervision ")]
        assert status == 200 and any("idiot" in c.get("removed_text", "") for c in comments)


# -- 2. the OpenAI contract, strictly ---------------------------------------------------------------------------
BAD_REQUESTS: list[tuple[dict[str, Any], int, str | None]] = [
    ({"temperature": "0.5"}, 400, "temperature"),
    ({"temperature": True}, 400, "temperature"),
    ({"temperature": 3}, 400, "temperature"),
    ({"top_p": "high"}, 400, "top_p"),
    ({"n": 0}, 400, "n"),
    ({"n": 2}, 400, "n"),
    ({"stream": "yes"}, 400, "stream"),
    ({"stream_options": {"include_usage": True}}, 400, "stream_options"),
    ({"max_tokens": "16"}, 400, "max_tokens"),
    ({"max_tokens": 100_000}, 400, "max_tokens"),
    ({"logprobs": True}, 400, "logprobs"),
    ({"logit_bias": {"abc": 1}}, 400, "logit_bias"),
    ({"logit_bias": {"42": 500}}, 400, "logit_bias"),
    ({"tools": [{"type": "function"}]}, 400, "tools[0].function"),
    ({"tools": "all"}, 400, "tools"),
    ({"tool_choice": "sometimes"}, 400, "tool_choice"),
    ({"response_format": {"type": "xml"}}, 400, "response_format.type"),
    ({"stop": ["a", "b", "c", "d", "e"]}, 400, "stop"),
    ({"seed": 1.5}, 400, "seed"),
    ({"user": 7}, 400, "user"),
    ({"messages": []}, 400, "messages"),
    ({"messages": "hello"}, 400, "messages"),
    ({"messages": [{"role": "robot", "content": "hi"}]}, 400, "messages[0].role"),
    ({"messages": [{"role": "user", "content": 5}]}, 400, "messages[0].content"),
    ({"messages": [{"role": "user", "content": [{"type": "text"}]}]}, 400, "messages[0].content"),
    ({"frobnicate": 1}, 400, "frobnicate"),
    ({"model": 5}, 400, "model"),
    ({"supervise": "no"}, 400, "supervise"),
]


@pytest.mark.parametrize(("change", "status", "param"), BAD_REQUESTS, ids=[json.dumps(c)[:40] for c, _, _ in
                                                                             BAD_REQUESTS])
def test_a_bad_request_is_a_400_naming_the_parameter_before_any_upstream_call(
        scripted: tuple[ScriptedOpenAIServer, RunningGateway], change: dict[str, Any], status: int,
        param: str | None) -> None:
    upstream, gateway = scripted
    before = len(upstream.requests)
    got, _, raw = post(gateway.port, "/v1/chat/completions", {**VALID, **change})
    assert got == status, raw
    error = error_of(raw)
    assert error["param"] == param and error["type"] == "invalid_request_error", error
    assert len(upstream.requests) == before  # refused before the upstream saw anything


def test_missing_model_unknown_model_deep_nesting_and_bad_json(
        scripted: tuple[ScriptedOpenAIServer, RunningGateway]) -> None:
    upstream, gateway = scripted
    before = len(upstream.requests)
    status, _, raw = post(gateway.port, "/v1/chat/completions", {"messages": RAINBOW})
    assert status == 400 and error_of(raw)["param"] == "model"
    status, _, raw = post(gateway.port, "/v1/chat/completions", {**VALID, "model": "gpt-nonexistent"})
    assert status == 404 and error_of(raw)["code"] == "model_not_found" and "scripted" in error_of(raw)["message"]
    for depth in (40, 100_000):  # past the gateway's bound, and past the JSON parser's own stack
        nested = b'{"model": "scripted", "messages": [], "metadata": ' + b"[" * depth + b"]" * depth + b"}"
        status, _, raw = post(gateway.port, "/v1/chat/completions", nested)
        assert status == 400 and "nested deeper" in error_of(raw)["message"]
    for body in (b"{not json", b'"a string"', b"\xff\xfe"):
        status, _, raw = post(gateway.port, "/v1/chat/completions", body)
        assert status == 400, raw
    lone = b'{"model": "scripted", "messages": [{"role": "user", "content": "hi \\ud800"}]}'
    status, _, raw = post(gateway.port, "/v1/chat/completions", lone)
    assert status == 400 and "surrogate" in error_of(raw)["message"]
    assert len(upstream.requests) == before
    assert [m.id for m in gateway.client().models.list().data] == ["scripted"]


def test_an_upstream_4xx_is_the_clients_error_passed_on_once_without_internals() -> None:
    dump = ('1 validation error for CreateChatCompletionRequest: File "/opt/venv/lib/python3.11/site-packages/'
            'llama_cpp/server/app.py", line 42')
    replies = [Reply(status=400, error_message=dump), Reply(status=400, error_message="context too long"),
               Reply(status=500, error_message=dump), Reply(status=500, error_message=dump),
               Reply(status=500, error_message=dump)]
    with ScriptedOpenAIServer(replies) as upstream, RunningGateway(GatewayConfig(
            upstream=upstream.url, scorer="lexical", policy=FAST)) as gateway:
        status, _, raw = post(gateway.port, "/v1/chat/completions", {**VALID, "stream": True})
        assert status == 400 and len(upstream.requests) == 1  # not retried; a status, not a 200 with an error
        message = error_of(raw)["message"]
        assert "site-packages" not in message and "validation error" not in message and "withheld" in message
        status, _, raw = post(gateway.port, "/v1/chat/completions", VALID)
        assert status == 400 and "context too long" in error_of(raw)["message"]
        status, _, raw = post(gateway.port, "/v1/chat/completions", VALID)  # 5xx: retried (policy: 2), then a 502
        error = error_of(raw)
        assert status == 502 and error["type"] == "upstream_error" and len(upstream.requests) == 5
        assert "HTTP 500" in error["message"] and "no text had been sent" in error["message"]
        assert "site-packages" not in error["message"] and "characters had been released" not in error["message"]


def test_an_upstream_that_dies_mid_stream_ends_it_with_an_error_event_and_the_gateway_recovers() -> None:
    port = free_port()
    answer = [" The", " rainbow", " has", " seven", " colors:", " red,", " orange,", " yellow,", " green,"]
    upstream = ScriptedOpenAIServer([Reply(pieces=answer, cut_after=6)], port=port, piece_delay_s=0.05)
    with upstream, RunningGateway(GatewayConfig(upstream=upstream.url, scorer="lexical", policy=FAST,
                                                models=["scripted"])) as gateway:
        stream = gateway.client().chat.completions.create(model="scripted", messages=RAINBOW, stream=True)
        received = []
        with pytest.raises(openai.APIError) as failed:
            for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    received.append(chunk.choices[0].delta.content)
                    if len(received) == 2:
                        upstream.__exit__()  # killed mid-answer: the stream drops, the port refuses
        text = "".join(received)
        assert text and answer[0] in text and "upstream" in str(failed.value)
        assert f"the {len(text)} characters sent" in str(failed.value)
        status, _, raw = post(gateway.port, "/v1/chat/completions", VALID)
        assert status == 502  # still down: a clear status
        with ScriptedOpenAIServer([Reply(pieces=[" back", " again."])], port=port):  # it comes back
            reply = gateway.client().chat.completions.create(model="scripted", messages=RAINBOW)
            assert reply.choices[0].message.content == " back again."
        assert health_ms(gateway.port) < 1_000


def test_a_tokenizer_probe_never_stalls_the_gateway() -> None:
    with ScriptedOpenAIServer([Reply(pieces=[" fine."])], tokenize_delay_s=3.0) as upstream, RunningGateway(
            GatewayConfig(upstream=upstream.url, scorer="lexical", policy=FAST)) as gateway:
        done: list[int] = []
        worker = threading.Thread(target=lambda: done.append(post(gateway.port, "/v1/chat/completions", VALID)[0]))
        worker.start()
        time.sleep(0.5)  # the first request of this model is probing the upstream's tokenizer (3 s)
        assert health_ms(gateway.port) < 500
        worker.join(timeout=30)
        assert done == [200]


def test_moderations_caps_and_bad_text(scripted: tuple[ScriptedOpenAIServer, RunningGateway]) -> None:
    _, gateway = scripted
    path = "/v1/moderations"
    assert post(gateway.port, path, {"input": ["fine"] * 33})[0] == 400
    assert post(gateway.port, path, {"input": "x" * 100_001})[0] == 400
    status, _, raw = post(gateway.port, path, b'{"input": "bad \\udc00 text"}')
    assert status == 400 and "surrogate" in error_of(raw)["message"]
    assert post(gateway.port, path, {"input": [{"type": "image_url", "image_url": {"url": "x"}}]})[0] == 400
    status, _, raw = post(gateway.port, path, {"input": [{"type": "text", "text": "you stupid idiot"}]})
    assert status == 200 and json.loads(raw)["results"][0]["flagged"]


# -- 3. abandoned work stops, nobody holds the primary -----------------------------------------------------------
@pytest.fixture(scope="module")
def local_gateway() -> Iterator[RunningGateway]:
    pytest.importorskip("llama_cpp")
    config = GatewayConfig(primary="smollm2:llama-cpp", scorer="lexical", queue_size=1, queue_timeout_s=4.0,
                           send_timeout_s=2.0, max_tokens=1500)
    with RunningGateway(config) as gateway:
        # the first generation of a primary builds the steering's tables (seconds): not what is measured here
        gateway.client(timeout=120).chat.completions.create(model="smollm2", messages=RAINBOW, max_tokens=4)
        yield gateway


LONG = {"model": "smollm2", "max_tokens": 1500, "temperature": 1.0, "seed": 1,  # runs to 1500 tokens (~25 s)
        "messages": [{"role": "user", "content": "Write a very long story about a ship, with twenty chapters."}]}


def generated_tokens(gateway: RunningGateway) -> float:
    for line in gateway.get("/metrics").splitlines():
        if line.startswith("supervisor_generated_tokens_total"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def abandon(port: int, body: dict[str, Any], after_s: float) -> None:
    """Send a request, then close the connection after ``after_s`` seconds without reading the answer."""
    sock = socket.create_connection(("127.0.0.1", port))
    data = json.dumps(body).encode()
    sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 + f"Content-Length: {len(data)}\r\n\r\n".encode() + data)
    time.sleep(after_s)
    sock.close()


def test_an_abandoned_request_stops_within_a_token_streamed_or_not(local_gateway: RunningGateway) -> None:
    for stream in (False, True):
        before = generated_tokens(local_gateway)
        abandon(local_gateway.port, {**LONG, "stream": stream}, after_s=2.0)
        started = time.perf_counter()
        short = local_gateway.client(timeout=30).chat.completions.create(model="smollm2", messages=RAINBOW,
                                                                         max_tokens=4, temperature=0.0)
        assert short.choices[0].message.content
        assert time.perf_counter() - started < 8, "the abandoned generation kept the only primary busy"
        abandoned_tokens = generated_tokens(local_gateway) - before - short.model_extra["supervision"]["usage"][
            "generated_tokens"]
        assert abandoned_tokens < 300, abandoned_tokens  # 1500 were asked for: it stopped when the client left
    assert 'supervisor_abandoned_total{reason="disconnected"' in local_gateway.get("/metrics")


def test_a_client_that_leaves_right_after_the_headers_frees_the_primary(local_gateway: RunningGateway) -> None:
    for _ in range(3):
        abandon(local_gateway.port, {**LONG, "stream": True}, after_s=0.05)
    started = time.perf_counter()
    short = local_gateway.client(timeout=30).chat.completions.create(model="smollm2", messages=RAINBOW, max_tokens=4)
    assert short.choices[0].message.content and time.perf_counter() - started < 8


def test_a_full_queue_and_a_long_wait_are_429s_with_retry_after(local_gateway: RunningGateway) -> None:
    holder = threading.Thread(target=abandon, args=(local_gateway.port, {**LONG, "stream": False}, 10.0))
    holder.start()  # holds the only primary for 10 s
    time.sleep(1.0)
    outcomes: list[tuple[int, dict[str, str], bytes]] = []
    waiter = threading.Thread(target=lambda: outcomes.append(post(local_gateway.port, "/v1/chat/completions",
                                                                  {**LONG, "max_tokens": 4})))
    waiter.start()  # waits in the queue (size 1) ...
    time.sleep(0.5)
    status, headers, raw = post(local_gateway.port, "/v1/chat/completions", {**LONG, "max_tokens": 4})
    assert status == 429 and error_of(raw)["code"] == "queue_full" and int(headers["retry-after"]) >= 1
    waiter.join(timeout=30)
    status, headers, raw = outcomes[0]  # ... and gives up after queue_timeout_s
    assert status == 429 and error_of(raw)["code"] == "queue_timeout" and "retry-after" in headers
    holder.join(timeout=30)


def test_local_routes_refuse_what_they_cannot_honour(local_gateway: RunningGateway) -> None:
    for change, param in [({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
                          ({"response_format": {"type": "json_object"}}, "response_format"),
                          ({"stop": "\n"}, "stop"), ({"logit_bias": {"42": 5}}, "logit_bias"),
                          ({"n": 2}, "n"), ({"model": "gpt-4o"}, "model")]:
        status, _, raw = post(local_gateway.port, "/v1/chat/completions", {**LONG, "max_tokens": 4, **change})
        assert status in (400, 404) and error_of(raw)["param"] == param, raw


def test_per_tenant_concurrency_limit() -> None:
    tenants = [{"api_key": "one-at-a-time-1", "name": "solo", "max_concurrent": 1}]
    with ScriptedOpenAIServer([], echo=3, piece_delay_s=0.05) as upstream, RunningGateway(GatewayConfig(
            upstream=upstream.url, scorer="lexical", policy=FAST, tenants=tenants)) as gateway:
        auth = {"Authorization": "Bearer one-at-a-time-1"}
        first = threading.Thread(target=post, args=(gateway.port, "/v1/chat/completions", VALID), kwargs={
            "headers": auth})
        first.start()
        time.sleep(0.3)
        status, headers, raw = post(gateway.port, "/v1/chat/completions", VALID, headers=auth)
        assert status == 429 and error_of(raw)["code"] == "concurrency_limit" and "retry-after" in headers
        first.join(timeout=30)
        assert post(gateway.port, "/v1/chat/completions", VALID, headers=auth)[0] == 200  # the slot came back
