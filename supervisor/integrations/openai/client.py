"""The supervised OpenAI client: ``supervise()``, chat completions (sync and async, streamed or not)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from supervisor.chunk_drivers import arun_chunked, run_chunked
from supervisor.chunk_engine import UNLIMITED_TOKENS, ChunkEngine, chunk_engine, finish_reason
from supervisor.errors import InputError
from supervisor.events import EventObserver, GenerationResult
from supervisor.integrations.openai.resources import (
    AsyncStream,
    GuardedResource,
    Passthrough,
    Settings,
    StreamParts,
    SyncStream,
)
from supervisor.integrations.openai.responses import AsyncSupervisedResponses, SupervisedResponses
from supervisor.policy import Policy, as_policy
from supervisor.primaries.openai_compatible import ChatRequest, Continuation, OpenAICompatiblePrimary
from supervisor.scorers import Scorer, get_scorer


def supervise(
    client: Any,
    *,
    scorer: str | Scorer | None = None,
    policy: Policy | str | Path | dict[str, Any] | None = None,
    continuation: Continuation = "instruction",
    chat_template: str | Callable[[Sequence[Mapping[str, str]]], str] | None = None,
    tokenizer: str | Callable[[str], list[int]] | None = "auto",
    on_event: EventObserver | None = None,
) -> Any:
    """Wrap an ``openai.OpenAI`` or ``openai.AsyncOpenAI`` client; returns a client of the same shape.

    ``continuation`` and ``chat_template`` say how a stopped answer is resumed and ``tokenizer`` where
    the token ids for ``logit_bias`` come from (see :mod:`supervisor.primaries.openai_compatible`).
    """
    import openai

    settings = Settings(get_scorer(scorer), as_policy(policy), on_event)
    if isinstance(client, openai.AsyncOpenAI):
        primary = OpenAICompatiblePrimary(async_client=client, continuation=continuation,
                                          chat_template=chat_template, tokenizer=tokenizer)
        return AsyncSupervisedOpenAI(client, primary, settings)
    if isinstance(client, openai.OpenAI):
        primary = OpenAICompatiblePrimary(client, continuation=continuation, chat_template=chat_template,
                                          tokenizer=tokenizer)
        return SupervisedOpenAI(client, primary, settings)
    raise InputError(f"supervise() takes an openai.OpenAI or openai.AsyncOpenAI client, got {type(client).__name__}")


# -- request handling shared by sync and async ----------------------------------------------------
def _checked_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    if "messages" not in kwargs:
        raise InputError("chat.completions.create() needs messages=")
    n = kwargs.get("n")
    if n not in (None, 1):
        raise InputError(
            f"n={n} is not supported under supervision (each choice would need its own supervised stream); "
            "make n separate calls"
        )
    if kwargs.get("logprobs") or kwargs.get("top_logprobs"):
        raise InputError("logprobs are not supported under supervision: discarded attempts would make them wrong")
    return kwargs


def _max_tokens(kwargs: Mapping[str, Any]) -> int:
    value = kwargs.get("max_completion_tokens") or kwargs.get("max_tokens")
    return int(value) if value else UNLIMITED_TOKENS


def _session(primary: OpenAICompatiblePrimary, request: ChatRequest, settings: Settings) -> ChunkEngine:
    observers = [settings.on_event] if settings.on_event else []
    return chunk_engine(primary, request, settings.policy, max_tokens=_max_tokens(request.kwargs),
                        observers=observers, conversation=request.kwargs.get("messages"),
                        measured_by=settings.scorer)


def _finish_reason(result: GenerationResult, request: ChatRequest) -> str:
    return finish_reason(result, tool_calls=bool(request.tool_calls))


def _usage(result: GenerationResult) -> Any:
    """Usage summed over every upstream request (the per-request figures are in result.attempts)."""
    from openai.types import CompletionUsage

    prompt, completion = result.usage.prompt_tokens, result.usage.generated_tokens
    return CompletionUsage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion)


class _ChunkFactory:
    """Builds ``ChatCompletionChunk`` objects in the upstream's name (id, model, created)."""

    def __init__(self, request: ChatRequest) -> None:
        self.request = request
        self.fallback_id = f"chatcmpl-sup-{uuid.uuid4().hex[:24]}"
        self.fallback_created = int(time.time())
        self.role_sent = False

    def chunk(self, *, content: str | None = None, tool_calls: list[Any] | None = None,
              finish_reason: str | None = None, usage: Any = None) -> Any:
        from openai.types.chat import ChatCompletionChunk
        from openai.types.chat.chat_completion_chunk import Choice, ChoiceDelta

        request = self.request
        choices = []
        if usage is None:
            delta = ChoiceDelta(content=content, tool_calls=tool_calls or None,
                                role=None if self.role_sent else "assistant")
            self.role_sent = True
            choices = [Choice(index=0, delta=delta, finish_reason=finish_reason)]
        return ChatCompletionChunk(
            id=request.response_id or self.fallback_id,
            created=request.created or self.fallback_created,
            model=request.model or str(request.kwargs.get("model", "")),
            object="chat.completion.chunk",
            system_fingerprint=request.system_fingerprint,
            choices=choices,
            usage=usage,
        )


