"""The supervising gateway: an OpenAI-compatible HTTP API (Starlette) in front of an upstream model or a local
primary. It keeps no state between requests, so replicas scale it behind any load balancer.

- ``POST /v1/chat/completions``: streamed (SSE, as the OpenAI SDK reads it) or not; only checked text is
  sent. The supervision report rides along as an extra ``supervision`` field (of the completion, and of the
  last streamed chunk); each intervention is also sent as it happens, as an SSE comment line
  ``: supervision {...}`` that plain clients skip.
- ``POST /v1/moderations``: OpenAI's moderation format, measured by the same scorer.
- ``GET /v1/models``, ``GET /health``, ``GET /metrics`` (Prometheus), and ``GET /`` a chat page for people.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from importlib import resources
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route as HttpRoute
from supervisor.integrations.openai import supervise
from supervisor.integrations.serve.config import GatewayConfig, Route, Tenant
from supervisor.integrations.serve.metrics import Metrics

from supervisor.api import Supervisor
from supervisor.chunk_session import finish_reason
from supervisor.errors import ConfigError, InputError, SupervisorError, UpstreamError
from supervisor.events import GenerationResult, InterventionEvent
from supervisor.messages import validate_messages
from supervisor.policy import as_policy
from supervisor.primaries import load_primary
from supervisor.primaries.base import LogitPrimary
from supervisor.scorers import Scorer, get_scorer
from supervisor.scorers.combined import BatchingScorer

#: OpenAI's moderation categories and the measured category each one reads (None: not measured, 0).
MODERATION_CATEGORIES: dict[str, str | None] = {
    "harassment": "harassment", "harassment/threatening": None, "hate": "hate", "hate/threatening": None,
    "illicit": "illicit", "illicit/violent": None, "self-harm": "self_harm", "self-harm/intent": None,
    "self-harm/instructions": None, "sexual": "sexual", "sexual/minors": None, "violence": "violence",
    "violence/graphic": None,
}


class HTTPError(Exception):
    """An error answered in OpenAI's error format."""

    def __init__(self, status: int, message: str, *, kind: str = "invalid_request_error", param: str | None = None,
                 ) -> None:
        super().__init__(message)
        self.status, self.kind, self.param = status, kind, param

    def response(self) -> JSONResponse:
        body = {"error": {"message": str(self), "type": self.kind, "param": self.param, "code": None}}
        headers = {"WWW-Authenticate": "Bearer"} if self.status == 401 else None
        return JSONResponse(body, status_code=self.status, headers=headers)


class _Backend:
    """One route made ready: its scorer and policy, and either a supervised OpenAI client or a pool of local
    primaries (each holds one decoding state: requests wait for a free one)."""

    def __init__(self, route: Route, config: GatewayConfig, scorers: dict[str | None, Scorer]) -> None:
        if route.scorer not in scorers:  # (None: the gateway's scorer, given to create_app or the default)
            # concurrent streams' checks go to the scorer as one batch (one forward pass for many streams)
            scorers[route.scorer] = BatchingScorer(get_scorer(route.scorer))
        self.scorer = scorers[route.scorer]
        self.policy = as_policy(route.policy)
        self.model_name = route.primary or "upstream"
        self.client: Any = None
        self.primaries: asyncio.Queue[LogitPrimary] | None = None
        if route.upstream is not None:
            import openai

            upstream = openai.AsyncOpenAI(base_url=route.upstream, api_key=GatewayConfig.upstream_key(route))
            self.client = supervise(upstream, scorer=self.scorer, policy=self.policy, continuation=route.continuation)
        else:
            assert route.primary is not None
            self.primaries = asyncio.Queue()
            for _ in range(config.workers):
                primary = load_primary(route.primary)
                if not isinstance(primary, LogitPrimary):
                    raise ConfigError(f"primary {route.primary!r} is not a local model; give it as upstream instead")
                self.primaries.put_nowait(primary)


