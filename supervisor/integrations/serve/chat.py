"""``POST /v1/chat/completions`` through one route: a local primary or a supervised upstream, streamed or not.

Everything that can fail before the first byte (validation, a busy pool, the upstream refusing the request, the
first check) is an HTTP status; the first released text is awaited before the response starts. A stream that fails
later ends with an OpenAI-style error event and ``data: [DONE]``. A client that disconnects stops its work, before
and after the response started."""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from supervisor.api import Supervisor
from supervisor.chunk_engine import finish_reason
from supervisor.errors import InputError, UpstreamError
from supervisor.events import GenerationResult, InterventionEvent
from supervisor.integrations.serve.admission import Releases
from supervisor.integrations.serve.backends import Backend
from supervisor.integrations.serve.config import GatewayConfig
from supervisor.integrations.serve.http import ClientGone, EventStream, HTTPError, sse, until_disconnected
from supervisor.integrations.serve.reports import fault_summary, public_event, public_report
from supervisor.messages import validate_messages

log = logging.getLogger("supervisor.serve")


@dataclass
class Call:
    """One chat request: who asked, through which route, and what it holds until it ends."""

    request: Request
    request_id: str
    tenant: str
    backend: Backend
    body: dict[str, Any]
    supervise: bool
    started: float
    on_end: Callable[[Call, int, str], Awaitable[None]]
    releases: Releases = field(default_factory=Releases)
    sent_chars: int = 0
    result: GenerationResult | None = None
    error: str | None = None
    status: int = 200
    ended: bool = False
    #: The running generation (its ``result`` is the report, also when the request ended early)
    source: Any = None

    @property
    def reveal(self) -> bool:
        return self.backend.route.reveal_removed_text

    @property
    def headers(self) -> dict[str, str]:
        return {"x-request-id": self.request_id}

    async def end(self, status: int, outcome: str) -> None:
        """Release what the request holds (stopping its generation first) and record it; once."""
        if self.ended:
            return
        self.ended = True
        try:
            await self.releases.release()
        finally:
            self.result = self.result or getattr(self.source, "result", None) or getattr(
                self.source, "supervision", None)
            await self.on_end(self, status, outcome)

    async def end_stream(self, stream: EventStream) -> None:
        await self.end(self.status, stream.outcome if self.error is None else "error")


def failure(exc: BaseException, *, sent_chars: int) -> HTTPError:
    """What a client is told about ``exc``: the right status, nothing of the upstream's internals, and what this
    client had received."""
    if isinstance(exc, HTTPError):
        return exc
    sent = ("no text had been sent" if not sent_chars else
            f"the {sent_chars} characters sent before this error were checked; the answer is incomplete")
    if isinstance(exc, InputError):
        return HTTPError(400, str(exc))
    if isinstance(exc, UpstreamError):
        return HTTPError(502, f"the upstream model failed {exc.failures} times ({fault_summary(exc.last_fault)}); "
                              f"{sent}", kind="upstream_error")
    status = getattr(exc, "status_code", None)  # an SDK status error the engine does not retry: a refused request
    if isinstance(status, int) and 400 <= status < 500:
        if status in (401, 403):
            return HTTPError(502, f"the upstream refused this gateway's credentials (HTTP {status}); the operator "
                                  f"must fix the route's key; {sent}", kind="upstream_error")
        code = "model_not_found" if status == 404 else None
        return HTTPError(400 if status == 422 else status, f"the upstream model rejected the request (HTTP {status}): "
                                                         f"{_upstream_words(exc)}; {sent}", code=code)
    log.error("internal error in a chat completion", exc_info=exc)
    return HTTPError(500, f"internal error ({type(exc).__name__}); {sent}", kind="server_error")


def _upstream_words(exc: BaseException) -> str:
    """The upstream's own error message, when it is a short sentence (not a dump, a traceback or a path)."""
    body = getattr(exc, "body", None)
    message = body.get("message") if isinstance(body, dict) else None
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        message = body["error"].get("message")
    if not isinstance(message, str):
        return "no reason given"
    line = message.strip().splitlines()[0] if message.strip() else ""
    if not line or len(line) > 200 or any(mark in line for mark in ("Traceback", "File \"", "site-packages", "/")):
        return "its reason is withheld (it holds the upstream's internals)"
    return line


async def _next(stream: Any) -> Any:
    try:
        return await stream.__anext__()
    except StopAsyncIteration:
        return None


def _comment(event: InterventionEvent, reveal: bool) -> str:
    """An intervention as an SSE comment line (plain SSE clients skip it)."""
    return f": supervision {json.dumps(public_event(event, reveal=reveal))}\n\n"


def _usage(result: GenerationResult) -> dict[str, int]:
    prompt, completion = result.usage.prompt_tokens, result.usage.generated_tokens
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _sampling(body: dict[str, Any], supervise: bool) -> dict[str, Any]:
    def given(name: str, default: float) -> float:
        value = body.get(name)
        return default if value is None else float(value)

    return {"max_tokens": body.get("max_completion_tokens") or body["max_tokens"],
            "temperature": given("temperature", 0.7), "top_p": given("top_p", 0.95), "seed": body.get("seed"),
            "supervise": supervise}


