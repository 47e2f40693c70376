"""Validation of chat messages and generation arguments, with errors that name the field."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal, TypedDict, TypeVar, cast

from supervisor.errors import InputError

Role = Literal["system", "user", "assistant"]
ROLES: tuple[str, ...] = ("system", "user", "assistant")
MAX_TOKENS_LIMIT = 32_768
_M = TypeVar("_M", bound=Mapping[str, Any])


class Message(TypedDict):
    role: Role
    content: str


def validate_messages(messages: Any) -> list[Message]:
    """Accept a non-empty sequence of ``{"role": ..., "content": ...}`` mappings."""
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence):
        raise InputError(
            f"messages must be a list of {{'role': ..., 'content': ...}} dicts, got {type(messages).__name__}; "
            "pass a string as prompt= for completion mode"
        )
    if not messages:
        raise InputError("messages is empty; give at least one {'role': 'user', 'content': ...} message")
    clean: list[Message] = []
    for index, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise InputError(f"messages[{index}] must be a dict with 'role' and 'content', got {type(message).__name__}")
        role = message.get("role")
        if role not in ROLES:
            raise InputError(f"messages[{index}].role is {role!r}; accepted roles: {', '.join(ROLES)}")
        content = message.get("content")
        if not isinstance(content, str):
            raise InputError(
                f"messages[{index}].content must be a string, got {type(content).__name__} "
                "(multimodal content parts are not supported by local primaries)"
            )
        check_unicode(content, f"messages[{index}].content")
        clean.append({"role": role, "content": content})
    if clean[-1]["role"] == "assistant":
        raise InputError(
            "messages ends with an assistant message; the last message must be from the user or system "
            "(to continue a text, use completion mode with prompt=)"
        )
    return clean


def validate_prompt(prompt: Any) -> str:
    if not isinstance(prompt, str):
        raise InputError(f"prompt must be a string, got {type(prompt).__name__}")
    if not prompt:
        raise InputError("prompt is empty; completion mode needs text to continue")
    return check_unicode(prompt, "prompt")


def check_unicode(text: str, where: str) -> str:
    """``text`` unchanged when it can be encoded as UTF-8 (no lone surrogate); else an InputError."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InputError(
            f"{where} holds a lone surrogate ({text[exc.start]!r} at character {exc.start}), which is not valid "
            "Unicode text; accepted: text that encodes as UTF-8"
        ) from None
    return text


def decode_utf8(data: bytes, source: str) -> str:
    """``data`` decoded as UTF-8 (a byte-order mark is dropped), or an InputError naming ``source``."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise InputError(
            f"{source} is not UTF-8 text (byte {data[exc.start]:#04x} at offset {exc.start}, line {line}); "
            "save it as UTF-8"
        ) from None


def validate_max_tokens(max_tokens: Any) -> int:
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int):
        raise InputError(f"max_tokens must be an integer, got {max_tokens!r}")
    if not 1 <= max_tokens <= MAX_TOKENS_LIMIT:
        raise InputError(f"max_tokens is {max_tokens}; accepted: 1 to {MAX_TOKENS_LIMIT}")
    return max_tokens


def with_instruction(messages: Sequence[_M], instruction: str) -> list[_M]:
    """Add a steering instruction to the leading system (or developer) message, creating a system message
    if there is none; the message's other keys are kept (OpenAI-style messages carry more than two)."""
    first = messages[0] if messages else None
    if first is not None and first.get("role") in ("system", "developer") and isinstance(first.get("content"), str):
        merged = {**first, "content": f"{first['content']}\n\n{instruction}".strip()}
        return [cast(_M, merged), *messages[1:]]
    return [cast(_M, {"role": "system", "content": instruction}), *messages]
