"""LangChain (langchain-core 1.x): a callback that watches, a chat model that steers, a stream filter.

- :class:`SupervisorCallbackHandler` / :class:`AsyncSupervisorCallbackHandler`: add to ``callbacks=[...]``
  of any chat model or chain. They measure the streamed tokens per run and, on an unsafe state, stop the
  stream by raising :class:`SupervisorHalt`. A callback only observes: it cannot hold text back or roll
  it back, so the tokens before the halt have already reached your code. Use
  :class:`SupervisedChatModel` for that.
- :class:`SupervisedChatModel`: a real ``BaseChatModel`` around any chat model (chunk-level control:
  hold back, roll back, re-prompt, halt; ``logit_bias`` when the inner model is ``ChatOpenAI``) or around
  a local primary from :func:`supervisor.load_primary` (full logit control). Streams released text only;
  the supervision report is in ``response_metadata["supervision"]``.
- :func:`supervised_stream_filter`: a ``RunnableGenerator`` to put after a model in a chain; it holds
  text back until checked and ends the stream with the halt message on an unsafe state.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Generator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID

from langchain_core.callbacks import AsyncCallbackHandler, BaseCallbackHandler
from langchain_core.callbacks.manager import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models.chat_models import BaseChatModel, generate_from_stream
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, HumanMessage, SystemMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import RunnableGenerator
from pydantic import ConfigDict, Field, PrivateAttr

from supervisor.api import Supervisor, _policy
from supervisor.chunk_session import (
    UNLIMITED_TOKENS,
    ChunkSession,
    Step,
    arun_chunked,
    asettle,
    chunk_session,
    finish_reason,
    run_chunked,
    settle,
)
from supervisor.continuation import CONTINUE_INSTRUCTION, ContinuationFilter
from supervisor.errors import InputError, SupervisorError
from supervisor.events import EventObserver, GenerationResult, InterventionEvent
from supervisor.messages import Message
from supervisor.policy import Policy
from supervisor.primaries.base import LogitPrimary
from supervisor.primaries.chunk import Attempt, ChunkPrimary, UpstreamDelta
from supervisor.scorers import Scorer, get_scorer

__all__ = [
    "AsyncSupervisorCallbackHandler",
    "SupervisedChatModel",
    "SupervisorCallbackHandler",
    "SupervisorHalt",
    "supervised_stream_filter",
]



class SupervisorHalt(SupervisorError):
    """Raised by the callback handlers to stop a stream whose trajectory became unsafe.

    ``result`` is the supervision report of that run (events, trace); ``run_id`` the LangChain run.
    """

    def __init__(self, message: str, *, result: GenerationResult | None, run_id: UUID | None) -> None:
        super().__init__(message)
        self.result = result
        self.run_id = run_id


def _text_of(token: Any) -> str:
    """Token text from ``on_llm_new_token`` (a string, or content blocks with output_version='v1')."""
    if isinstance(token, str):
        return token
    if isinstance(token, list):
        return "".join(b.get("text", "") if isinstance(b, dict) else str(b) for b in token)
    return str(token or "")


def _observe_only(policy: Policy) -> Policy:
    """A callback cannot roll back or re-prompt: an unsafe state goes straight to a halt."""
    return policy.model_copy(update={"max_rollbacks": 0, "max_reprompts": 0, "holdback_checkpoints": 0})


class _RunWatcher:
    """Shared bookkeeping of the sync and async handlers: one ChunkSession per LangChain run."""

    def __init__(self, scorer: str | Scorer | None, policy: Policy | str | Path | dict[str, Any] | None,
                 on_event: EventObserver | None) -> None:
        self.scorer = get_scorer(scorer)
        self.policy = _observe_only(_policy(policy))
        self.on_event = on_event
        self.results: dict[UUID, GenerationResult] = {}
        self.events: list[InterventionEvent] = []
        self._sessions: dict[UUID, ChunkSession] = {}
        self._lock = threading.Lock()

    def start(self, run_id: UUID) -> None:
        def record(event: InterventionEvent) -> None:
            with self._lock:
                self.events.append(event)
            if self.on_event is not None:
                self.on_event(event)

        session = ChunkSession(self.policy, max_tokens=UNLIMITED_TOKENS, observers=[record])
        session.begin()
        with self._lock:
            self._sessions[run_id] = session

    def session(self, run_id: UUID) -> ChunkSession | None:
        """The run's session; None once the run is finished (halted runs get no more checks)."""
        with self._lock:
            session = self._sessions.get(run_id)
            finished = run_id in self.results
        if session is None and not finished:  # a model that did not announce its start
            self.start(run_id)
            return self.session(run_id)
        return session

    def finish(self, run_id: UUID) -> None:
        with self._lock:
            session = self._sessions.pop(run_id, None)
        if session is not None:
            session.cancel()
            assert session.result is not None
            self.results[run_id] = session.result

    @staticmethod
    def unstreamed_text(session: ChunkSession, response: Any) -> str:
        """The answer's text when no token was streamed (``invoke`` without streaming)."""
        if session.streamed_chars:
            return ""
        generations = getattr(response, "generations", None) or []
        return "".join(g.text for batch in generations for g in batch if isinstance(getattr(g, "text", None), str))

    def after(self, session: ChunkSession, step: Step, run_id: UUID) -> None:
        if not step.done:
            return
        self.finish(run_id)
        result = session.result
        if result is not None and result.stop_reason in ("halt", "scorer_error"):
            reason = result.events[-1].detail if result.events else result.stop_reason
            raise SupervisorHalt(f"supervisor halted the stream: {reason}", result=result, run_id=run_id)


