"""Continuing a hosted answer through a chat API that has no native continuation.

The checked prefix is sent as an assistant message followed by :data:`CONTINUE_INSTRUCTION`; the
:class:`ContinuationFilter` drops the prefix when the model repeats it, and puts back the space between
the prefix and a new word.
"""

from __future__ import annotations

import dataclasses

from supervisor.primaries.chunk import UpstreamDelta

CONTINUE_INSTRUCTION = (
    "Continue your previous answer exactly where it stops, without repeating any of it and without "
    "commenting on this request."
)


class _EchoFilter:
    """Instruction continuation: drop the prefix when the model repeats it at the start of its answer."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix.strip()
        self.buffer = ""
        self.decided = not self.prefix

    def feed(self, text: str) -> str:
        if self.decided:
            return text
        self.buffer += text
        head = self.buffer.lstrip()
        if len(head) < len(self.prefix) and self.prefix.startswith(head):
            return ""
        self.decided = True
        out = head[len(self.prefix):] if head.startswith(self.prefix) else self.buffer
        return out

    def flush(self) -> str:
        if self.decided:
            return ""
        self.decided = True
        return self.buffer


class _Joiner:
    """Instruction continuation: a new answer starts a fresh word; put back the space the prefix needs."""

    def __init__(self, prefix: str) -> None:
        self.pending = bool(prefix) and not prefix[-1].isspace()

    def __call__(self, text: str) -> str:
        if not self.pending or not text:
            return text
        self.pending = False
        return " " + text.lstrip() if text[0].isalnum() else text


class ContinuationFilter:
    """Applied to the deltas of a request that continues ``prefix`` by instruction: drops the prefix when
    the model repeats it, and puts back the space between the prefix and a new word. ``active=False``
    (native continuation) passes deltas through."""

    def __init__(self, prefix: str, *, active: bool = True) -> None:
        self._echo = _EchoFilter(prefix if active else "")
        self._joiner = _Joiner(prefix if active else "")

    def apply(self, delta: UpstreamDelta) -> UpstreamDelta:
        return dataclasses.replace(delta, text=self._joiner(self._echo.feed(delta.text)))

    def flush(self, finish_reason: str | None = None) -> UpstreamDelta | None:
        """What the filter still holds at the end of the stream (with ``finish_reason``, if given)."""
        rest = self._joiner(self._echo.flush())
        return UpstreamDelta(rest, finish_reason) if rest or finish_reason else None