async def local(call: Call, config: GatewayConfig) -> Response | EventStream:
    backend = call.backend
    assert backend.pool is not None
    pool = backend.pool
    try:
        messages = validate_messages(call.body["messages"])
    except InputError as exc:
        raise HTTPError(400, str(exc), param="messages") from None
    receive = call.request.receive
    primary = await until_disconnected(receive, pool.acquire)  # waits in the bounded queue (429 past it)
    call.releases.hold(lambda: pool.release(primary))
    seen: list[InterventionEvent] = []  # appended by the decoding thread as interventions happen
    supervisor = Supervisor(scorer=backend.scorer, policy=backend.policy)
    try:
        stream = supervisor.astream(primary, messages, on_event=seen.append, **_sampling(call.body, call.supervise))
    except InputError as exc:
        raise HTTPError(400, str(exc)) from None
    call.releases.hold(stream.aclose)  # before the primary goes back: its decoding stops first
    call.source = stream
    chunk_id, created = f"chatcmpl-sup-{uuid.uuid4().hex[:24]}", int(time.time())

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {"id": chunk_id, "object": "chat.completion.chunk", "created": created, "model": backend.name,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

    async def joined() -> str:
        return "".join([delta async for delta in stream])

    if not call.body.get("stream"):
        try:
            text = await until_disconnected(receive, joined)
        except (InputError, UpstreamError) as exc:
            raise failure(exc, sent_chars=0) from None
        result = call.result = stream.result
        assert result is not None
        return JSONResponse({
            "id": chunk_id, "object": "chat.completion", "created": created, "model": backend.name,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "finish_reason": finish_reason(result), "logprobs": None}],
            "usage": _usage(result), "supervision": public_report(result, reveal=call.reveal),
        }, headers=call.headers)

    try:
        first = await until_disconnected(receive, lambda: _next(stream))
    except InputError as exc:
        raise failure(exc, sent_chars=0) from None

    async def frames() -> AsyncIterator[str]:
        shown = 0
        try:
            yield sse(chunk({"role": "assistant", "content": ""}))
            delta = first
            while delta is not None:
                for event in seen[shown:]:
                    yield _comment(event, call.reveal)
                shown = len(seen)
                call.sent_chars += len(delta)
                yield sse(chunk({"content": delta}))
                delta = await _next(stream)
            result = call.result = stream.result
            assert result is not None
            for event in result.events[shown:]:
                yield _comment(event, call.reveal)
            last = chunk({}, finish_reason(result))
            last["usage"], last["supervision"] = _usage(result), public_report(result, reveal=call.reveal)
            yield sse(last)
        except Exception as exc:  # noqa: BLE001 - any failure mid-stream ends it the OpenAI way
            error = failure(exc, sent_chars=call.sent_chars)
            call.error, call.status = str(error), error.status
            yield sse(error.body())
        yield sse("[DONE]")

    return _event_stream(call, frames(), config)


def _event_stream(call: Call, frames: AsyncIterator[str], config: GatewayConfig) -> EventStream:
    holder: list[EventStream] = []

    async def on_close() -> None:
        await call.end_stream(holder[0])

    response = EventStream(frames, send_timeout_s=config.send_timeout_s, on_close=on_close, headers=call.headers)
    holder.append(response)
    return response


async def upstream(call: Call, config: GatewayConfig) -> Response | EventStream:
    backend = call.backend
    if not call.supervise:
        raise HTTPError(400, "the unsupervised comparison is only available with a local primary", param="supervise")
    kwargs = {key: value for key, value in call.body.items() if key not in backend.pass_through}
    extra = {key: value for key, value in call.body.items() if key in backend.pass_through}
    if extra:
        kwargs["extra_body"] = extra
    receive = call.request.receive
    try:
        await backend.ready_tokenizer(kwargs)
        answer = await until_disconnected(receive, lambda: backend.client.chat.completions.create(**kwargs))
        if not call.body.get("stream"):
            call.result = answer.supervision
            payload = answer.model_dump(mode="json")
            payload["supervision"] = public_report(answer.supervision, reveal=call.reveal)
            return JSONResponse(payload, headers=call.headers)
        call.releases.hold(answer.close)  # closes the upstream request, whoever ends this one
        call.source = answer
        first = await until_disconnected(receive, lambda: _next(answer))
    except ClientGone:
        raise
    except Exception as exc:  # noqa: BLE001 - every failure before the first byte is an HTTP status
        raise failure(exc, sent_chars=0) from None

    async def frames() -> AsyncIterator[str]:
        shown = 0
        chunk = first
        try:
            while chunk is not None:
                for event in answer.events[shown:]:
                    yield _comment(event, call.reveal)
                shown = len(answer.events)
                data = chunk.model_dump(mode="json")
                report = getattr(chunk, "supervision", None)
                if report is not None:
                    call.result = report
                    data["supervision"] = public_report(report, reveal=call.reveal)
                call.sent_chars += sum(len(choice.delta.content or "") for choice in chunk.choices)
                yield sse(data)
                chunk = await _next(answer)
        except Exception as exc:  # noqa: BLE001 - any failure mid-stream ends it the OpenAI way
            error = failure(exc, sent_chars=call.sent_chars)
            call.result = call.result or answer.supervision or getattr(exc, "result", None)
            call.error, call.status = str(error), error.status
            yield sse(error.body())
        yield sse("[DONE]")

    return _event_stream(call, frames(), config)