class SupervisorCallbackHandler(BaseCallbackHandler):
    """Watches streamed tokens per run; raises :class:`SupervisorHalt` when the state becomes unsafe.

    ``results[run_id]`` holds each finished run's report and ``events`` every intervention. Tokens flow
    only when the model streams (``stream()``, or ``streaming=True`` for ``invoke``).
    """

    raise_error = True

    def __init__(self, scorer: str | Scorer | None = None,
                 policy: Policy | str | Path | dict[str, Any] | None = None, *,
                 on_event: EventObserver | None = None) -> None:
        self._watch = _RunWatcher(scorer, policy, on_event)

    @property
    def results(self) -> dict[UUID, GenerationResult]:
        return self._watch.results

    @property
    def events(self) -> list[InterventionEvent]:
        return self._watch.events

    def on_chat_model_start(self, serialized: dict[str, Any], messages: list[list[BaseMessage]], *,
                            run_id: UUID, **kwargs: Any) -> None:
        self._watch.start(run_id)

    def on_llm_start(self, serialized: dict[str, Any], prompts: list[str], *, run_id: UUID, **kwargs: Any) -> None:
        self._watch.start(run_id)

    def on_llm_new_token(self, token: Any, *, run_id: UUID, **kwargs: Any) -> None:
        session = self._watch.session(run_id)
        if session is not None:
            step = settle(session, session.feed(UpstreamDelta(text=_text_of(token))), self._watch.scorer)
            self._watch.after(session, step, run_id)

    def on_llm_end(self, response: Any, *, run_id: UUID, **kwargs: Any) -> None:
        session = self._watch.session(run_id)
        if session is not None:
            unseen = self._watch.unstreamed_text(session, response)
            if unseen:  # not streamed: the whole answer is checked now, before invoke() returns it
                self._watch.after(session, settle(session, session.feed(UpstreamDelta(text=unseen)),
                                                  self._watch.scorer), run_id)
            if self._watch.session(run_id) is not None:
                self._watch.after(session, settle(session, session.end(), self._watch.scorer), run_id)
        self._watch.finish(run_id)

    def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self._watch.finish(run_id)


