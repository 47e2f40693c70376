"""Hypothesis against the running gateway: random request bodies, random upstream chunkings with a flagged word at
random places, disconnects at random moments, a reader that stops reading.

Properties: never a 5xx for what a client sent, never a hang, ``/health`` stays 200 and the next valid request
answers promptly; the flagged word never reaches the client, in the text or in any event; a request that ends
early, however it ends, holds nothing afterwards (its tenant slot, its primary, its upstream request)."""

from __future__ import annotations

import asyncio
import json
import math
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytest.importorskip("openai")
pytest.importorskip("uvicorn")

from supervisor.integrations.serve import GatewayConfig, create_app  # noqa: E402
from tests.openai_servers import Reply, ScriptedOpenAIServer  # noqa: E402
from tests.test_serve import RAINBOW, RunningGateway  # noqa: E402
from tests.test_serve_front_door import VALID, health_ms, post  # noqa: E402

pytestmark = pytest.mark.integration

FAST = {"checkpoint_every": 4, "window_tokens": 8, "upstream_backoff_s": 0.0}
ADVERSARIAL = settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
FIELDS = ["model", "messages", "temperature", "top_p", "n", "stream", "stream_options", "stop", "max_tokens",
          "max_completion_tokens", "logit_bias", "logprobs", "top_logprobs", "seed", "user", "tools", "tool_choice",
          "response_format", "metadata", "supervise", "parallel_tool_calls", "presence_penalty", "functions"]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=16,
)
messages = st.lists(st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "system", "assistant", "tool", "robot"]) | json_values},
    optional={"content": st.text(max_size=40) | json_values, "name": json_values, "tool_calls": json_values}),
    max_size=4) | json_values


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    """A valid request with some fields replaced by random JSON, or random JSON, or random bytes."""
    shape = draw(st.sampled_from(["mutated", "mutated", "mutated", "json", "bytes"]))
    if shape == "bytes":
        return draw(st.binary(max_size=200))
    if shape == "json":
        return json.dumps(draw(json_values)).encode()
    body: dict[str, Any] = dict(VALID)
    for name in draw(st.lists(st.sampled_from(FIELDS) | st.text(max_size=6), max_size=4, unique=True)):
        body[name] = draw(messages if name == "messages" else json_values)
    if draw(st.booleans()):
        body.pop(draw(st.sampled_from(sorted(body))), None)
    return json.dumps(body).encode()  # NaN and Infinity included, as Python writes them


@pytest.fixture(scope="module")
def gateway() -> Iterator[tuple[ScriptedOpenAIServer, RunningGateway]]:
    with ScriptedOpenAIServer([], echo=1) as upstream, RunningGateway(GatewayConfig(
            upstream=upstream.url, scorer="lexical", continuation="prefill", policy=FAST, max_tokens=64,
            models=["scripted"], tenants=[{"api_key": "adversary-key-1", "name": "adversary"}])) as running:
        yield upstream, running


AUTH = {"Authorization": "Bearer adversary-key-1"}


def idle(running: RunningGateway, timeout_s: float = 5.0) -> bool:
    """Whether the gateway holds no request (every request's end ran: slots, primaries, upstream requests)."""
    limits = running.app.state.gateway.limits
    deadline = time.monotonic() + timeout_s
    while limits.active and time.monotonic() < deadline:
        time.sleep(0.02)
    return not limits.active


@ADVERSARIAL
@given(body=bodies())
def test_random_bodies_get_a_4xx_or_an_answer_never_a_5xx_or_a_hang(
        gateway: tuple[ScriptedOpenAIServer, RunningGateway], body: bytes) -> None:
    _, running = gateway
    started = time.perf_counter()
    status, _, raw = post(running.port, "/v1/chat/completions", body, timeout=20, headers=AUTH)
    assert status < 500, (status, raw[:300])
    assert time.perf_counter() - started < 15
    if status != 200:
        error = json.loads(raw)["error"]
        assert error["message"] and error["type"]
    assert idle(running)


def test_after_the_storm_the_gateway_is_healthy_and_prompt(
        gateway: tuple[ScriptedOpenAIServer, RunningGateway]) -> None:
    _, running = gateway
    assert health_ms(running.port) < 500
    started = time.perf_counter()
    status, _, _ = post(running.port, "/v1/chat/completions", VALID, headers=AUTH)
    assert status == 200 and time.perf_counter() - started < 5


BENIGN = ["the", "garden", "was", "quiet", "and", "green", "after", "rain", "we", "walked", "slowly", "home"]


