"""What the gateway accepts, checked before any model runs: the body as JSON (size, nesting, Unicode), a chat
completion request as OpenAI's API types it (a wrong type is a 400 naming the parameter, as OpenAI answers), what a
route can honour, and moderation inputs.

The request model is strict (no coercion: ``"0.5"`` is not a temperature, ``true`` is not an ``n``) and closed
(an unknown parameter is refused, as OpenAI refuses it), except the names a route lets through to its upstream
(``Route.pass_through``, e.g. vLLM's ``top_k``)."""

from __future__ import annotations

import json
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from supervisor.integrations.serve.http import HTTPError

_UNION_BRANCH = re.compile(r"^([A-Z]|(str|int|float|bool|none|list|dict|literal)(\[|$))")


def parse_json(raw: bytes, *, max_depth: int) -> dict[str, Any]:
    """The body as a JSON object whose nesting is at most ``max_depth`` and whose strings are valid Unicode."""
    try:
        body = json.loads(raw or b"null")
    except RecursionError:  # nested deeper than the parser's stack: the same answer as any too-deep body
        raise HTTPError(400, f"the body is nested deeper than {max_depth} levels") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise HTTPError(400, f"the body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise HTTPError(400, "the body must be a JSON object")
    _check_tree(body, max_depth)
    return body


def _check_tree(root: Any, max_depth: int) -> None:
    pending: list[tuple[Any, str, int]] = [(root, "", 1)]
    while pending:
        value, where, depth = pending.pop()
        if depth > max_depth:
            raise HTTPError(400, f"the body is nested deeper than {max_depth} levels (at {where or 'the top'})",
                            param=where or None)
        if isinstance(value, dict):
            for key, item in value.items():
                path = f"{where}.{key}" if where else str(key)
                _check_text(key, path)
                pending.append((item, path, depth + 1))
        elif isinstance(value, list):
            pending.extend((item, f"{where}[{i}]", depth + 1) for i, item in enumerate(value))
        elif isinstance(value, str):
            _check_text(value, where)


def _check_text(text: str, where: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise HTTPError(400, f"{where or 'a key'} holds a lone surrogate at character {exc.start}, which is not "
                             "valid Unicode text; accepted: text that encodes as UTF-8", param=where or None) from None


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")


class _Open(BaseModel):
    """Parts of a request that OpenAI lets grow (messages, content parts): typed where known, extra keys kept."""

    model_config = ConfigDict(strict=True, extra="allow")


class FunctionSpec(_Strict):
    name: str = Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(_Strict):
    type: Literal["function"]
    function: FunctionSpec


class NamedFunction(_Strict):
    name: str


class NamedToolChoice(_Strict):
    type: Literal["function"]
    function: NamedFunction


class JsonSchema(_Strict):
    name: str = Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")
    description: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None


class ResponseFormat(_Strict):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchema | None = None


class StreamOptions(_Strict):
    include_usage: bool | None = None
    include_obfuscation: bool | None = None


class ContentPart(_Open):
    type: str


class ToolCallFunction(_Open):
    name: str
    arguments: str


class ToolCall(_Open):
    id: str
    type: Literal["function"]
    function: ToolCallFunction


class ChatMessage(_Open):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None

    @field_validator("content")
    @classmethod
    def _text_parts_have_text(cls, parts: Any) -> Any:
        for index, part in enumerate(parts if isinstance(parts, list) else []):
            if part.type == "text" and not isinstance((part.model_extra or {}).get("text"), str):
                raise ValueError(f"content[{index}] has type 'text' but no string 'text'")
        return parts


class ChatCompletionRequest(_Strict):
    """``POST /v1/chat/completions`` as OpenAI's API types it (the parameters a client may send)."""

    model: str = Field(min_length=1)
    messages: list[ChatMessage] = Field(min_length=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, ge=0.0, le=1.0)
    n: int | None = Field(default=None, ge=1, le=128)
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    logit_bias: dict[str, int] | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    seed: int | None = None
    user: str | None = None
    tools: list[Tool] | None = Field(default=None, max_length=128)
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None
    metadata: dict[str, str] | None = None
    store: bool | None = None
    service_tier: str | None = None
    reasoning_effort: str | None = None
    prompt_cache_key: str | None = None
    safety_identifier: str | None = None
    modalities: list[Literal["text", "audio"]] | None = None
    verbosity: str | None = None
    prompt_cache_retention: str | None = None
    audio: dict[str, Any] | None = None
    prediction: dict[str, Any] | None = None
    web_search_options: dict[str, Any] | None = None
    functions: list[dict[str, Any]] | None = None
    function_call: str | dict[str, Any] | None = None

    @field_validator("stop")
    @classmethod
    def _at_most_four_stops(cls, stop: Any) -> Any:
        if isinstance(stop, list) and len(stop) > 4:
            raise ValueError(f"at most 4 stop sequences, got {len(stop)}")
        return stop

    @field_validator("logit_bias")
    @classmethod
    def _bias_entries(cls, bias: dict[str, int] | None) -> dict[str, int] | None:
        for token, value in (bias or {}).items():
            if not token.isdigit():
                raise ValueError(f"keys are token ids (digits), got {token!r}")
            if not -100 <= value <= 100:
                raise ValueError(f"values are -100 to 100, got {value} for token {token}")
        return bias


#: Parameters a local primary cannot honour (the wrapper refuses n > 1 and logprobs for hosted models too).
LOCAL_REFUSES = ("stop", "logit_bias", "tools", "tool_choice", "parallel_tool_calls", "response_format",
                 "presence_penalty", "frequency_penalty", "audio", "prediction", "web_search_options", "functions",
                 "function_call")


def parse_chat(body: dict[str, Any], *, local: bool, pass_through: frozenset[str] = frozenset()) -> dict[str, Any]:
    """The request's parameters, validated (unknown ones in ``pass_through`` kept as sent); an :class:`HTTPError`
    400 naming the first wrong parameter otherwise."""
    typed = {key: value for key, value in body.items() if key not in pass_through}
    try:
        request = ChatCompletionRequest.model_validate(typed)
    except ValidationError as exc:
        raise _bad_request(exc) from None
    if request.n not in (None, 1):
        raise HTTPError(400, f"n={request.n} is not supported under supervision (each choice would need its own "
                             "supervised stream); make n separate requests", param="n")
    if request.logprobs or request.top_logprobs:
        raise HTTPError(400, "logprobs are not supported under supervision (discarded attempts would make them "
                             "wrong)", param="logprobs" if request.logprobs else "top_logprobs")
    if request.stream_options is not None and not request.stream:
        raise HTTPError(400, "stream_options is only allowed when stream is true", param="stream_options")
    if local:
        for name in LOCAL_REFUSES:
            value = getattr(request, name)
            if value not in (None, 0, 0.0, "none", "text") and not _plain_text_format(name, value):
                raise HTTPError(400, f"{name} is not supported with a local primary (it is honoured on upstream "
                                     "routes)", param=name)
        if request.modalities not in (None, ["text"]):
            raise HTTPError(400, "a local primary answers with text only", param="modalities")
    return body


def _plain_text_format(name: str, value: Any) -> bool:
    return name == "response_format" and isinstance(value, ResponseFormat) and value.type == "text"


def _bad_request(exc: ValidationError) -> HTTPError:
    error = exc.errors(include_url=False)[0]
    param = _param(error["loc"])
    if error["type"] == "extra_forbidden":
        if len(error["loc"]) == 1:
            return HTTPError(400, f"Unrecognized request argument supplied: {param}", param=param)
        return HTTPError(400, f"{param} is not a known field", param=param)
    if error["type"] == "missing":
        return HTTPError(400, f"Missing required parameter: '{param}'", param=param)
    got = error.get("input")
    shown = json.dumps(got)[:80] if _is_json(got) else type(got).__name__
    return HTTPError(400, f"Invalid value for '{param}': {error['msg']} (got {shown})", param=param)


def _is_json(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool, list, dict))


def _param(loc: tuple[int | str, ...]) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        elif not _UNION_BRANCH.match(part):  # pydantic names a union's branch by its type: left out
            text += f".{part}" if text else part
    return text


def moderation_texts(body: dict[str, Any], *, max_inputs: int, max_chars: int) -> list[str]:
    """The texts of a moderation request: ``input`` as a string, a list of strings, or a list of text parts."""
    source = body.get("input")
    unknown = sorted(set(body) - {"input", "model"})
    if unknown:
        raise HTTPError(400, f"Unrecognized request argument supplied: {unknown[0]}", param=unknown[0])
    if "model" in body and not isinstance(body["model"], str):
        raise HTTPError(400, "model must be a string", param="model")
    items = [source] if isinstance(source, str) else source
    if not isinstance(items, list) or not items:
        raise HTTPError(400, "input must be a string, a non-empty list of strings, or a list of text parts",
                        param="input")
    if len(items) > max_inputs:
        raise HTTPError(400, f"{len(items)} inputs; this gateway accepts at most {max_inputs} per request",
                        param="input")
    texts = []
    for index, item in enumerate(items):
        if isinstance(item, dict) and item.get("type") == "text" and isinstance(item.get("text"), str):
            item = item["text"]
        if not isinstance(item, str):
            kind = item.get("type") if isinstance(item, dict) else type(item).__name__
            raise HTTPError(400, f"input[{index}] is {kind!r}; accepted: a string or a text part (images are not "
                                 "measured by this gateway)", param=f"input[{index}]")
        texts.append(item)
    total = sum(len(text) for text in texts)
    if total > max_chars:
        raise HTTPError(400, f"{total} characters of input; this gateway accepts at most {max_chars} per request",
                        param="input")
    return texts