class AsyncSupervisorCallbackHandler(AsyncCallbackHandler):
    """Async twin of :class:`SupervisorCallbackHandler` (for ``ainvoke`` / ``astream`` / ``abatch``).

    LangChain does not propagate errors of async handlers called from sync ``stream()``: use the sync
    handler there.
    """

    raise_error = True

    def __init__(self, scorer: str | Scorer | None = None,
                 policy: Policy | str | Path | dict[str, Any] | None = None, *,
                 on_event: EventObserver | None = None) -> None:
        self._watch = _RunWatcher(scorer, policy, on_event)

    @property
    def results(self) -> dict[UUID, GenerationResult]:
        return self._watch.results

    @property
    def events(self) -> list[InterventionEvent]:
        return self._watch.events

    async def on_chat_model_start(self, serialized: dict[str, Any], messages: list[list[BaseMessage]], *,
                                  run_id: UUID, **kwargs: Any) -> None:
        self._watch.start(run_id)

    async def on_llm_start(self, serialized: dict[str, Any], prompts: list[str], *, run_id: UUID,
                           **kwargs: Any) -> None:
        self._watch.start(run_id)

    async def on_llm_new_token(self, token: Any, *, run_id: UUID, **kwargs: Any) -> None:
        session = self._watch.session(run_id)
        if session is not None:
            step = await asettle(session, session.feed(UpstreamDelta(text=_text_of(token))), self._watch.scorer)
            self._watch.after(session, step, run_id)

    async def on_llm_end(self, response: Any, *, run_id: UUID, **kwargs: Any) -> None:
        session = self._watch.session(run_id)
        if session is not None:
            unseen = self._watch.unstreamed_text(session, response)
            if unseen:
                self._watch.after(session, await asettle(session, session.feed(UpstreamDelta(text=unseen)),
                                                         self._watch.scorer), run_id)
            if self._watch.session(run_id) is not None:
                self._watch.after(session, await asettle(session, session.end(), self._watch.scorer), run_id)
        self._watch.finish(run_id)

    async def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self._watch.finish(run_id)


# -- the supervised chat model ---------------------------------------------------------------------
@dataclass
class LangChainRequest:
    """One call of the wrapped model: its messages, stop words and keyword arguments (tools, ...)."""

    messages: list[BaseMessage]
    stop: list[str] | None
    kwargs: dict[str, Any]
    tool_call_chunks: list[Any] = field(default_factory=list)
    response_metadata: dict[str, Any] = field(default_factory=dict)


def _is_chat_openai(model: Any) -> bool:
    return type(model).__name__ in ("ChatOpenAI", "AzureChatOpenAI") and hasattr(model, "root_client")


def _fault(exc: Exception) -> Exception:
    try:
        from supervisor.primaries.openai_compatible import fault_from
    except ImportError:
        return exc
    try:
        return fault_from(exc) or exc
    except SupervisorError:  # openai not installed: nothing to classify
        return exc


