"""SupervisedChatModel: a LangChain chat model whose answers are supervised (chunk control over any chat
model, full logit control over a local primary)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import aclosing, closing
from typing import Any

from langchain_core.callbacks.manager import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import LangSmithParams
from langchain_core.language_models.chat_models import BaseChatModel, agenerate_from_stream, generate_from_stream
from langchain_core.messages import AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGenerationChunk, ChatResult
from pydantic import ConfigDict, Field, PrivateAttr

from supervisor.api import Supervisor
from supervisor.chunk_drivers import arun_chunked, run_chunked
from supervisor.chunk_engine import UNLIMITED_TOKENS, ChunkEngine, chunk_engine, finish_reason
from supervisor.errors import InputError
from supervisor.events import GenerationResult
from supervisor.integrations.langchain.primary import (
    LangChainContinuation,
    LangChainPrimary,
    LangChainRequest,
    thread_conversation,
)
from supervisor.messages import Message
from supervisor.primaries.base import LogitPrimary


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
    scorer: Any = Field(default=None, description="Scorer name or object (default: the default scorer, embedding).")
    policy: Any = Field(default=None, description="Policy, dict of its fields, or path to a TOML/JSON file.")
    max_tokens: int = Field(default=256, description="Answer length for local primaries.")
    temperature: float = Field(default=0.7, description="Sampling temperature for local primaries.")
    on_event: Any = Field(default=None, description="Called with each InterventionEvent.")
    continuation: LangChainContinuation = Field(
        default="instruction",
        description="How a rolled-back answer resumes: 'instruction' (any chat model) or 'vllm' (a ChatOpenAI in "
                    "front of vLLM: exact continuation of the checked prefix with continue_final_message).",
    )

    _supervisor: Supervisor = PrivateAttr()
    _primary: LangChainPrimary | None = PrivateAttr(default=None)

    def model_post_init(self, context: Any) -> None:
        super().model_post_init(context)  # BaseLanguageModel seeds the trace metadata (lc_versions) here
        if not isinstance(self.inner, (BaseChatModel, LogitPrimary)):
            raise InputError(
                f"inner must be a LangChain BaseChatModel or a local primary from supervisor.load_primary(), "
                f"got {type(self.inner).__name__}"
            )
        observers = [self.on_event] if self.on_event else []
        self._supervisor = Supervisor(scorer=self.scorer, policy=self.policy, observers=observers)
        if isinstance(self.inner, BaseChatModel):
            self._primary = LangChainPrimary(self.inner, self.continuation)

    @property
    def _llm_type(self) -> str:
        return "supervised-chat-model"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        inner = self.inner
        return {"inner": getattr(inner, "_llm_type", None) or getattr(inner, "name", type(inner).__name__),
                "scorer": self._supervisor.scorer.name}

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        """The tracing parameters of the model that answers: a LangSmith trace names the inner model (its
        provider, model name, per-call ``model`` override, temperature, stop), not the wrapper."""
        if isinstance(self.inner, BaseChatModel):
            return self.inner._get_ls_params(stop=stop, **kwargs)
        params = super()._get_ls_params(stop=stop, **kwargs)  # a local primary: this model's temperature, max_tokens
        params["ls_model_name"] = self.inner.name
        return params

    def bind_tools(self, tools: Sequence[Any], *, tool_choice: Any = None, **kwargs: Any) -> Any:
        if not isinstance(self.inner, BaseChatModel):
            raise InputError("tools need a LangChain inner model; a local primary has no tool calling")
        bound = self.inner.bind_tools(tools, tool_choice=tool_choice, **kwargs)
        return self.bind(**bound.kwargs)  # type: ignore[attr-defined]

    # -- the stream ---------------------------------------------------------------------------------
    def _session(self, request: LangChainRequest) -> ChunkEngine:
        assert self._primary is not None
        return chunk_engine(self._primary, request, self._supervisor.policy, max_tokens=UNLIMITED_TOKENS,
                            observers=self._supervisor.observers, conversation=thread_conversation(request.messages),
                            measured_by=self._supervisor.scorer)

    def _final_chunk(self, result: GenerationResult | None, request: LangChainRequest | None) -> ChatGenerationChunk:
        metadata: dict[str, Any] = {"supervision": result.model_dump(mode="json") if result else None}
        usage = None
        tool_call_chunks: list[Any] = []
        if result is not None:
            # A halt at the final check comes after the upstream sent its tool calls: they go with the answer.
            if request is not None and result.stop_reason in ("stop", "length"):
                tool_call_chunks = list(request.tool_call_chunks)
            if request is not None:
                for key in ("model_name", "system_fingerprint"):
                    if key in request.response_metadata:
                        metadata[key] = request.response_metadata[key]
            metadata["finish_reason"] = finish_reason(result, tool_calls=bool(tool_call_chunks))
            prompt, completion = result.usage.prompt_tokens, result.usage.generated_tokens
            usage = {"input_tokens": prompt, "output_tokens": completion, "total_tokens": prompt + completion}
        message = AIMessageChunk(content="", response_metadata=metadata, usage_metadata=usage,
                                 tool_call_chunks=tool_call_chunks, chunk_position="last")
        return ChatGenerationChunk(message=message)

    def _texts(self, messages: list[BaseMessage], stop: list[str] | None, kwargs: dict[str, Any], *,
               asynchronous: bool) -> tuple[Any, Callable[[], GenerationResult | None], LangChainRequest | None]:
        """The released texts (a generator, or an async one), the report once they end, and the request."""
        if isinstance(self.inner, LogitPrimary):
            _local_arguments(stop, kwargs)
            start = self._supervisor.astream if asynchronous else self._supervisor.stream
            stream = start(self.inner, _as_messages(messages), max_tokens=kwargs.pop("max_tokens", self.max_tokens),
                           temperature=kwargs.pop("temperature", self.temperature))
            return stream, lambda: stream.result, None
        assert self._primary is not None
        request = LangChainRequest(list(messages), stop, kwargs)
        session = self._session(request)
        drive = arun_chunked if asynchronous else run_chunked
        return drive(session, self._primary, request, self._supervisor.scorer), lambda: session.result, request

    def _stream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        texts, report, request = self._texts(messages, stop, kwargs, asynchronous=False)
        with closing(texts):
            for text in texts:
                chunk = ChatGenerationChunk(message=AIMessageChunk(content=text))
                if run_manager:
                    run_manager.on_llm_new_token(text, chunk=chunk)
                yield chunk
        yield self._final_chunk(report(), request)

    async def _astream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                       run_manager: AsyncCallbackManagerForLLMRun | None = None,
                       **kwargs: Any) -> AsyncIterator[ChatGenerationChunk]:
        texts, report, request = self._texts(messages, stop, kwargs, asynchronous=True)
        async with aclosing(texts):
            async for text in texts:
                chunk = ChatGenerationChunk(message=AIMessageChunk(content=text))
                if run_manager:
                    await run_manager.on_llm_new_token(text, chunk=chunk)
                yield chunk
        yield self._final_chunk(report(), request)

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> ChatResult:
        return generate_from_stream(self._stream(messages, stop=stop, run_manager=run_manager, **kwargs))

    async def _agenerate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                         run_manager: AsyncCallbackManagerForLLMRun | None = None, **kwargs: Any) -> ChatResult:
        return await agenerate_from_stream(self._astream(messages, stop=stop, run_manager=run_manager, **kwargs))
