"""Driving the chunk engine, written once (:mod:`supervisor.flows`): :func:`chunk_flow` holds the loop over upstream
attempts (open a stream, feed its deltas to the session, have what it asks for scored, release text, restart from a
checked prefix, retry a fault after a pause) and :func:`checks_flow` answers one step's checks; the blocking drivers
(:func:`run_chunked`, :func:`answer_checks`) and the async ones (:func:`arun_chunked`, :func:`aanswer_checks`) only say how each
need is met."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Generator
from contextlib import AsyncExitStack, ExitStack
from dataclasses import dataclass
from typing import Any

from supervisor.chunk_engine import ChunkEngine, Directive
from supervisor.errors import UpstreamFault
from supervisor.flows import Flow, Need, Release, adrive, afinish, drive, finish
from supervisor.measuring import ameasure, measure
from supervisor.primaries.chunk import Attempt, ChunkPrimary
from supervisor.scorers.base import Scorer


@dataclass(frozen=True)
class Score(Need):
    """Score these texts (the answer: assessments, or the ScorerError they stand for)."""

    texts: list[str]


@dataclass(frozen=True)
class Open(Need):
    """Close the upstream request in progress, if any, and start ``attempt``'s."""

    attempt: Attempt


@dataclass(frozen=True)
class Read(Need):
    """The open upstream's next delta (None at its end)."""


@dataclass(frozen=True)
class Candidates(Need):
    """``attempt.candidates`` candidate blocks, requested in parallel (best-of-K after a rollback)."""

    attempt: Attempt


@dataclass(frozen=True)
class Pause(Need):
    """Wait before the retry of an upstream fault."""

    seconds: float


def checks_flow(session: ChunkEngine, step: Directive) -> Flow[Directive]:
    """Answer every check ``step`` asks for (and the checks their answers ask for); the released text adds up."""
    released = step.released
    while step.check is not None:
        step = session.resolve((yield Score(step.check)))
        released += step.released
    step.released = released
    return step


def opening_flow(session: ChunkEngine) -> Flow[Directive]:
    """Measure the messages before the response (one batch, only what is not cached) and start from them: the
    opening step, done with its text released when the conversation's action is a refusal or a halt."""
    if session.conversation is None:
        return Directive()
    pending = session.conversation.pending
    return session.start_from((yield Score(pending)) if pending else [])


def chunk_flow(session: ChunkEngine) -> Flow[None]:
    """One supervised generation over upstream attempts. Closing it finishes the result as cancelled."""
    try:
        opening = yield from opening_flow(session)
        if opening.released:
            yield Release(opening.released)
        if opening.done:  # answered with a refusal, or halted: no upstream request
            return
        attempt: Attempt | None = session.begin()
        while attempt is not None:
            step = Directive()
            try:
                if attempt.candidates > 1:
                    candidates = yield Candidates(attempt)
                    step = yield from checks_flow(session, session.choose(attempt, candidates))
                    if step.released:
                        yield Release(step.released)
                else:
                    yield Open(attempt)
                    while not (step.done or step.restart):
                        delta = yield Read()
                        step = yield from checks_flow(session, session.end() if delta is None else session.feed(delta))
                        if step.released:
                            yield Release(step.released)
                        if delta is None:
                            break
            except UpstreamFault as exc:
                attempt, wait = session.fault(exc)
                yield Pause(wait)
                continue
            attempt = step.restart
            if attempt is None and not step.done:
                raise RuntimeError("chunk session stopped without a result")  # a bug, never a silent end
    finally:
        session.cancel()


class _Upstream:
    """The upstream request in progress (one at a time): opening the next one closes the last."""

    def __init__(self, primary: ChunkPrimary, request: Any) -> None:
        self.primary, self.request = primary, request
        self.deltas: Any = None
        self.stack = ExitStack()
        self.astack = AsyncExitStack()

    def open(self, need: Open) -> None:
        self.close()
        self.deltas = iter(self.stack.enter_context(self.primary.open(self.request, need.attempt)))

    def read(self, need: Read) -> Any:
        return next(self.deltas, None)

    def close(self) -> None:
        self.deltas = None
        self.stack.close()

    async def aopen(self, need: Open) -> None:
        await self.aclose()
        self.deltas = await self.astack.enter_async_context(self.primary.aopen(self.request, need.attempt))

    async def aread(self, need: Read) -> Any:
        return await anext(self.deltas, None)

    async def aclose(self) -> None:
        self.deltas = None
        await self.astack.aclose()


def run_chunked(session: ChunkEngine, primary: ChunkPrimary, request: Any, scorer: Scorer,
                ) -> Generator[str, None, None]:
    """Drive ``session`` over ``primary`` (blocking): yields released text; ``session.result`` is set at the end.
    Closing the generator closes the upstream stream and finishes the result as cancelled."""
    upstream = _Upstream(primary, request)

    def candidates(need: Candidates) -> Any:
        upstream.close()
        return primary.candidates(request, need.attempt)

    def pause(need: Pause) -> None:
        upstream.close()
        time.sleep(need.seconds)

    return drive(chunk_flow(session), {
        Score: lambda need: measure(session.core, scorer, need.texts), Open: upstream.open, Read: upstream.read,
        Candidates: candidates, Pause: pause}, upstream.close)


def arun_chunked(session: ChunkEngine, primary: ChunkPrimary, request: Any, scorer: Scorer,
                 ) -> AsyncGenerator[str, None]:
    """Async driver of :func:`chunk_flow` (the upstream's async client, the scorer's ``aassess``)."""
    upstream = _Upstream(primary, request)

    async def candidates(need: Candidates) -> Any:
        await upstream.aclose()
        return await primary.acandidates(request, need.attempt)

    async def pause(need: Pause) -> None:
        await upstream.aclose()
        await asyncio.sleep(need.seconds)

    return adrive(chunk_flow(session), {
        Score: lambda need: ameasure(session.core, scorer, need.texts), Open: upstream.aopen, Read: upstream.aread,
        Candidates: candidates, Pause: pause}, upstream.aclose)


def answer_checks(session: ChunkEngine, step: Directive, scorer: Scorer) -> Directive:
    """Answer ``step``'s checks with ``scorer`` (blocking); the step with all the text they released."""
    return finish(checks_flow(session, step), {Score: lambda need: measure(session.core, scorer, need.texts)})


async def aanswer_checks(session: ChunkEngine, step: Directive, scorer: Scorer) -> Directive:
    """Async twin of :func:`answer_checks` (the scorer's ``aassess``)."""
    return await afinish(checks_flow(session, step), {Score: lambda need: ameasure(session.core, scorer, need.texts)})


def open_conversation(session: ChunkEngine, scorer: Scorer) -> Directive:
    """:func:`opening_flow` answered with ``scorer`` (blocking): for a stream the session does not drive."""
    return finish(opening_flow(session), {Score: lambda need: measure(session.core, scorer, need.texts)})


async def aopen_conversation(session: ChunkEngine, scorer: Scorer) -> Directive:
    """Async twin of :func:`open_conversation`."""
    return await afinish(opening_flow(session), {Score: lambda need: ameasure(session.core, scorer, need.texts)})
