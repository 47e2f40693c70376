"""``client.responses.create`` under supervision (reached through :func:`supervisor.integrations.openai.supervise`).

The stream the caller receives: the first request's opening events (``response.created``, ...,
``response.content_part.added``), then ``response.output_text.delta`` events carrying released text
only, then ``response.output_text.done``, ``response.content_part.done``, ``response.output_item.done``
and ``response.completed`` with the supervised text and the usage summed over every upstream request.
Events are renumbered (``sequence_number``) so that the caller sees one consistent response.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from supervisor.chunk_drivers import arun_chunked, run_chunked
from supervisor.chunk_engine import UNLIMITED_TOKENS, ChunkEngine, chunk_engine
from supervisor.errors import InputError
from supervisor.events import GenerationResult
from supervisor.integrations.openai.resources import AsyncStream, GuardedResource, Settings, StreamParts, SyncStream
from supervisor.primaries.openai_responses import OpenAIResponsesPrimary, ResponsesRequest


def _checked(kwargs: dict[str, Any]) -> dict[str, Any]:
    if "input" not in kwargs:
        raise InputError("responses.create() needs input=")
    if kwargs.get("background"):
        raise InputError("background=True responses cannot be supervised (the text is not streamed to us)")
    if kwargs.get("previous_response_id") and kwargs.get("store") is False:
        raise InputError("previous_response_id with store=False cannot be resumed after a rollback")
    return kwargs


def _session(primary: OpenAIResponsesPrimary, request: ResponsesRequest, settings: Settings) -> ChunkEngine:
    limit = request.kwargs.get("max_output_tokens") or UNLIMITED_TOKENS
    observers = [settings.on_event] if settings.on_event else []
    source = request.kwargs.get("input")
    conversation = [{"role": "user", "content": source}] if isinstance(source, str) else source
    instructions = request.kwargs.get("instructions")
    if isinstance(instructions, str) and isinstance(conversation, list):
        conversation = [{"role": "system", "content": instructions}, *conversation]
    return chunk_engine(primary, request, settings.policy, max_tokens=int(limit), observers=observers,
                        conversation=conversation if isinstance(conversation, list) else None,
                        measured_by=settings.scorer)


class _EventFactory:
    """Re-issues the upstream's events in one numbered sequence, with the supervised text."""

    def __init__(self, request: ResponsesRequest) -> None:
        self.request = request
        self.sequence = 0
        self.preamble_sent = 0

    def _numbered(self, event: Any) -> Any:
        event = event.model_copy(update={"sequence_number": self.sequence})
        self.sequence += 1
        return event

    def preamble(self) -> list[Any]:
        pending = self.request.preamble[self.preamble_sent:]
        self.preamble_sent = len(self.request.preamble)
        return [self._numbered(event) for event in pending]

    def _item_id(self) -> str:
        if self.request.item_id is None:
            self.request.item_id = f"msg_sup_{uuid.uuid4().hex[:24]}"
        return self.request.item_id

    def delta(self, text: str) -> Any:
        from openai.types.responses import ResponseTextDeltaEvent

        return self._numbered(ResponseTextDeltaEvent(
            type="response.output_text.delta", delta=text, item_id=self._item_id(), logprobs=[],
            output_index=self.request.output_index, content_index=self.request.content_index, sequence_number=0,
        ))

    def response(self, text: str, result: GenerationResult) -> Any:
        from openai.types.responses import Response, ResponseOutputMessage, ResponseOutputText, ResponseUsage

        prompt, completion = result.usage.prompt_tokens, result.usage.generated_tokens
        summed = {"input_tokens": prompt, "output_tokens": completion, "total_tokens": prompt + completion}
        upstream_usage = getattr(getattr(self.request.completed, "response", None), "usage", None)
        usage = upstream_usage.model_copy(update=summed) if upstream_usage is not None \
            else ResponseUsage.model_construct(**summed)  # type: ignore[arg-type]
        message = ResponseOutputMessage(
            id=self._item_id(), type="message", role="assistant", status="completed",
            content=[ResponseOutputText(type="output_text", text=text, annotations=[])],
        )
        base = self.request.completed.response if self.request.completed is not None else None
        if base is None and self.request.preamble:
            base = getattr(self.request.preamble[0], "response", None)
        update = {"output": [message], "usage": usage, "status": "completed"}
        if result.stop_reason == "length":
            update["status"] = "incomplete"
        if base is not None:
            return base.model_copy(update=update)
        return Response(
            id=f"resp_sup_{uuid.uuid4().hex[:24]}", created_at=time.time(), model=str(self.request.kwargs["model"]),
            object="response", output=[message], parallel_tool_calls=False, tool_choice="auto", tools=[],
            usage=usage, status=update["status"],
        )

    def tail(self, text: str, result: GenerationResult) -> list[Any]:
        from openai.types.responses import (
            ResponseCompletedEvent,
            ResponseContentPartDoneEvent,
            ResponseOutputText,
            ResponseTextDoneEvent,
        )
        from openai.types.responses.response_output_item_done_event import ResponseOutputItemDoneEvent

        response = self.response(text, result)
        request = self.request
        events = [
            ResponseTextDoneEvent(type="response.output_text.done", text=text, item_id=self._item_id(), logprobs=[],
                                  output_index=request.output_index, content_index=request.content_index,
                                  sequence_number=0),
            ResponseContentPartDoneEvent(type="response.content_part.done", item_id=self._item_id(),
                                         output_index=request.output_index, content_index=request.content_index,
                                         part=ResponseOutputText(type="output_text", text=text, annotations=[]),
                                         sequence_number=0),
            ResponseOutputItemDoneEvent(type="response.output_item.done", item=response.output[0],
                                        output_index=request.output_index, sequence_number=0),
            ResponseCompletedEvent(type="response.completed", response=response, sequence_number=0),
        ]
        numbered = [self._numbered(event) for event in events]
        object.__setattr__(numbered[-1], "supervision", result)
        return numbered