def _closing_chunks(factory: _ChunkFactory, result: GenerationResult | None, include_usage: bool) -> list[Any]:
    """After the text: the tool-call deltas, the finish reason, the usage chunk when asked for; the last
    chunk carries the supervision report."""
    assert result is not None
    request = factory.request
    chunks = [factory.chunk(tool_calls=[tool_call]) for tool_call in request.tool_calls]
    chunks.append(factory.chunk(finish_reason=_finish_reason(result, request)))
    if include_usage:
        chunks.append(factory.chunk(usage=_usage(result)))
    _attach(chunks[-1], result)
    return chunks


def _attach(obj: Any, result: GenerationResult | None) -> Any:
    """Put the supervision report on an OpenAI object without changing its type or its JSON."""
    object.__setattr__(obj, "supervision", result)
    return obj


def _completion(request: ChatRequest, text: str, result: GenerationResult) -> Any:
    from openai.types.chat import ChatCompletion, ChatCompletionMessage
    from openai.types.chat.chat_completion import Choice

    tool_calls = _merged_tool_calls(request.tool_calls)
    message = ChatCompletionMessage(role="assistant", content=text if text or not tool_calls else None,
                                    tool_calls=tool_calls or None)
    completion = ChatCompletion(
        id=request.response_id or f"chatcmpl-sup-{uuid.uuid4().hex[:24]}",
        created=request.created or int(time.time()),
        model=request.model or str(request.kwargs.get("model", "")),
        object="chat.completion",
        system_fingerprint=request.system_fingerprint,
        choices=[Choice(index=0, message=message, finish_reason=_finish_reason(result, request),
                        logprobs=None)],
        usage=_usage(result),
    )
    return _attach(completion, result)


def _merged_tool_calls(deltas: list[Any]) -> list[Any]:
    from openai.types.chat import ChatCompletionMessageToolCall

    merged: dict[int, dict[str, Any]] = {}
    for delta in deltas:
        entry = merged.setdefault(delta.index, {"id": None, "name": "", "arguments": ""})
        entry["id"] = delta.id or entry["id"]
        if delta.function is not None:
            # Servers send the name once (OpenAI), in pieces, or whole again in every delta (llama.cpp's
            # server): a piece that repeats the name so far is not appended.
            name = delta.function.name or ""
            if name != entry["name"]:
                entry["name"] += name
            entry["arguments"] += delta.function.arguments or ""
    return [
        ChatCompletionMessageToolCall(id=e["id"] or f"call_{i}", type="function",
                                      function={"name": e["name"], "arguments": e["arguments"]})
        for i, e in sorted(merged.items())
    ]


# -- the streams, the resources and the clients: what sync and async share, then each one's I/O ---------------
class _ChatStreamParts(StreamParts):
    """Chat completion chunks in the upstream's name around the released text; the tool calls, finish reason and
    usage at the end."""

    def __init__(self, primary: OpenAICompatiblePrimary, request: ChatRequest, settings: Settings) -> None:
        super().__init__(_session(primary, request, settings))
        self._factory = _ChunkFactory(request)
        self._include_usage = bool((request.kwargs.get("stream_options") or {}).get("include_usage"))

    def on_text(self, text: str) -> list[Any]:
        return [self._factory.chunk(content=text)]

    def closing(self) -> list[Any]:
        return _closing_chunks(self._factory, self.session.result, self._include_usage)