class LangChainPrimary(ChunkPrimary):
    """Any LangChain chat model as a chunk-controlled primary (instruction continuation; logit_bias and
    the model's tokenizer when it is ``ChatOpenAI``)."""

    def __init__(self, model: BaseChatModel) -> None:
        self.model = model
        self.name = f"langchain:{type(model).__name__}"
        self._openai: Any = None
        if _is_chat_openai(model):
            from supervisor.primaries.openai_compatible import OpenAICompatiblePrimary

            self._openai = OpenAICompatiblePrimary(model.root_client, getattr(model, "model_name", None),  # type: ignore[attr-defined]
                                                   async_client=model.root_async_client)  # type: ignore[attr-defined]

    def tokenizer(self, request: Any) -> Callable[[str], list[int]] | None:
        return self._openai.tokenizer({}) if self._openai is not None else None

    def token_counter(self, request: Any) -> Callable[[str], int]:
        return self._openai.token_counter({}) if self._openai is not None else super().token_counter(request)

    def _call(self, request: LangChainRequest, attempt: Attempt) -> tuple[list[BaseMessage], dict[str, Any]]:
        messages = list(request.messages)
        if attempt.instruction:
            if messages and isinstance(messages[0], SystemMessage) and isinstance(messages[0].content, str):
                messages[0] = SystemMessage(content=f"{messages[0].content}\n\n{attempt.instruction}")
            else:
                messages.insert(0, SystemMessage(content=attempt.instruction))
        if attempt.prefix:
            messages += [AIMessage(content=attempt.prefix), HumanMessage(content=CONTINUE_INSTRUCTION)]
        kwargs = dict(request.kwargs)
        if self._openai is not None and attempt.index > 0:
            if attempt.logit_bias:
                kwargs["logit_bias"] = {str(k): v for k, v in attempt.logit_bias.items()}
            if attempt.temperature_boost:
                base = getattr(self.model, "temperature", None)
                kwargs["temperature"] = min(2.0, (base if base is not None else 1.0) + attempt.temperature_boost)
        return messages, kwargs

    def _delta(self, chunk: AIMessageChunk, request: LangChainRequest) -> UpstreamDelta:
        if chunk.tool_call_chunks:
            request.tool_call_chunks.extend(chunk.tool_call_chunks)
        request.response_metadata.update({k: v for k, v in chunk.response_metadata.items() if v is not None})
        usage = chunk.usage_metadata
        return UpstreamDelta(
            text=chunk.text if isinstance(chunk.content, (str, list)) else "",
            finish_reason=chunk.response_metadata.get("finish_reason"),
            prompt_tokens=usage.get("input_tokens") if usage else None,
            completion_tokens=usage.get("output_tokens") if usage else None,
        )

    @contextmanager
    def open(self, request: Any, attempt: Attempt) -> Iterator[Iterator[UpstreamDelta]]:
        assert isinstance(request, LangChainRequest)
        request.tool_call_chunks.clear()
        messages, kwargs = self._call(request, attempt)
        continuation = ContinuationFilter(attempt.prefix)
        chunks = self.model.stream(messages, stop=request.stop, **kwargs)

        def deltas() -> Iterator[UpstreamDelta]:
            finished = False
            try:
                for chunk in chunks:
                    delta = continuation.apply(self._delta(chunk, request))
                    finished = finished or delta.finish_reason is not None
                    yield delta
            except Exception as exc:
                raise _fault(exc) from exc
            # a LangChain stream simply ends: that is a normal finish unless the model said otherwise
            end = continuation.flush(finish_reason=None if finished else "stop")
            if end is not None:
                yield end

        try:
            yield deltas()
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()

    @asynccontextmanager
    async def aopen(self, request: Any, attempt: Attempt) -> AsyncIterator[AsyncIterator[UpstreamDelta]]:
        assert isinstance(request, LangChainRequest)
        request.tool_call_chunks.clear()
        messages, kwargs = self._call(request, attempt)
        continuation = ContinuationFilter(attempt.prefix)
        chunks = self.model.astream(messages, stop=request.stop, **kwargs)

        async def deltas() -> AsyncIterator[UpstreamDelta]:
            finished = False
            try:
                async for chunk in chunks:
                    delta = continuation.apply(self._delta(chunk, request))
                    finished = finished or delta.finish_reason is not None
                    yield delta
            except Exception as exc:
                raise _fault(exc) from exc
            # a LangChain stream simply ends: that is a normal finish unless the model said otherwise
            end = continuation.flush(finish_reason=None if finished else "stop")
            if end is not None:
                yield end

        try:
            yield deltas()
        finally:
            await chunks.aclose()  # type: ignore[attr-defined]


def _as_messages(messages: Sequence[BaseMessage]) -> list[Message]:
    roles = {"human": "user", "ai": "assistant", "system": "system"}
    out: list[Message] = []
    for index, message in enumerate(messages):
        role = roles.get(message.type)
        if role is None or not isinstance(message.content, str):
            raise InputError(
                f"messages[{index}] is a {type(message).__name__}; a local primary takes system, human and ai "
                "messages with text content"
            )
        out.append({"role": role, "content": message.content})  # type: ignore[typeddict-item]
    return out


def _local_arguments(stop: list[str] | None, kwargs: dict[str, Any]) -> None:
    unknown = sorted(set(kwargs) - {"max_tokens", "temperature"})
    if stop or unknown:
        given = (["stop"] if stop else []) + unknown
        raise InputError(
            f"a local primary takes max_tokens and temperature per call, not {', '.join(given)}; "
            "set the policy or wrap a LangChain chat model for those"
        )


