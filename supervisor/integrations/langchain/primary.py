"""Any LangChain chat model as a chunk-controlled primary (the chunk engine drives it)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, HumanMessage, SystemMessage

from supervisor.errors import ConfigError
from supervisor.primaries.chunk import Attempt, ChunkPrimary, UpstreamDelta
from supervisor.primaries.continuation import CONTINUE_INSTRUCTION, ContinuationFilter
from supervisor.primaries.hosted import upstream_faults


@dataclass
class LangChainRequest:
    """One call of the wrapped model: its messages, stop words and keyword arguments (tools, ...)."""

    messages: list[BaseMessage]
    stop: list[str] | None
    kwargs: dict[str, Any]
    tool_call_chunks: list[Any] = field(default_factory=list)
    response_metadata: dict[str, Any] = field(default_factory=dict)


#: LangGraph's ``TAG_NOSTREAM``: a run with this tag is left out of ``stream_mode="messages"``.
NOSTREAM_TAG = "nostream"


def thread_conversation(messages: Sequence[BaseMessage]) -> list[dict[str, Any]]:
    """A thread's messages as the conversation the supervisor measures (role and text of each)."""
    roles = {"human": "user", "ai": "assistant", "system": "system", "tool": "tool"}
    return [{"role": roles.get(m.type, m.type), "content": m.text if isinstance(m.text, str) else str(m.text)}
            for m in messages]


def unstreamed(model: BaseChatModel) -> BaseChatModel:
    """A copy of ``model`` whose runs LangGraph does not stream: its raw deltas are unchecked text, and only
    the supervised model's released text may reach a graph's message stream."""
    tags = list(model.tags or [])
    return model if NOSTREAM_TAG in tags else model.model_copy(update={"tags": [*tags, NOSTREAM_TAG]})


def _is_chat_openai(model: Any) -> bool:
    return type(model).__name__ in ("ChatOpenAI", "AzureChatOpenAI") and hasattr(model, "root_client")


LangChainContinuation = Literal["instruction", "vllm"]


class LangChainPrimary(ChunkPrimary):
    """Any LangChain chat model as a chunk-controlled primary (logit_bias and the model's tokenizer when it is
    ``ChatOpenAI``). ``continuation``: ``"instruction"`` (any model) asks the model to continue the checked
    prefix; ``"vllm"`` (``ChatOpenAI`` in front of vLLM) sends the prefix as a trailing assistant message with
    vLLM's ``continue_final_message``, so the answer resumes exactly after it."""

    def __init__(self, model: BaseChatModel, continuation: LangChainContinuation = "instruction") -> None:
        if continuation not in ("instruction", "vllm"):
            raise ConfigError(f"continuation={continuation!r} is not known; accepted: instruction, vllm")
        if continuation == "vllm" and not _is_chat_openai(model):
            raise ConfigError(f"continuation='vllm' needs a ChatOpenAI pointed at a vLLM server, got "
                              f"{type(model).__name__}")
        self.model = unstreamed(model)
        self.continuation: LangChainContinuation = continuation
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
        kwargs = dict(request.kwargs)
        if attempt.prefix and self.continuation == "vllm":
            messages.append(AIMessage(content=attempt.prefix))
            extra = {**(getattr(self.model, "extra_body", None) or {}), **(kwargs.get("extra_body") or {})}
            kwargs["extra_body"] = {**extra, "continue_final_message": True, "add_generation_prompt": False}
        elif attempt.prefix:
            messages += [AIMessage(content=attempt.prefix), HumanMessage(content=CONTINUE_INSTRUCTION)]
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

    def _reader(self, request: Any, attempt: Attempt) -> tuple[Any, _Reader]:
        assert isinstance(request, LangChainRequest)
        request.tool_call_chunks.clear()
        messages, kwargs = self._call(request, attempt)
        continuation = ContinuationFilter(attempt.prefix, active=self.continuation == "instruction")
        return (messages, kwargs), _Reader(self, request, continuation)

    @contextmanager
    def open(self, request: Any, attempt: Attempt) -> Iterator[Iterator[UpstreamDelta]]:
        (messages, kwargs), reader = self._reader(request, attempt)
        chunks = self.model.stream(messages, stop=request.stop, **kwargs)

        def deltas() -> Iterator[UpstreamDelta]:
            with upstream_faults():
                for chunk in chunks:
                    yield reader.read(chunk)
            yield from reader.end()

        try:
            yield deltas()
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()

    @asynccontextmanager
    async def aopen(self, request: Any, attempt: Attempt) -> AsyncIterator[AsyncIterator[UpstreamDelta]]:
        (messages, kwargs), reader = self._reader(request, attempt)
        chunks = self.model.astream(messages, stop=request.stop, **kwargs)

        async def deltas() -> AsyncIterator[UpstreamDelta]:
            with upstream_faults():
                async for chunk in chunks:
                    yield reader.read(chunk)
            for end in reader.end():
                yield end

        try:
            yield deltas()
        finally:
            await chunks.aclose()  # type: ignore[attr-defined]


class _Reader:
    """One attempt's LangChain stream as the engine sees it: chunks through the continuation filter; at the end,
    the filter's remainder (a LangChain stream simply ends: a normal finish unless the model said otherwise)."""

    def __init__(self, primary: LangChainPrimary, request: LangChainRequest, continuation: ContinuationFilter,
                 ) -> None:
        self.primary, self.request, self.continuation = primary, request, continuation
        self.finished = False

    def read(self, chunk: Any) -> UpstreamDelta:
        delta = self.continuation.apply(self.primary._delta(chunk, self.request))
        self.finished = self.finished or delta.finish_reason is not None
        return delta

    def end(self) -> Iterator[UpstreamDelta]:
        end = self.continuation.flush(finish_reason=None if self.finished else "stop")
        if end is not None:
            yield end
