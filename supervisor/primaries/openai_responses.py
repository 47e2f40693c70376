"""A hosted primary behind the OpenAI Responses API, supervised at chunk level."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from supervisor.errors import UpstreamFault
from supervisor.primaries.chunk import Attempt, UpstreamDelta
from supervisor.primaries.continuation import CONTINUE_INSTRUCTION
from supervisor.primaries.hosted import HostedPrimary


@dataclass
class ResponsesRequest:
    """The caller's ``responses.create`` arguments, and the upstream events the wrapper re-issues."""

    kwargs: dict[str, Any]
    preamble: list[Any] = field(default_factory=list)
    item_id: str | None = None
    output_index: int = 0
    content_index: int = 0
    completed: Any = None


class OpenAIResponsesPrimary(HostedPrimary):
    """A model behind the OpenAI Responses API, supervised at chunk level (no logit_bias: the API has none;
    a stopped answer is resumed by the instruction continuation)."""

    def __init__(self, client: Any = None, *, async_client: Any = None, name: str = "openai-responses") -> None:
        super().__init__(client, async_client)
        self.name = name

    def request_for(self, attempt: Attempt, request: ResponsesRequest) -> dict[str, Any]:
        kwargs = dict(request.kwargs)
        source = kwargs.get("input")
        items: list[Any] = [{"role": "user", "content": source}] if isinstance(source, str) else list(source or [])
        if attempt.prefix:
            items += [{"role": "assistant", "content": attempt.prefix}, {"role": "user", "content": CONTINUE_INSTRUCTION}]
        kwargs["input"] = items
        kwargs["stream"] = True
        if attempt.instruction:
            kwargs["instructions"] = f"{kwargs.get('instructions') or ''}\n\n{attempt.instruction}".strip()
        if attempt.index > 0:
            if kwargs.get("max_output_tokens") is not None:
                kwargs["max_output_tokens"] = attempt.max_tokens
            if attempt.temperature_boost:
                kwargs["temperature"] = min(2.0, float(kwargs.get("temperature", 1.0)) + attempt.temperature_boost)
        return kwargs

    def delta(self, event: Any, request: ResponsesRequest, attempt: Attempt) -> UpstreamDelta:
        first = attempt.index == 0
        kind = getattr(event, "type", "")
        if kind == "response.output_text.delta":
            if request.item_id is None:
                request.item_id = event.item_id
                request.output_index = event.output_index
                request.content_index = event.content_index
            return UpstreamDelta(text=event.delta, raw=event)
        if kind in ("response.completed", "response.incomplete"):
            request.completed = event
            usage = event.response.usage
            details = getattr(event.response, "incomplete_details", None)
            finish = "length" if kind == "response.incomplete" and getattr(details, "reason", "") == "max_output_tokens" \
                else "stop"
            return UpstreamDelta(finish_reason=finish, prompt_tokens=getattr(usage, "input_tokens", None),
                                 completion_tokens=getattr(usage, "output_tokens", None), raw=event)
        if kind in ("response.failed", "error"):
            detail = getattr(event, "message", None) or getattr(getattr(event, "response", None), "error", None)
            raise UpstreamFault(f"the Responses API reported {kind}: {detail}")
        if first and request.item_id is None and not kind.endswith(".done"):
            request.preamble.append(event)
        return UpstreamDelta(raw=event)

    # -- the stream -------------------------------------------------------------------------------
    def prepare(self, request: Any) -> ResponsesRequest:
        assert isinstance(request, ResponsesRequest)
        request.completed = None
        return request

    def start(self, client: Any, request: ResponsesRequest, attempt: Attempt) -> Any:
        return client.responses.create(**self.request_for(attempt, request))

    def completed(self, request: ResponsesRequest, finished: bool) -> bool:
        return request.completed is not None