class SupervisedChatModel(BaseChatModel):
    """A chat model whose answers are supervised: only checked text is streamed; unsafe trajectories are
    rolled back, re-prompted or halted per the policy. ``inner`` is any LangChain chat model or a local
    primary from :func:`supervisor.load_primary`."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    inner: Any = Field(description="The supervised model: a BaseChatModel, or a local primary (LogitPrimary).")
    scorer: Any = Field(default=None, description="Scorer name or object (default: lexical).")
    policy: Any = Field(default=None, description="Policy, dict of its fields, or path to a TOML/JSON file.")
    max_tokens: int = Field(default=256, description="Answer length for local primaries.")
    temperature: float = Field(default=0.7, description="Sampling temperature for local primaries.")
    on_event: Any = Field(default=None, description="Called with each InterventionEvent.")

    _supervisor: Supervisor = PrivateAttr()
    _primary: LangChainPrimary | None = PrivateAttr(default=None)

    def model_post_init(self, context: Any) -> None:
        if not isinstance(self.inner, (BaseChatModel, LogitPrimary)):
            raise InputError(
                f"inner must be a LangChain BaseChatModel or a local primary from supervisor.load_primary(), "
                f"got {type(self.inner).__name__}"
            )
        observers = [self.on_event] if self.on_event else []
        self._supervisor = Supervisor(scorer=self.scorer, policy=self.policy, observers=observers)
        if isinstance(self.inner, BaseChatModel):
            self._primary = LangChainPrimary(self.inner)

    @property
    def _llm_type(self) -> str:
        return "supervised-chat-model"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        inner = self.inner
        return {"inner": getattr(inner, "_llm_type", None) or getattr(inner, "name", type(inner).__name__),
                "scorer": self._supervisor.scorer.name}

    def bind_tools(self, tools: Sequence[Any], *, tool_choice: Any = None, **kwargs: Any) -> Any:
        if not isinstance(self.inner, BaseChatModel):
            raise InputError("tools need a LangChain inner model; a local primary has no tool calling")
        bound = self.inner.bind_tools(tools, tool_choice=tool_choice, **kwargs)
        return self.bind(**bound.kwargs)  # type: ignore[attr-defined]

    # -- the stream ---------------------------------------------------------------------------------
    def _session(self, request: LangChainRequest) -> ChunkSession:
        assert self._primary is not None
        return chunk_session(self._primary, request, self._supervisor.policy, max_tokens=UNLIMITED_TOKENS,
                             observers=self._supervisor.observers)

    def _final_chunk(self, result: GenerationResult | None, request: LangChainRequest | None) -> ChatGenerationChunk:
        metadata: dict[str, Any] = {"supervision": result.model_dump(mode="json") if result else None}
        usage = None
        tool_call_chunks: list[Any] = []
        if result is not None:
            if request is not None:
                tool_call_chunks = list(request.tool_call_chunks)
                for key in ("model_name", "system_fingerprint"):
                    if key in request.response_metadata:
                        metadata[key] = request.response_metadata[key]
            metadata["finish_reason"] = finish_reason(result, tool_calls=bool(tool_call_chunks))
            prompt, completion = result.usage.prompt_tokens, result.usage.generated_tokens
            usage = {"input_tokens": prompt, "output_tokens": completion, "total_tokens": prompt + completion}
        message = AIMessageChunk(content="", response_metadata=metadata, usage_metadata=usage,
                                 tool_call_chunks=tool_call_chunks, chunk_position="last")
        return ChatGenerationChunk(message=message)

    def _stream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        if isinstance(self.inner, LogitPrimary):
            _local_arguments(stop, kwargs)
            stream = self._supervisor.stream(self.inner, _as_messages(messages),
                                             max_tokens=kwargs.pop("max_tokens", self.max_tokens),
                                             temperature=kwargs.pop("temperature", self.temperature))
            with stream:
                for text in stream:
                    chunk = ChatGenerationChunk(message=AIMessageChunk(content=text))
                    if run_manager:
                        run_manager.on_llm_new_token(text, chunk=chunk)
                    yield chunk
            yield self._final_chunk(stream.result, None)
            return
        assert self._primary is not None
        request = LangChainRequest(list(messages), stop, kwargs)
        session = self._session(request)
        texts = run_chunked(session, self._primary, request, self._supervisor.scorer)
        try:
            for text in texts:
                chunk = ChatGenerationChunk(message=AIMessageChunk(content=text))
                if run_manager:
                    run_manager.on_llm_new_token(text, chunk=chunk)
                yield chunk
        finally:
            texts.close()
        yield self._final_chunk(session.result, request)

    async def _astream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                       run_manager: AsyncCallbackManagerForLLMRun | None = None,
                       **kwargs: Any) -> AsyncIterator[ChatGenerationChunk]:
        if isinstance(self.inner, LogitPrimary):
            _local_arguments(stop, kwargs)
            stream = self._supervisor.astream(self.inner, _as_messages(messages),
                                              max_tokens=kwargs.pop("max_tokens", self.max_tokens),
                                              temperature=kwargs.pop("temperature", self.temperature))
            async with stream:
                async for text in stream:
                    chunk = ChatGenerationChunk(message=AIMessageChunk(content=text))
                    if run_manager:
                        await run_manager.on_llm_new_token(text, chunk=chunk)
                    yield chunk
            yield self._final_chunk(stream.result, None)
            return
        assert self._primary is not None
        request = LangChainRequest(list(messages), stop, kwargs)
        session = self._session(request)
        texts = arun_chunked(session, self._primary, request, self._supervisor.scorer)
        try:
            async for text in texts:
                chunk = ChatGenerationChunk(message=AIMessageChunk(content=text))
                if run_manager:
                    await run_manager.on_llm_new_token(text, chunk=chunk)
                yield chunk
        finally:
            await texts.aclose()
        yield self._final_chunk(session.result, request)

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> ChatResult:
        return generate_from_stream(self._stream(messages, stop=stop, run_manager=run_manager, **kwargs))

    async def _agenerate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                         run_manager: AsyncCallbackManagerForLLMRun | None = None, **kwargs: Any) -> ChatResult:
        chunks = [chunk async for chunk in self._astream(messages, stop=stop, run_manager=run_manager, **kwargs)]
        merged = chunks[0]
        for chunk in chunks[1:]:
            merged += chunk
        message = merged.message
        return ChatResult(generations=[ChatGeneration(
            message=AIMessage(content=message.content, response_metadata=message.response_metadata,
                              usage_metadata=getattr(message, "usage_metadata", None),
                              tool_calls=getattr(message, "tool_calls", []), id=message.id),
        )])


# -- a stream filter for chains ---------------------------------------------------------------------
def supervised_stream_filter(
    scorer: str | Scorer | None = None,
    policy: Policy | str | Path | dict[str, Any] | None = None,
    *,
    on_event: EventObserver | None = None,
) -> RunnableGenerator:
    """A chain step (``model | supervised_stream_filter() | ...``) that releases text only once checked and,
    as it cannot regenerate, ends the stream with the policy's halt message on an unsafe state.
    Input: strings or message chunks; output: strings."""
    watch_scorer = get_scorer(scorer)
    checked_policy = _observe_only(_policy(policy))

    def session() -> ChunkSession:
        s = ChunkSession(checked_policy, max_tokens=UNLIMITED_TOKENS, observers=[on_event] if on_event else [])
        s.begin()
        return s

    def transform(chunks: Iterator[Any]) -> Generator[str, None, None]:
        s = session()
        for chunk in chunks:
            step = settle(s, s.feed(UpstreamDelta(text=_chunk_text(chunk))), watch_scorer)
            if step.released:
                yield step.released
            if step.done:
                return
        step = settle(s, s.end(), watch_scorer)
        if step.released:
            yield step.released

    async def atransform(chunks: AsyncIterator[Any]) -> AsyncGenerator[str, None]:
        s = session()
        async for chunk in chunks:
            step = await asettle(s, s.feed(UpstreamDelta(text=_chunk_text(chunk))), watch_scorer)
            if step.released:
                yield step.released
            if step.done:
                return
        step = await asettle(s, s.end(), watch_scorer)
        if step.released:
            yield step.released

    return RunnableGenerator(transform, atransform, name="supervised_stream_filter")


def _chunk_text(chunk: Any) -> str:
    if isinstance(chunk, str):
        return chunk
    if isinstance(chunk, BaseMessage):
        return chunk.text if isinstance(chunk.text, str) else str(chunk.text)
    raise InputError(f"supervised_stream_filter takes strings or message chunks, got {type(chunk).__name__}")

