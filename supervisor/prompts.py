"""Prompt sets: the bundled demo/benchmark prompts, and JSONL input files for batch generation."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from supervisor.errors import InputError
from supervisor.messages import Message, check_unicode, decode_utf8, validate_messages

Mode = Literal["chat", "completion"]


@dataclass(frozen=True)
class PromptItem:
    """One input: chat ``messages`` or a completion ``prompt``."""

    id: str
    mode: Mode
    messages: list[Message] | None = None
    prompt: str | None = None
    set: str = ""
    source: str = ""

    @property
    def text(self) -> str:
        if self.prompt is not None:
            return self.prompt
        assert self.messages is not None
        return self.messages[-1]["content"]


def json_lines(lines: Iterable[str], name: str) -> Iterator[tuple[str, Any]]:
    """``(where, value)`` for each non-blank JSON line; a line that does not parse is an InputError
    naming ``name`` and the line number."""
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{name} line {number}"
        try:
            yield where, json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"{where} is not valid JSON: {exc.msg} (column {exc.colno})") from exc


def _item(record: dict[str, Any], *, default_mode: Mode, where: str, index: int) -> PromptItem:
    item_id = str(record.get("id", index))
    mode = record.get("mode", default_mode)
    if mode not in ("chat", "completion"):
        raise InputError(f"{where}: mode is {mode!r}; accepted: chat, completion")
    if "messages" in record:
        if mode == "completion":
            raise InputError(f"{where}: 'messages' given with mode completion; give 'prompt' or 'text' instead")
        try:
            messages = validate_messages(record["messages"])
        except InputError as exc:
            raise InputError(f"{where}: {exc}") from exc
        return PromptItem(id=item_id, mode="chat", messages=messages, set=record.get("set", ""))
    text = record.get("prompt", record.get("text"))
    if not isinstance(text, str) or not text:
        raise InputError(f"{where}: needs a non-empty 'prompt' or 'text' string, or a 'messages' list")
    check_unicode(text, where)
    if mode == "chat":
        return PromptItem(
            id=item_id, mode="chat", messages=[{"role": "user", "content": text}],
            set=record.get("set", ""), source=record.get("source", ""),
        )
    return PromptItem(id=item_id, mode="completion", prompt=text, set=record.get("set", ""),
                      source=record.get("source", ""))


def parse_jsonl(lines: list[str], *, default_mode: Mode = "chat", name: str = "input") -> list[PromptItem]:
    """Each line: a JSON string, or an object with ``prompt``/``text`` or ``messages`` (and optional ``mode``, ``id``)."""
    items: list[PromptItem] = []
    for where, record in json_lines(lines, name):
        if isinstance(record, str):
            record = {"text": record}
        if not isinstance(record, dict):
            raise InputError(f"{where}: expected a JSON string or object, got {type(record).__name__}")
        items.append(_item(record, default_mode=default_mode, where=where, index=len(items)))
    if not items:
        raise InputError(f"{name} holds no prompts")
    return items


def read_jsonl(path: str | Path, *, default_mode: Mode = "chat") -> list[PromptItem]:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"input file {str(path)!r} does not exist")
    text = decode_utf8(path.read_bytes(), f"input file {str(path)!r}")
    return parse_jsonl(text.splitlines(), default_mode=default_mode, name=str(path))


def bundled_prompts(which: str | None = None) -> list[PromptItem]:
    """The bundled prompt set (see supervisor/data/README.md); ``which`` is demo, toxic or benign."""
    text = resources.files("supervisor").joinpath("data/prompts.jsonl").read_text(encoding="utf-8")
    items = parse_jsonl(text.splitlines(), name="bundled prompts")
    return [item for item in items if which is None or item.set == which]
