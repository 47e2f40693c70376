"""The chunk-controlled primary: what a hosted backend must offer the chunk engine.

The engine reads a stream of text deltas, can abort it, and can start a new request (an
:class:`Attempt`) that continues the answer after a checked prefix, with ``logit_bias`` where the
API has it. Positions in a hosted response are character offsets (``char_offset``).
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from dataclasses import dataclass
from typing import Any, Literal

AttemptReason = Literal["start", "rollback", "reprompt", "retry"]
_ESTIMATE_PIECE = re.compile(r"\w+|[^\w\s]")


def estimate_tokens(text: str) -> int:
    """Rough token count for primaries without a local tokenizer: words and punctuation marks."""
    return len(_ESTIMATE_PIECE.findall(text))


@dataclass(frozen=True)
class Attempt:
    """One upstream request: continue the assistant's answer after ``prefix`` (checked text)."""

    index: int
    reason: AttemptReason
    prefix: str
    instruction: str | None
    logit_bias: dict[int, int]
    max_tokens: int
    temperature_boost: float


@dataclass(frozen=True)
class UpstreamDelta:
    """One piece of an upstream stream: text and/or the finish reason and usage, plus the raw event."""

    text: str = ""
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    raw: Any = None


class ChunkPrimary(ABC):
    """A model behind a streaming text API: the engine can read, abort, and start again."""

    name: str = "chunk-primary"

    def tokenizer(self, request: Any) -> Callable[[str], list[int]] | None:
        """The model's tokenizer for ``request`` (token ids for logit_bias), or None when it has none."""
        return None

    def token_counter(self, request: Any) -> Callable[[str], int]:
        """How to count response tokens (checkpoint cadence, max_tokens left): an estimate by default."""
        return estimate_tokens

    @abstractmethod
    def open(self, request: Any, attempt: Attempt) -> AbstractContextManager[Iterator[UpstreamDelta]]:
        """Start the upstream request for ``attempt``; leaving the context closes it."""

    @abstractmethod
    def aopen(self, request: Any, attempt: Attempt) -> AbstractAsyncContextManager[AsyncIterator[UpstreamDelta]]:
        """Async twin of :meth:`open`."""