class SupervisedChatStream(SyncStream):
    """Iterates ``ChatCompletionChunk`` objects carrying released text only; closes the upstream on
    ``close()`` or when a ``with`` block ends. ``events`` grows live; ``supervision`` is set at the end."""

    def __init__(self, primary: OpenAICompatiblePrimary, request: ChatRequest, settings: Settings) -> None:
        parts = _ChatStreamParts(primary, request, settings)
        super().__init__(parts, run_chunked(parts.session, primary, request, settings.scorer))


class AsyncSupervisedChatStream(AsyncStream):
    """The async sibling of :class:`SupervisedChatStream` (``async for``, ``await close()``, ``async with``)."""

    def __init__(self, primary: OpenAICompatiblePrimary, request: ChatRequest, settings: Settings) -> None:
        parts = _ChatStreamParts(primary, request, settings)
        super().__init__(parts, arun_chunked(parts.session, primary, request, settings.scorer))


class _CompletionsBase(GuardedResource):
    """What the sync and async ``chat.completions`` share: the primary, the settings, the request's checks."""

    def __init__(self, target: Any, primary: OpenAICompatiblePrimary, settings: Settings) -> None:
        super().__init__(target)
        self._primary = primary
        self._settings = settings

    def _request(self, kwargs: dict[str, Any]) -> ChatRequest:
        return ChatRequest(kwargs=_checked_kwargs(dict(kwargs)))


class _SupervisedCompletions(_CompletionsBase):
    def create(self, **kwargs: Any) -> Any:
        """``chat.completions.create`` with the same arguments; text is supervised."""
        request = self._request(kwargs)
        stream = SupervisedChatStream(self._primary, request, self._settings)
        if kwargs.get("stream"):
            return stream
        with stream:  # closed also when the caller is interrupted: the upstream request ends with it
            text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
        assert stream.supervision is not None
        return _completion(request, text, stream.supervision)


class _AsyncSupervisedCompletions(_CompletionsBase):
    async def create(self, **kwargs: Any) -> Any:
        """``await chat.completions.create(...)`` with the same arguments; text is supervised."""
        request = self._request(kwargs)
        stream = AsyncSupervisedChatStream(self._primary, request, self._settings)
        if kwargs.get("stream"):
            return stream
        async with stream:  # closed also when the task is cancelled: the upstream request ends with it
            parts = [chunk.choices[0].delta.content or "" async for chunk in stream if chunk.choices]
        assert stream.supervision is not None
        return _completion(request, "".join(parts), stream.supervision)


class _SupervisedChat(Passthrough):
    def __init__(self, target: Any, completions: _CompletionsBase) -> None:
        super().__init__(target)
        self.completions = completions


class _ClientBase(Passthrough):
    """What the sync and async supervised clients share; each sibling names its resources and its I/O."""

    def __init__(self, client: Any, primary: OpenAICompatiblePrimary, settings: Settings) -> None:
        super().__init__(client)
        self._primary = primary
        self._settings = settings

    @property
    def unwrapped(self) -> Any:
        """The original client (unsupervised)."""
        return self._target

    @property
    def primary(self) -> OpenAICompatiblePrimary:
        """The chunk-controlled primary that supervised requests go through."""
        return self._primary


class SupervisedOpenAI(_ClientBase):
    """An ``openai.OpenAI`` client whose chat completions and responses are supervised."""

    def __init__(self, client: Any, primary: OpenAICompatiblePrimary, settings: Settings) -> None:
        super().__init__(client, primary, settings)
        self.chat = _SupervisedChat(client.chat, _SupervisedCompletions(client.chat.completions, primary, settings))
        self.responses = SupervisedResponses(client.responses, settings, client)

    def with_options(self, **options: Any) -> SupervisedOpenAI:
        client = self._target.with_options(**options)
        return SupervisedOpenAI(client, self._primary.with_clients(client), self._settings)


class AsyncSupervisedOpenAI(_ClientBase):
    """An ``openai.AsyncOpenAI`` client whose chat completions and responses are supervised."""

    def __init__(self, client: Any, primary: OpenAICompatiblePrimary, settings: Settings) -> None:
        super().__init__(client, primary, settings)
        completions = _AsyncSupervisedCompletions(client.chat.completions, primary, settings)
        self.chat = _SupervisedChat(client.chat, completions)
        self.responses = AsyncSupervisedResponses(client.responses, settings, client)

    def with_options(self, **options: Any) -> AsyncSupervisedOpenAI:
        client = self._target.with_options(**options)
        return AsyncSupervisedOpenAI(client, self._primary.with_clients(async_client=client), self._settings)