class Gateway:
    """The app's state and handlers. Build the ASGI app with :func:`create_app`."""

    def __init__(self, config: GatewayConfig, scorer: Scorer | None = None) -> None:
        self.config = config
        self._scorers: dict[str | None, Scorer] = {None: BatchingScorer(scorer)} if scorer is not None else {}
        self.default = _Backend(config, config, self._scorers)
        self.tenants: dict[str, tuple[Tenant, _Backend]] = {
            t.api_key: (t, _Backend(config.route_for(t), config, self._scorers)) for t in config.tenants
        }
        self.metrics = Metrics()
        for name, help_text in [
            ("supervisor_requests_total", "Requests by endpoint and HTTP status."),
            ("supervisor_interventions_total", "Interventions by kind and category."),
            ("supervisor_upstream_errors_total", "Requests that ended with the upstream failing."),
            ("supervisor_generated_tokens_total", "Tokens generated, discarded ones included."),
        ]:
            self.metrics.counter(name, help_text)
        for name, help_text in [
            ("supervisor_time_to_first_token_seconds", "Seconds from the request to the first released text."),
            ("supervisor_request_seconds", "Seconds per chat completion request."),
            ("supervisor_scorer_seconds", "Seconds the scorer took per request (summed over its calls)."),
        ]:
            self.metrics.histogram(name, help_text)

    # -- request checks -----------------------------------------------------------------------------
    def backend_for(self, request: Request) -> tuple[str, _Backend]:
        if not self.tenants:
            return "default", self.default
        header = request.headers.get("authorization", "")
        key = header[7:].strip() if header.lower().startswith("bearer ") else ""
        found = self.tenants.get(key)
        if found is None:
            raise HTTPError(401, "missing or unknown API key: send 'Authorization: Bearer KEY' with a key of this "
                                 "gateway", kind="authentication_error")
        tenant, backend = found
        return tenant.name or "tenant", backend

    async def body(self, request: Request) -> dict[str, Any]:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.config.max_body_bytes:
            raise HTTPError(413, f"request body over {self.config.max_body_bytes} bytes")
        raw = b""
        async for part in request.stream():
            raw += part
            if len(raw) > self.config.max_body_bytes:
                raise HTTPError(413, f"request body over {self.config.max_body_bytes} bytes")
        try:
            body = json.loads(raw or b"null")
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise HTTPError(400, f"the body is not valid JSON: {exc}") from None
        if not isinstance(body, dict):
            raise HTTPError(400, "the body must be a JSON object")
        return body

    def check_chat(self, body: dict[str, Any]) -> dict[str, Any]:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise HTTPError(400, "messages must be a non-empty list", param="messages")
        if len(messages) > self.config.max_messages:
            raise HTTPError(400, f"{len(messages)} messages; this gateway accepts at most {self.config.max_messages}",
                            param="messages")
        for key in ("max_tokens", "max_completion_tokens"):
            value = body.get(key)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= self.config.max_tokens:
                raise HTTPError(400, f"{key} is {value!r}; accepted: 1 to {self.config.max_tokens}", param=key)
        if body.get("max_tokens") is None and body.get("max_completion_tokens") is None:
            body["max_tokens"] = self.config.default_max_tokens
        compare = body.pop("supervise", True)
        if compare is not True and not self.config.allow_unsupervised_compare:
            raise HTTPError(400, "supervise=false is not allowed by this gateway", param="supervise")
        body["supervise"] = compare is not False
        return body

    # -- handlers -------------------------------------------------------------------------------
    async def chat_completions(self, request: Request) -> Response:
        started = time.perf_counter()
        try:
            tenant, backend = self.backend_for(request)
            body = self.check_chat(await self.body(request))
            if backend.primaries is not None:
                response = await self._local(backend, body, started, tenant)
            else:
                response = await self._upstream(backend, body, started, tenant)
        except HTTPError as exc:
            self.metrics.inc("supervisor_requests_total", endpoint="chat", status=str(exc.status))
            return exc.response()
        self.metrics.inc("supervisor_requests_total", endpoint="chat", status=str(response.status_code))
        return response

    async def _upstream(self, backend: _Backend, body: dict[str, Any], started: float, tenant: str) -> Response:
        if not body.pop("supervise"):
            raise HTTPError(400, "the unsupervised comparison is only available with a local primary")
        stream = bool(body.get("stream"))
        try:
            answer = await backend.client.chat.completions.create(**body)
        except InputError as exc:
            raise HTTPError(400, str(exc)) from None
        except UpstreamError as exc:
            self._finished(exc.result if isinstance(exc.result, GenerationResult) else None, started, tenant,
                           upstream_error=True)
            raise HTTPError(502, str(exc), kind="upstream_error") from None
        if not stream:
            payload = answer.model_dump(mode="json")
            payload["supervision"] = _report(answer.supervision)
            self._finished(answer.supervision, started, tenant)
            return JSONResponse(payload)

        async def events() -> AsyncIterator[str]:
            sent = 0
            report: GenerationResult | None = None
            try:
                async for chunk in answer:
                    for event in answer.events[sent:]:
                        yield _comment(event)
                    sent = len(answer.events)
                    data = chunk.model_dump(mode="json")
                    report = getattr(chunk, "supervision", None)
                    if report is not None:
                        data["supervision"] = _report(report)
                    yield f"data: {json.dumps(data)}\n\n"
                yield "data: [DONE]\n\n"
                self._finished(report, started, tenant)
            except SupervisorError as exc:
                upstream = isinstance(exc, UpstreamError)
                self._finished(getattr(exc, "result", None), started, tenant, upstream_error=upstream)
                yield _error_event(exc)
            finally:
                with anyio.CancelScope(shield=True):  # also when the client went away (the task is cancelled)
                    await answer.close()  # the upstream request is closed

        return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    async def _local(self, backend: _Backend, body: dict[str, Any], started: float, tenant: str) -> Response:
        assert backend.primaries is not None
        try:
            messages = validate_messages(body["messages"])
        except InputError as exc:
            raise HTTPError(400, str(exc), param="messages") from None
        try:
            arguments = {
                "max_tokens": body.get("max_completion_tokens") or body["max_tokens"],
                "temperature": float(body.get("temperature", 0.7)), "top_p": float(body.get("top_p", 0.95)),
                "seed": body.get("seed"), "supervise": body["supervise"],
            }
        except (TypeError, ValueError) as exc:
            raise HTTPError(400, f"temperature and top_p must be numbers: {exc}") from None
        supervisor = Supervisor(scorer=backend.scorer, policy=backend.policy)
        chunk_id, created, model = f"chatcmpl-sup-{uuid.uuid4().hex[:24]}", int(time.time()), backend.model_name

        def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            return {"id": chunk_id, "object": "chat.completion.chunk", "created": created, "model": model,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

        seen: list[InterventionEvent] = []  # appended by the decoding thread as interventions happen
        primary = await backend.primaries.get()  # requests wait here for a free local primary
        try:
            stream = supervisor.astream(primary, messages, on_event=seen.append, **arguments)
        except InputError as exc:
            backend.primaries.put_nowait(primary)
            raise HTTPError(400, str(exc)) from None
        if not body.get("stream"):
            try:
                text = "".join([delta async for delta in stream])
            except InputError as exc:
                raise HTTPError(400, str(exc)) from None
            finally:
                await stream.aclose()
                backend.primaries.put_nowait(primary)
            result = stream.result
            assert result is not None
            self._finished(result, started, tenant)
            return JSONResponse({
                "id": chunk_id, "object": "chat.completion", "created": created, "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                             "finish_reason": finish_reason(result), "logprobs": None}],
                "usage": _usage(result), "supervision": _report(result),
            })

        async def events() -> AsyncIterator[str]:
            sent = 0
            try:
                yield f"data: {json.dumps(chunk({'role': 'assistant', 'content': ''}))}\n\n"
                async for delta in stream:
                    for event in seen[sent:]:
                        yield _comment(event)
                    sent = len(seen)
                    yield f"data: {json.dumps(chunk({'content': delta}))}\n\n"
                result = stream.result
                assert result is not None
                for event in result.events[sent:]:
                    yield _comment(event)
                last = chunk({}, finish_reason(result))
                last["usage"], last["supervision"] = _usage(result), _report(result)
                yield f"data: {json.dumps(last)}\n\n"
                yield "data: [DONE]\n\n"
                self._finished(result, started, tenant)
            except SupervisorError as exc:
                yield _error_event(exc)
            finally:
                with anyio.CancelScope(shield=True):  # also when the client went away (the task is cancelled)
                    await stream.aclose()  # the decoding stops at its next token
                backend.primaries.put_nowait(primary)  # type: ignore[union-attr]

        return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    def _finished(self, result: GenerationResult | None, started: float, tenant: str, *,
                  upstream_error: bool = False) -> None:
        self.metrics.observe("supervisor_request_seconds", time.perf_counter() - started, tenant=tenant)
        if upstream_error:
            self.metrics.inc("supervisor_upstream_errors_total", tenant=tenant)
        if result is None:
            return
        if result.timings.first_release_s is not None:
            self.metrics.observe("supervisor_time_to_first_token_seconds", result.timings.first_release_s,
                                 tenant=tenant)
        self.metrics.observe("supervisor_scorer_seconds", result.timings.scorer_s, tenant=tenant)
        self.metrics.inc("supervisor_generated_tokens_total", result.usage.generated_tokens, tenant=tenant)
        for event in result.events:
            self.metrics.inc("supervisor_interventions_total", kind=event.kind, category=event.category or "none",
                             tenant=tenant)

    async def moderations(self, request: Request) -> Response:
        try:
            _, backend = self.backend_for(request)
            body = await self.body(request)
            source = body.get("input")
            texts = [source] if isinstance(source, str) else source
            if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
                raise HTTPError(400, "input must be a string or a non-empty list of strings", param="input")
            try:
                assessments = await backend.scorer.aassess(texts)
            except Exception as exc:  # noqa: BLE001 - the scorer failed: say so, never a silent "not flagged"
                raise HTTPError(503, f"the scorer failed: {type(exc).__name__}: {exc}", kind="scorer_error") from None
        except HTTPError as exc:
            self.metrics.inc("supervisor_requests_total", endpoint="moderations", status=str(exc.status))
            return exc.response()
        policy = backend.policy
        results = []
        for assessment in assessments:
            scores = {name: float(assessment.categories.get(ours, 0.0)) if ours else 0.0
                      for name, ours in MODERATION_CATEGORIES.items()}
            flags = {name: ours is not None and scores[name] >= policy.act_threshold_for(ours)
                     for name, ours in MODERATION_CATEGORIES.items()}
            flagged = any(flags.values()) or assessment.risk >= policy.act_threshold
            results.append({
                "flagged": flagged, "categories": flags, "category_scores": scores,
                "category_applied_input_types": {name: ["text"] for name in MODERATION_CATEGORIES},
                "risk": assessment.risk,  # extra: our overall risk (generic toxicity included)
            })
        self.metrics.inc("supervisor_requests_total", endpoint="moderations", status="200")
        return JSONResponse({"id": f"modr-{uuid.uuid4().hex[:24]}", "model": backend.scorer.name, "results": results})

    async def models(self, request: Request) -> Response:
        try:
            _, backend = self.backend_for(request)
        except HTTPError as exc:
            return exc.response()
        if backend.client is not None:
            try:
                listed = await backend.client.models.list()
                return JSONResponse({"object": "list", "data": [m.model_dump(mode="json") for m in listed.data]})
            except Exception as exc:  # noqa: BLE001 - the upstream's own error, reported as such
                return HTTPError(502, f"the upstream did not list its models: {exc}", kind="upstream_error").response()
        return JSONResponse({"object": "list", "data": [
            {"id": backend.model_name, "object": "model", "created": 0, "owned_by": "llm-supervisor"}]})

    async def page(self, request: Request) -> Response:
        """The chat page: static HTML and JS, no CDN and no build step."""
        html = resources.files("supervisor.integrations.serve").joinpath("static/index.html").read_text("utf-8")
        return HTMLResponse(html)

    async def health(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def prometheus(self, request: Request) -> Response:
        return PlainTextResponse(self.metrics.render(), media_type="text/plain; version=0.0.4")


def _report(result: GenerationResult | None) -> dict[str, Any] | None:
    return result.model_dump(mode="json", exclude={"text"}) if result is not None else None


def _usage(result: GenerationResult) -> dict[str, int]:
    prompt, completion = result.usage.prompt_tokens, result.usage.generated_tokens
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _comment(event: InterventionEvent) -> str:
    return f": supervision {event.model_dump_json()}\n\n"


def _error_event(exc: Exception) -> str:
    kind = "upstream_error" if isinstance(exc, UpstreamError) else "supervisor_error"
    return f"data: {json.dumps({'error': {'message': str(exc), 'type': kind, 'param': None, 'code': None}})}\n\n"


def create_app(config: GatewayConfig, *, scorer: Scorer | None = None) -> Starlette:
    """The gateway as an ASGI app (run it with uvicorn, or ``supervisor serve``). ``scorer``: a scorer object for
    routes that name none (a custom supervisor model; routes that name one use that)."""
    gateway = Gateway(config, scorer)
    app = Starlette(routes=[
        HttpRoute("/v1/chat/completions", gateway.chat_completions, methods=["POST"]),
        HttpRoute("/v1/moderations", gateway.moderations, methods=["POST"]),
        HttpRoute("/v1/models", gateway.models, methods=["GET"]),
        HttpRoute("/", gateway.page, methods=["GET"]),
        HttpRoute("/health", gateway.health, methods=["GET"]),
        HttpRoute("/metrics", gateway.prometheus, methods=["GET"]),
    ])
    app.state.gateway = gateway
    return app
