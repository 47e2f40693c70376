"""The chunk-controlled primary: what a hosted backend must offer the chunk engine.

The engine reads a stream of text deltas, can abort it, and can start a new request (an
:class:`Attempt`) that continues the answer after a checked prefix, with ``logit_bias`` where the
API has it. Positions in a hosted response are character offsets (``char_offset``).
"""

from __future__ import annotations

import asyncio
import re
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from dataclasses import dataclass, replace
from typing import Any, Literal

AttemptReason = Literal["start", "rollback", "reprompt", "retry", "candidate", "continue"]
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
    candidates: int = 1
    candidate: int = 0  # which of ``candidates`` this request is (a seed, where the request has one, is offset by it)


@dataclass(frozen=True)
class Candidate:
    """One candidate continuation of a block (best-of-K after a rollback): its text, how its request ended, and the
    usage the server reported."""

    text: str
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


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

    # -- best-of-K ------------------------------------------------------------------------------
    def candidates(self, request: Any, attempt: Attempt) -> list[Candidate]:
        """``attempt.candidates`` continuations of one block (``attempt.max_tokens``) for ``attempt``, requested in
        parallel (one stream each). A fault in any of them is raised (as :class:`UpstreamFault`)."""
        attempts = [replace(attempt, candidate=i) for i in range(attempt.candidates)]
        with ThreadPoolExecutor(max_workers=attempt.candidates, thread_name_prefix="supervisor-candidate") as pool:
            return list(pool.map(lambda one: self._read_candidate(request, one), attempts))

    async def acandidates(self, request: Any, attempt: Attempt) -> list[Candidate]:
        """Async twin of :meth:`candidates` (concurrent streams)."""
        return list(await asyncio.gather(*(
            self._aread_candidate(request, replace(attempt, candidate=i)) for i in range(attempt.candidates))))

    def _read_candidate(self, request: Any, attempt: Attempt) -> Candidate:
        collected = _Collected()
        with self.open(request, attempt) as upstream:
            for delta in upstream:
                collected.add(delta)
        return collected.candidate()

    async def _aread_candidate(self, request: Any, attempt: Attempt) -> Candidate:
        collected = _Collected()
        async with self.aopen(request, attempt) as upstream:
            async for delta in upstream:
                collected.add(delta)
        return collected.candidate()


class _Collected:
    def __init__(self) -> None:
        self.text = ""
        self.finish: str | None = None
        self.prompt: int | None = None
        self.completion: int | None = None

    def add(self, delta: UpstreamDelta) -> None:
        self.text += delta.text
        self.finish = delta.finish_reason or self.finish
        self.prompt = delta.prompt_tokens if delta.prompt_tokens is not None else self.prompt
        self.completion = delta.completion_tokens if delta.completion_tokens is not None else self.completion

    def candidate(self) -> Candidate:
        return Candidate(self.text, self.finish, self.prompt, self.completion)
