"""The supervising gateway: an OpenAI-compatible HTTP API (Starlette) in front of an upstream model or a local
primary. It keeps no state between requests, so replicas scale it behind any load balancer.

- ``POST /v1/chat/completions``: streamed (SSE, as the OpenAI SDK reads it) or not; only checked text is
  sent. The supervision report rides along as an extra ``supervision`` field (of the completion, and of the
  last streamed chunk); each intervention is also sent as it happens, as an SSE comment line
  ``: supervision {...}`` that plain clients skip. Neither carries the removed text unless the route reveals it
  (:mod:`supervisor.integrations.serve.reports`); requests are validated as OpenAI's API types them
  (:mod:`supervisor.integrations.serve.validation`).
- ``POST /v1/moderations``: OpenAI's moderation format, measured by the same scorer.
- ``GET /v1/models``, ``GET /health``, ``GET /metrics`` (Prometheus), and ``GET /`` a chat page for people.
"""

from __future__ import annotations

import logging
import time
import uuid
from importlib import resources

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route as HttpRoute

from supervisor.errors import ConfigError
from supervisor.integrations.serve import chat
from supervisor.integrations.serve.admission import TenantLimits
from supervisor.integrations.serve.backends import Backend
from supervisor.integrations.serve.config import GatewayConfig, Tenant
from supervisor.integrations.serve.http import ClientGone, HTTPError, until_disconnected
from supervisor.integrations.serve.metrics import Metrics
from supervisor.integrations.serve.reports import audit, audit_log
from supervisor.integrations.serve.validation import moderation_texts, parse_chat, parse_json
from supervisor.scorers import Scorer
from supervisor.scorers.base import aassess_checked
from supervisor.scorers.combined import BatchingScorer

log = logging.getLogger("supervisor.serve")

#: OpenAI's moderation categories and the measured category each one reads (None: not measured, 0).
MODERATION_CATEGORIES: dict[str, str | None] = {
    "harassment": "harassment", "harassment/threatening": None, "hate": "hate", "hate/threatening": None,
    "illicit": "illicit", "illicit/violent": None, "self-harm": "self_harm", "self-harm/intent": None,
    "self-harm/instructions": None, "sexual": "sexual", "sexual/minors": None, "violence": "violence",
    "violence/graphic": None,
}