@st.composite
def chunked_answers(draw: st.DrawFn) -> tuple[list[str], str]:
    words = draw(st.lists(st.sampled_from(BENIGN), min_size=3, max_size=30))
    flagged = draw(st.sampled_from(["fucking", "shit", "bitch"]))
    words.insert(draw(st.integers(0, len(words))), flagged)
    text = " ".join(words)
    cuts = sorted(draw(st.sets(st.integers(1, len(text) - 1), max_size=len(text) // 2)))
    edges = [0, *cuts, len(text)]
    return [text[a:b] for a, b in zip(edges, edges[1:])], flagged


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(answer=chunked_answers(), stream=st.booleans())
def test_a_flagged_word_never_reaches_the_client_through_the_gateway(
        gateway: tuple[ScriptedOpenAIServer, RunningGateway], answer: tuple[list[str], str], stream: bool) -> None:
    upstream, running = gateway
    pieces, flagged = answer
    upstream.replies = [Reply(pieces=pieces)]  # then benign echoes for the retries
    status, _, raw = post(running.port, "/v1/chat/completions", {**VALID, "stream": stream, "max_tokens": 64},
                          headers=AUTH)
    assert status == 200, raw[:300]
    assert flagged not in raw.decode().lower(), raw.decode()  # not in the text, an event, the report
    assert idle(running)


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(stream=st.booleans(), read_bytes=st.integers(0, 3000), delay_s=st.floats(0.0, 0.4))
def test_a_disconnect_at_any_moment_leaves_nothing_held(
        gateway: tuple[ScriptedOpenAIServer, RunningGateway], stream: bool, read_bytes: int, delay_s: float) -> None:
    upstream, running = gateway
    upstream.replies = [Reply(pieces=[" word"] * 200)]
    upstream.piece_delay_s = 0.005
    try:
        data = json.dumps({**VALID, "stream": stream, "max_tokens": 64}).encode()
        sock = socket.create_connection(("127.0.0.1", running.port))
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Authorization: Bearer adversary-key-1\r\n"
                     + f"Content-Length: {len(data)}\r\n\r\n".encode() + data)
        sock.settimeout(5)
        received = 0
        time.sleep(delay_s)
        while received < read_bytes:
            part = sock.recv(min(512, read_bytes - received))
            if not part:
                break
            received += len(part)
        sock.close()
        assert idle(running), "a request whose client left still holds its slot"
        assert health_ms(running.port) < 500
    finally:
        upstream.piece_delay_s = 0.0


class StuckReader:
    """An ASGI client that reads the response start and then nothing: ``send`` of a body never returns (what a
    peer with a full receive window does to uvicorn's ``send``)."""

    def __init__(self, body: dict[str, Any]) -> None:
        self.body = json.dumps(body).encode()
        self.messages: list[dict[str, Any]] = []
        self.delivered = False

    async def receive(self) -> dict[str, Any]:
        if not self.delivered:
            self.delivered = True
            return {"type": "http.request", "body": self.body, "more_body": False}
        await asyncio.sleep(3600)  # never disconnects: it is just stuck
        return {"type": "http.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:
        self.messages.append(message)
        if message["type"] == "http.response.body" and len(self.messages) > 2:
            await asyncio.sleep(3600)


def test_a_reader_that_stops_reading_is_cut_off_and_its_work_stopped() -> None:
    with ScriptedOpenAIServer([Reply(pieces=[" word"] * 400)], piece_delay_s=0.01) as upstream:
        app = create_app(GatewayConfig(upstream=upstream.url, scorer="lexical", policy=FAST, send_timeout_s=1.0,
                                       models=["scripted"]))
        scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
                 "method": "POST", "scheme": "http", "path": "/v1/chat/completions", "raw_path": b"/v1/chat/completions",
                 "query_string": b"", "root_path": "", "headers": [(b"content-type", b"application/json")],
                 "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 2)}
        reader = StuckReader({**VALID, "stream": True, "max_tokens": 400})

        async def run() -> float:
            started = time.perf_counter()
            await asyncio.wait_for(app(scope, reader.receive, reader.send), timeout=30)
            return time.perf_counter() - started

        seconds = asyncio.run(run())
        assert seconds < 10 and not math.isnan(seconds)  # cut off after send_timeout_s, not after the answer
        assert reader.messages[0]["status"] == 200
        assert not app.state.gateway.limits.active
        deadline = time.monotonic() + 5
        while upstream.aborted == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert upstream.aborted == 1 and upstream.completed == 0  # its upstream request was stopped too
        assert 'reason="slow reader"' in app.state.gateway.metrics.render()


def test_many_clients_at_once_get_answers_or_429s() -> None:
    with ScriptedOpenAIServer([], echo=2, piece_delay_s=0.002) as upstream, RunningGateway(GatewayConfig(
            upstream=upstream.url, scorer="lexical", policy=FAST, models=["scripted"],
            tenants=[{"api_key": "crowd-key-1234", "max_concurrent": 4}])) as running:
        import concurrent.futures

        def one(index: int) -> int:
            body = {**VALID, "messages": [{"role": "user", "content": f"hello number {index}"}]}
            return post(running.port, "/v1/chat/completions", body, headers={
                "Authorization": "Bearer crowd-key-1234"})[0]

        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            statuses = list(pool.map(one, range(32)))
        assert set(statuses) <= {200, 429} and statuses.count(200) >= 4
        assert idle(running) and health_ms(running.port) < 500
        assert [m.id for m in running.client("crowd-key-1234").models.list().data] == ["scripted"]
        reply = running.client("crowd-key-1234").chat.completions.create(model="scripted", messages=RAINBOW)
        assert reply.choices[0].message.content
