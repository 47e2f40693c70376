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
    return prompt


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
