"""Chat templates rendered client-side (the ``completions`` continuation): from a GGUF file or a Jinja string."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from supervisor.errors import ConfigError, MissingDependencyError

ChatTemplate = Callable[[Sequence[Mapping[str, str]]], str]


def chat_template_from_gguf(path: str | Path) -> ChatTemplate:
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
                        ) -> ChatTemplate:
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
