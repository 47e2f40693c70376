"""MkDocs hooks for the documentation site (``hooks:`` in mkdocs.yml). Nothing here is hand-copied from the code:

- ``<!-- fields: MODULE:CLASS -->`` in a page is replaced at build time by a table of the pydantic model's fields
  (name, type, default, allowed range, description), read from ``CLASS.model_fields``, grouped by the
  ``# -- section --`` comments of the class's source where it has them. The policy reference and the gateway's
  config keys come from here, so they cannot drift from the code.
- mkdocstrings reads the source statically (griffe), from the repository root: the package is on disk as it imports.
"""

from __future__ import annotations

import importlib
import inspect
import json
import re
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

_MARKER = re.compile(r"<!--\s*fields:\s*([\w.]+):(\w+)(\s+own)?\s*-->")
_SECTION = re.compile(r"^\s*#\s*--\s*(.+?)\s*-*\s*$")
_FIELD = re.compile(r"^    (\w+)\s*:")


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    return _MARKER.sub(lambda m: fields_table(m.group(1), m.group(2), own=bool(m.group(3))), markdown)


def fields_table(module_name: str, class_name: str, *, own: bool = False) -> str:
    """The table for ``module_name.class_name``; with ``own``, only the fields its pydantic bases do not have."""
    model = getattr(importlib.import_module(module_name), class_name)
    inherited = {name for base in model.__mro__[1:] for name in getattr(base, "model_fields", {})} if own else set()
    sections = _sections(model)
    out: list[str] = []
    current: str | None = None
    for name, field in model.model_fields.items():
        if name in inherited:
            continue
        section = sections.get(name)
        if section != current or not out:
            current = section
            if out:
                out.append("")
            if section:
                out += [f"### {section[0].upper()}{section[1:]}", ""]
            out += ["| field | type | default | description |", "|---|---|---|---|"]
        bounds = _bounds(field)
        kind = _type(field.annotation) + (f" ({bounds})" if bounds else "")
        out.append(f"| `{name}` | {kind} | {_default(field)} | {_cell(field.description or '')} |")
    return "\n".join(out)


def _sections(model: type) -> dict[str, str]:
    """Field name -> the ``# -- section --`` comment above it in the class body (none where there is none)."""
    try:
        lines = inspect.getsource(model).splitlines()
    except (OSError, TypeError):
        return {}
    found: dict[str, str] = {}
    section: str | None = None
    for line in lines:
        heading = _SECTION.match(line)
        if heading:
            section = heading.group(1)
            continue
        name = _FIELD.match(line)
        if name and section and name.group(1) in model.model_fields:  # type: ignore[attr-defined]
            found[name.group(1)] = section
    return found


def _type(annotation: Any) -> str:
    text = annotation.__name__ if isinstance(annotation, type) else str(annotation)
    text = re.sub(r"\b(?:[A-Za-z_]\w*\.)+(?=[A-Za-z_])", "", text.replace("NoneType", "None"))  # typing.X, module.X
    return _code(text)


def _default(field: Any) -> str:
    """As a TOML/JSON settings file writes it (``true``, ``"lexical"``); ``None`` reads "unset"."""
    if field.is_required():
        return "required"
    value = field.get_default(call_default_factory=True)
    if value is None:
        return "unset"
    if hasattr(type(value), "model_fields"):  # a nested pydantic model: its own defaults
        return _code(f"{type(value).__name__}()")
    try:
        text = json.dumps(value, ensure_ascii=False)
    except TypeError:
        text = repr(value)
    return _code(text)


def _bounds(field: Any) -> str:
    symbols = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<", "min_length": "length >=", "max_length": "length <="}
    parts = []
    for constraint in field.metadata:
        for attr, symbol in symbols.items():
            value = getattr(constraint, attr, None)
            if value is not None:
                parts.append(f"{symbol} {value}")
    return ", ".join(parts)


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _code(text: str) -> str:
    """A code span in a table cell: a pipe inside backticks does not split the cell (and a backslash would show)."""
    return "`" + " ".join(text.split()).replace("`", "'") + "`"
