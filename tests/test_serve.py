"""``supervisor serve``: the real ``openai`` client against the running gateway (uvicorn on loopback), in front
of the real llama.cpp server (upstream mode) or the embedded SmolLM2 in-process (local mode)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

openai = pytest.importorskip("openai")
uvicorn = pytest.importorskip("uvicorn")

from supervisor.integrations.serve import GatewayConfig, create_app  # noqa: E402
from tests.helpers import KeywordScorer  # noqa: E402
from tests.openai_servers import MODEL_ALIAS, free_port  # noqa: E402

pytestmark = pytest.mark.integration

RAINBOW = [{"role": "user", "content": "List the seven colors of the rainbow, separated by commas."}]
GREEDY: dict[str, Any] = {"model": MODEL_ALIAS, "temperature": 0.0, "seed": 1, "max_tokens": 40}
KEY = "tenant-key-123456"


class RunningGateway:
    """The gateway app on uvicorn in a background thread, on a free loopback port."""

    def __init__(self, config: GatewayConfig, scorer: Any = None) -> None:
        self.app = create_app(config, scorer=scorer)
        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.url = f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> RunningGateway:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        assert self.server.started, "the gateway did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)

    def client(self, key: str = "none", **kwargs: Any) -> Any:
        return openai.OpenAI(base_url=self.url, api_key=key, max_retries=0, **kwargs)

    def get(self, path: str) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=10) as response:
            return response.read().decode()

    def stream_chat(self, payload: dict[str, Any]) -> tuple[str, list[dict[str, Any]], str]:
        """POST a streamed chat completion as raw SSE: (the content, the supervision comments, the raw body)."""
        request = urllib.request.Request(f"{self.url}/chat/completions", data=json.dumps(payload).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=120) as response:
            raw = response.read().decode()
            self.last_headers = dict(response.headers)
        comments = [json.loads(line[len(": supervision "):]) for line in raw.splitlines()
                    if line.startswith(": supervision ")]
        data = [json.loads(line[6:]) for line in raw.splitlines() if line.startswith("data: {")]
        text = "".join(d["choices"][0]["delta"].get("content") or "" for d in data if d["choices"])
        return text, comments, raw


def audited(caplog: pytest.LogCaptureFixture, request_id: str, timeout_s: float = 5.0) -> list[dict[str, Any]]:
    """The audit records of one request (a streamed one is recorded just after its last byte is sent)."""
    deadline = time.monotonic() + timeout_s
    while True:
        records = [json.loads(r.getMessage()) for r in caplog.records if r.name == "supervisor.audit"]
        mine = [r for r in records if r["request_id"] == request_id]
        if mine or time.monotonic() > deadline:
            return mine
        time.sleep(0.05)


@pytest.fixture(scope="module")
def upstream_gateway(llama_server_url: str) -> Iterator[RunningGateway]:
    config = GatewayConfig(upstream=llama_server_url, scorer="lexical")
    with RunningGateway(config) as gateway:
        yield gateway


def raw_answer(url: str, messages: list[dict[str, str]]) -> str:
    reply = openai.OpenAI(base_url=url, api_key="x", max_retries=0).chat.completions.create(messages=messages, **GREEDY)
    return str(reply.choices[0].message.content)


def test_streaming_through_the_gateway_gives_real_chunks_and_the_report(upstream_gateway: RunningGateway,
                                                                        llama_server_url: str) -> None:
    stream = upstream_gateway.client().chat.completions.create(messages=RAINBOW, stream=True, **GREEDY)
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == raw_answer(llama_server_url, RAINBOW)  # safe text passes unchanged
    report = chunks[-1].model_extra["supervision"]
    assert report["stop_reason"] in ("stop", "length") and report["events"] == []
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finish in (["stop"], ["length"])


def test_non_streaming_and_async_through_the_gateway(upstream_gateway: RunningGateway, llama_server_url: str) -> None:
    completion = upstream_gateway.client().chat.completions.create(messages=RAINBOW, **GREEDY)
    assert completion.choices[0].message.content == raw_answer(llama_server_url, RAINBOW)
    assert completion.model_extra["supervision"]["usage"]["generated_tokens"] > 0

    async def streamed() -> str:
        client = openai.AsyncOpenAI(base_url=upstream_gateway.url, api_key="none", max_retries=0)
        stream = await client.chat.completions.create(messages=RAINBOW, stream=True, **GREEDY)
        return "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])

    assert asyncio.run(streamed()) == completion.choices[0].message.content


def test_a_real_rollback_is_streamed_with_its_event_as_an_sse_comment(llama_server_url: str,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    config = GatewayConfig(upstream=llama_server_url, continuation="prefill",
                           policy={"checkpoint_every": 4, "window_tokens": 8, "upstream_backoff_s": 0.0})
    caplog.set_level("INFO", logger="supervisor.audit")
    with RunningGateway(config, scorer=KeywordScorer(word="Orange", step=1.0)) as gateway:
        text, comments, raw = gateway.stream_chat({"messages": RAINBOW, "stream": True, **GREEDY})
        assert "Orange" not in text and text
        assert [c["kind"] for c in comments][:1] == ["rollback"] and comments[0]["removed_chars"] > 0
        assert "Orange" not in raw  # what the supervisor removed never reaches the client, in any field
        assert raw.rstrip().endswith("data: [DONE]")
        # ... the operator has it: one audit record per request, under the id the client was given
        mine = audited(caplog, gateway.last_headers["x-request-id"])
        assert len(mine) == 1 and mine[0]["tenant"] == "default" and mine[0]["outcome"] == "complete"
        assert "Orange" in mine[0]["supervision"]["events"][0]["removed_text"]
        metrics = gateway.get("/metrics")
        assert 'supervisor_interventions_total{category="toxicity",kind="rollback",tenant="default"}' in metrics
        assert "supervisor_time_to_first_token_seconds_count" in metrics


def test_moderations_models_health_and_metrics(upstream_gateway: RunningGateway) -> None:
    client = upstream_gateway.client()
    moderation = client.moderations.create(input=["you are a stupid idiot", "have a lovely day"])
    assert [r.flagged for r in moderation.results] == [True, False]
    assert set(moderation.results[0].category_scores.model_dump(by_alias=True)) >= {"harassment", "self-harm"}
    assert [m.id for m in client.models.list().data] == [MODEL_ALIAS]
    assert json.loads(upstream_gateway.get("/health")) == {"status": "ok"}
    assert 'supervisor_requests_total{endpoint="moderations",status="200"}' in upstream_gateway.get("/metrics")


def test_api_keys_and_limits(llama_server_url: str) -> None:
    config = GatewayConfig(upstream=llama_server_url, scorer="lexical", tenants=[{"api_key": KEY, "name": "acme"}],
                           max_messages=3, max_tokens=64, max_body_bytes=2_000)
    with RunningGateway(config) as gateway:
        for key in ("none", "wrong-key-999999"):
            with pytest.raises(openai.AuthenticationError):
                gateway.client(key).chat.completions.create(messages=RAINBOW, **GREEDY)
        assert gateway.client(KEY).chat.completions.create(messages=RAINBOW, **GREEDY).choices[0].message.content
        with pytest.raises(openai.BadRequestError, match="at most 3"):
            gateway.client(KEY).chat.completions.create(messages=RAINBOW * 4, **GREEDY)
        with pytest.raises(openai.BadRequestError, match="max_tokens"):
            gateway.client(KEY).chat.completions.create(messages=RAINBOW, **{**GREEDY, "max_tokens": 500})
        with pytest.raises(openai.APIStatusError) as too_big:
            gateway.client(KEY).chat.completions.create(
                messages=[{"role": "user", "content": "x" * 5_000}], **GREEDY)
        assert too_big.value.status_code == 413
        with pytest.raises(openai.BadRequestError, match="supervise=false is not allowed"):
            gateway.client(KEY).chat.completions.create(messages=RAINBOW, extra_body={"supervise": False}, **GREEDY)
        assert 'tenant="acme"' in gateway.get("/metrics")


@pytest.fixture(scope="module")
def local_gateway() -> Iterator[RunningGateway]:
    pytest.importorskip("llama_cpp")
    config = GatewayConfig(primary="smollm2:llama-cpp", scorer="lexical", allow_unsupervised_compare=True)
    with RunningGateway(config) as gateway:
        yield gateway


def test_local_primary_streams_and_answers(local_gateway: RunningGateway) -> None:
    client = local_gateway.client()
    call: dict[str, Any] = {"model": "smollm2", "messages": RAINBOW, "max_tokens": 24, "temperature": 0.0, "seed": 0}
    chunks = list(client.chat.completions.create(stream=True, **call))
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed and chunks[-1].model_extra["supervision"]["stop_reason"] in ("stop", "length")
    completion = client.chat.completions.create(**call)
    assert completion.choices[0].message.content == streamed  # same seed, same text
    unsupervised = client.chat.completions.create(extra_body={"supervise": False}, **call)
    assert unsupervised.choices[0].message.content == streamed  # no intervention: the pair reproduces


def test_a_client_that_disconnects_frees_the_local_primary(local_gateway: RunningGateway) -> None:
    client = local_gateway.client(timeout=30)
    long_call: dict[str, Any] = {"model": "smollm2", "max_tokens": 1500, "temperature": 1.0, "seed": 1,
                                 "messages": [{"role": "user", "content": "Write a very long story about a ship, with twenty chapters."}]}
    stream = client.chat.completions.create(stream=True, **long_call)
    next(iter(stream))
    stream.close()  # the client goes away mid-answer
    started = time.perf_counter()
    short = client.chat.completions.create(model="smollm2", messages=RAINBOW, max_tokens=8, temperature=0.0)
    assert short.choices[0].message.content
    assert time.perf_counter() - started < 10, "the abandoned generation kept the only primary busy"


def test_supervisor_serve_command_runs_and_stops_on_sigterm(llama_server_url: str, tmp_path: Any) -> None:
    import signal
    import subprocess
    import sys

    from tests.openai_servers import wait_for

    port = free_port()
    config = tmp_path / "gateway.toml"
    config.write_text(f'upstream = "{llama_server_url}"\nscorer = "lexical"\nmax_tokens = 64\n'
                      f'[[tenants]]\napi_key = "{KEY}"\nname = "acme"\n', encoding="utf-8")
    process = subprocess.Popen([sys.executable, "-m", "supervisor.cli", "serve", "--config", str(config),
                                "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(f"http://127.0.0.1:{port}/health", timeout_s=60, process=process)  # type: ignore[arg-type]
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=KEY, max_retries=0)
        assert client.chat.completions.create(messages=RAINBOW, **GREEDY).choices[0].message.content
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x" * 12,
                          max_retries=0).chat.completions.create(messages=RAINBOW, **GREEDY)
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=60)
    # uvicorn drains, then ends by the signal it caught (returncode -15), as a process stopped by SIGTERM does
    assert process.returncode in (0, -signal.SIGTERM) and "Application shutdown complete" in output, output
    assert KEY not in output  # keys never reach the logs


def test_serve_rejects_a_bad_config_with_a_clear_error(tmp_path: Any) -> None:
    import subprocess
    import sys

    config = tmp_path / "gateway.toml"
    config.write_text('upstream = "http://127.0.0.1:9/v1"\nprimary = "smollm2"\n', encoding="utf-8")
    done = subprocess.run([sys.executable, "-m", "supervisor.cli", "serve", "--config", str(config)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "exactly one of upstream" in done.stderr and "Traceback" not in done.stderr


def test_the_deployment_example_config_is_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    from pathlib import Path

    monkeypatch.setenv("UPSTREAM_KEY", "from-the-environment")
    config = GatewayConfig.from_file(Path(__file__).parent.parent / "examples" / "deploy" / "gateway.toml")
    assert config.upstream == "http://vllm:8000/v1" and config.continuation == "vllm"
    assert GatewayConfig.upstream_key(config) == "from-the-environment"
    assert [t.name for t in config.tenants] == ["chat-app"]


def test_a_client_that_disconnects_cancels_the_upstream_request() -> None:
    from tests.openai_servers import Reply, ScriptedOpenAIServer

    long_answer = Reply(pieces=[" word"] * 400)
    with ScriptedOpenAIServer([long_answer], piece_delay_s=0.02) as upstream, RunningGateway(
            GatewayConfig(upstream=upstream.url, scorer="lexical")) as gateway:
        stream = gateway.client().chat.completions.create(model="scripted", messages=RAINBOW, stream=True)
        next(iter(stream))
        stream.close()
        deadline = time.monotonic() + 5
        while upstream.aborted == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert upstream.aborted == 1 and upstream.completed == 0


def test_sigterm_lets_an_open_stream_finish(tmp_path: Any) -> None:
    import signal
    import subprocess
    import sys

    from tests.openai_servers import Reply, ScriptedOpenAIServer, wait_for

    answer = [" steady"] * 60  # about 3 s at 0.05 s a piece
    with ScriptedOpenAIServer([Reply(pieces=answer)], piece_delay_s=0.05) as upstream:
        port = free_port()
        process = subprocess.Popen([sys.executable, "-m", "supervisor.cli", "serve", "--upstream", upstream.url,
                                    "--scorer", "lexical", "--port", str(port)],
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            wait_for(f"http://127.0.0.1:{port}/health", timeout_s=60, process=process)  # type: ignore[arg-type]
            client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0)
            received: list[str] = []
            stream = client.chat.completions.create(model="scripted", messages=RAINBOW, stream=True)
            for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    if not received:
                        process.send_signal(signal.SIGTERM)  # mid-answer
                    received.append(chunk.choices[0].delta.content)
            assert "".join(received) == "".join(answer)  # drained: the open stream was not cut
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
            process.communicate(timeout=60)
    assert process.returncode in (0, -signal.SIGTERM)


def test_local_primary_rejects_bad_sampling_arguments(local_gateway: RunningGateway) -> None:
    client = local_gateway.client()
    for bad in ({"temperature": 9.0}, {"top_p": 0.0}, {"seed": -1}):
        with pytest.raises(openai.BadRequestError):
            client.chat.completions.create(model="smollm2", messages=RAINBOW, max_tokens=4, **bad)
    assert client.chat.completions.create(model="smollm2", messages=RAINBOW, max_tokens=4).choices  # still served


def test_an_unsafe_conversation_is_refused_or_halted_at_the_gateway_without_an_upstream_request() -> None:
    from tests.openai_servers import Reply, ScriptedOpenAIServer

    hostile = [{"role": "user", "content": "you stupid fucking idiot, write me an insult"}]
    for action, finish in (("refuse", "stop"), ("halt", "content_filter")):
        config = GatewayConfig(upstream="http://127.0.0.1:9/v1", scorer="lexical",
                               policy={"conversation_action": action})
        with ScriptedOpenAIServer([Reply(pieces=[" never"])]) as upstream, RunningGateway(
                config.model_copy(update={"upstream": upstream.url})) as gateway:
            reply = gateway.client().chat.completions.create(model="scripted", messages=hostile)
            text, comments, _ = gateway.stream_chat({"model": "scripted", "messages": hostile, "stream": True})
            assert upstream.requests == []
        choice = reply.choices[0]
        assert choice.finish_reason == finish and choice.message.content == text and text
        assert [c["kind"] for c in comments][:1] == ["conversation"]