class Gateway:
    """The app's state and handlers. Build the ASGI app with :func:`create_app`."""

    def __init__(self, config: GatewayConfig, scorer: Scorer | None = None) -> None:
        self.config = config
        self._scorers: dict[str | None, Scorer] = {None: BatchingScorer(scorer)} if scorer is not None else {}
        self.default = Backend(config, config, self._scorers)
        self.tenants: dict[str, tuple[Tenant, Backend]] = {
            t.api_key: (t, Backend(config.route_for(t), config, self._scorers)) for t in config.tenants
        }
        self.limits = TenantLimits()
        if config.audit_log is not None:
            try:
                handler = logging.FileHandler(config.audit_log, encoding="utf-8")
            except OSError as exc:
                raise ConfigError(f"audit_log {config.audit_log!r} cannot be opened for appending: {exc}") from exc
            handler.setFormatter(logging.Formatter("%(message)s"))
            audit_log.addHandler(handler)
            audit_log.setLevel(logging.INFO)
        self.metrics = Metrics()
        for name, help_text in [
            ("supervisor_requests_total", "Requests by endpoint and HTTP status."),
            ("supervisor_interventions_total", "Interventions by kind and category."),
            ("supervisor_upstream_errors_total", "Requests that ended with the upstream failing."),
            ("supervisor_generated_tokens_total", "Tokens generated, discarded ones included."),
            ("supervisor_abandoned_total", "Requests whose client went away or stopped reading (work stopped)."),
        ]:
            self.metrics.counter(name, help_text)
        for name, help_text in [
            ("supervisor_time_to_first_token_seconds", "Seconds from the request to the first released text."),
            ("supervisor_request_seconds", "Seconds per chat completion request."),
            ("supervisor_scorer_seconds", "Seconds the scorer took per request (summed over its calls)."),
        ]:
            self.metrics.histogram(name, help_text)

    # -- request checks -----------------------------------------------------------------------------
    def backend_for(self, request: Request) -> tuple[str, Backend]:
        if not self.tenants:
            return "default", self.default
        header = request.headers.get("authorization", "")
        key = header[7:].strip() if header.lower().startswith("bearer ") else ""
        found = self.tenants.get(key)
        if found is None:
            raise HTTPError(401, "missing or unknown API key: send 'Authorization: Bearer KEY' with a key of this "
                                 "gateway", kind="authentication_error", code="invalid_api_key")
        tenant, backend = found
        return tenant.name or "tenant", backend

    async def body(self, request: Request) -> dict[str, object]:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.config.max_body_bytes:
            raise HTTPError(413, f"request body over {self.config.max_body_bytes} bytes")
        raw = bytearray()
        async for part in request.stream():
            raw += part
            if len(raw) > self.config.max_body_bytes:
                raise HTTPError(413, f"request body over {self.config.max_body_bytes} bytes")
        return parse_json(bytes(raw), max_depth=self.config.max_json_depth)

    def check_limits(self, body: dict[str, object]) -> None:
        """The gateway's own limits on a validated request (max_tokens missing: the gateway's default)."""
        messages = body["messages"]
        assert isinstance(messages, list)
        if len(messages) > self.config.max_messages:
            raise HTTPError(400, f"{len(messages)} messages; this gateway accepts at most {self.config.max_messages}",
                            param="messages")
        for key in ("max_tokens", "max_completion_tokens"):
            value = body.get(key)
            if isinstance(value, int) and not 1 <= value <= self.config.max_tokens:
                raise HTTPError(400, f"{key} is {value!r}; accepted: 1 to {self.config.max_tokens}", param=key)
        if body.get("max_tokens") is None and body.get("max_completion_tokens") is None:
            body["max_tokens"] = self.config.default_max_tokens

    def _supervise(self, body: dict[str, object]) -> bool:
        compare = body.pop("supervise", True)
        if not isinstance(compare, bool):
            raise HTTPError(400, f"supervise must be true or false, got {compare!r}", param="supervise")
        if not compare and not self.config.allow_unsupervised_compare:
            raise HTTPError(400, "supervise=false is not allowed by this gateway", param="supervise")
        return compare

    # -- handlers -------------------------------------------------------------------------------
    async def chat_completions(self, request: Request) -> Response | chat.EventStream:
        started = time.perf_counter()
        request_id = f"req_{uuid.uuid4().hex[:24]}"
        headers = {"x-request-id": request_id}
        call: chat.Call | None = None
        tenant = "unknown"
        try:
            tenant, backend = self.backend_for(request)
            body = await self.body(request)
            supervise = self._supervise(body)
            parse_chat(body, local=backend.local, pass_through=backend.pass_through)
            self.check_limits(body)
            await backend.check_model(str(body["model"]))
            self.limits.enter(tenant, backend.route.max_concurrent)
            call = chat.Call(request=request, request_id=request_id, tenant=tenant, backend=backend, body=body,
                             supervise=supervise, started=started, on_end=self._ended)
            call.releases.hold(lambda: self.limits.leave(tenant))
            flow = chat.local if backend.local else chat.upstream
            response = await flow(call, self.config)
        except ClientGone:
            return await self._refused(call, tenant, 499, "disconnected", None, started, request_id)
        except HTTPError as exc:
            await self._refused(call, tenant, exc.status, "refused", str(exc), started, request_id)
            return exc.response(headers)
        except Exception as exc:  # noqa: BLE001 - a bug: a 500 in OpenAI's format, the trace in the log
            log.exception("internal error in request %s", request_id)
            await self._refused(call, tenant, 500, "error", repr(exc), started, request_id)
            return HTTPError(500, f"internal error ({type(exc).__name__}); request id {request_id}",
                             kind="server_error").response(headers)
        if not isinstance(response, chat.EventStream):
            assert call is not None
            await call.end(response.status_code, "complete")
        return response

    async def _refused(self, call: chat.Call | None, tenant: str, status: int, outcome: str, error: str | None,
                       started: float, request_id: str) -> Response:
        if call is not None:
            call.error = error
            await call.end(status, outcome)
        else:
            self.metrics.inc("supervisor_requests_total", endpoint="chat", status=str(status))
            audit(request_id, tenant, "", status=status, result=None, sent_chars=0, outcome=outcome, error=error,
                  started=started)
        return Response(status_code=status)

    async def _ended(self, call: chat.Call, status: int, outcome: str) -> None:
        """A chat request's end, whatever ended it: metrics and the audit record."""
        self.metrics.inc("supervisor_requests_total", endpoint="chat", status=str(status))
        self.metrics.observe("supervisor_request_seconds", time.perf_counter() - call.started, tenant=call.tenant)
        if outcome in ("disconnected", "slow reader"):
            self.metrics.inc("supervisor_abandoned_total", tenant=call.tenant, reason=outcome)
        result = call.result
        if status == 502:
            self.metrics.inc("supervisor_upstream_errors_total", tenant=call.tenant)
        if result is not None:
            if result.timings.first_release_s is not None:
                self.metrics.observe("supervisor_time_to_first_token_seconds", result.timings.first_release_s,
                                     tenant=call.tenant)
            self.metrics.observe("supervisor_scorer_seconds", result.timings.scorer_s, tenant=call.tenant)
            self.metrics.inc("supervisor_generated_tokens_total", result.usage.generated_tokens, tenant=call.tenant)
            for event in result.events:
                self.metrics.inc("supervisor_interventions_total", kind=event.kind, category=event.category or "none",
                                 tenant=call.tenant)
        audit(call.request_id, call.tenant, call.backend.name, status=status, result=result,
              sent_chars=call.sent_chars, outcome=outcome, error=call.error, started=call.started)

    async def moderations(self, request: Request) -> Response:
        try:
            _, backend = self.backend_for(request)
            body = await self.body(request)
            texts = moderation_texts(body, max_inputs=self.config.max_moderation_inputs,
                                     max_chars=self.config.max_moderation_chars)
            try:
                assessments = await until_disconnected(request.receive, lambda: aassess_checked(
                    backend.scorer, texts, backend.policy.scorer_timeout_s))
            except ClientGone:
                self.metrics.inc("supervisor_requests_total", endpoint="moderations", status="499")
                return Response(status_code=499)
            except Exception as exc:  # noqa: BLE001 - the scorer failed: say so, never a silent "not flagged"
                log.error("the scorer failed on a moderation request", exc_info=exc)
                raise HTTPError(503, "the scorer failed; nothing was measured", kind="scorer_error") from None
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
        names = await backend.models()
        if names is None:
            return HTTPError(502, "the upstream did not list its models", kind="upstream_error").response()
        return JSONResponse({"object": "list", "data": [
            {"id": name, "object": "model", "created": 0, "owned_by": "llm-supervisor"} for name in names]})

    async def page(self, request: Request) -> Response:
        """The chat page: static HTML and JS, no CDN and no build step."""
        html = resources.files("supervisor.integrations.serve").joinpath("static/index.html").read_text("utf-8")
        return HTMLResponse(html)

    async def health(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def prometheus(self, request: Request) -> Response:
        return PlainTextResponse(self.metrics.render(), media_type="text/plain; version=0.0.4")


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