class _ResponseStreamParts(StreamParts):
    """Responses API events, renumbered, around the released text; the closing events hold the final response."""

    def __init__(self, primary: OpenAIResponsesPrimary, request: ResponsesRequest, settings: Settings) -> None:
        super().__init__(_session(primary, request, settings))
        self._factory = _EventFactory(request)
        self.final_response: Any = None
        self._parts: list[str] = []

    def on_text(self, text: str) -> list[Any]:
        self._parts.append(text)
        return [*self._factory.preamble(), self._factory.delta(text)]

    def closing(self) -> list[Any]:
        result = self.session.result
        assert result is not None
        tail = [*self._factory.preamble(), *self._factory.tail("".join(self._parts), result)]
        self.final_response = tail[-1].response
        object.__setattr__(self.final_response, "supervision", result)
        return tail


class SupervisedResponseStream(SyncStream):
    """Iterates Responses API stream events; text events carry released text only."""

    def __init__(self, primary: OpenAIResponsesPrimary, request: ResponsesRequest, settings: Settings) -> None:
        self._response_parts = _ResponseStreamParts(primary, request, settings)
        session = self._response_parts.session
        super().__init__(self._response_parts, run_chunked(session, primary, request, settings.scorer))

    @property
    def final_response(self) -> Any:
        """The ``Response`` of ``response.completed`` (with ``.supervision``), once the stream has ended."""
        return self._response_parts.final_response


class AsyncSupervisedResponseStream(AsyncStream):
    """The async sibling of :class:`SupervisedResponseStream`."""

    def __init__(self, primary: OpenAIResponsesPrimary, request: ResponsesRequest, settings: Settings) -> None:
        self._response_parts = _ResponseStreamParts(primary, request, settings)
        session = self._response_parts.session
        super().__init__(self._response_parts, arun_chunked(session, primary, request, settings.scorer))

    @property
    def final_response(self) -> Any:
        """The ``Response`` of ``response.completed`` (with ``.supervision``), once the stream has ended."""
        return self._response_parts.final_response


class _ResponsesBase(GuardedResource):
    """What the sync and async ``client.responses`` share: the settings and the primary."""

    def __init__(self, target: Any, settings: Settings, primary: OpenAIResponsesPrimary) -> None:
        super().__init__(target)
        self._settings = settings
        self._primary = primary


class SupervisedResponses(_ResponsesBase):
    """``client.responses`` with a supervised ``create``; everything else passes through."""

    def __init__(self, target: Any, settings: Settings, client: Any) -> None:
        super().__init__(target, settings, OpenAIResponsesPrimary(client=client))

    def create(self, **kwargs: Any) -> Any:
        request = ResponsesRequest(kwargs=_checked(dict(kwargs)))
        stream = SupervisedResponseStream(self._primary, request, self._settings)
        if kwargs.get("stream"):
            return stream
        with stream:
            for _ in stream:
                pass
        return stream.final_response


class AsyncSupervisedResponses(_ResponsesBase):
    """``client.responses`` of an ``AsyncOpenAI`` client with a supervised ``create``."""

    def __init__(self, target: Any, settings: Settings, client: Any) -> None:
        super().__init__(target, settings, OpenAIResponsesPrimary(async_client=client))

    async def create(self, **kwargs: Any) -> Any:
        request = ResponsesRequest(kwargs=_checked(dict(kwargs)))
        stream = AsyncSupervisedResponseStream(self._primary, request, self._settings)
        if kwargs.get("stream"):
            return stream
        async with stream:
            async for _ in stream:
                pass
        return stream.final_response
