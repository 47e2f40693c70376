"""A chain step that releases a model's streamed text only once checked."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Generator, Iterator
from pathlib import Path
from typing import Any

from langchain_core.messages import BaseMessage
from langchain_core.runnables import RunnableGenerator
from supervisor.integrations.langchain.callbacks import observe_only

from supervisor.chunk_drivers import asettle, settle
from supervisor.chunk_session import UNLIMITED_TOKENS, ChunkSession
from supervisor.errors import InputError
from supervisor.events import EventObserver
from supervisor.policy import Policy, as_policy
from supervisor.primaries.chunk import UpstreamDelta
from supervisor.scorers import Scorer, get_scorer


def supervised_stream_filter(
    scorer: str | Scorer | None = None,
    policy: Policy | str | Path | dict[str, Any] | None = None,
    *,
    on_event: EventObserver | None = None,
) -> RunnableGenerator:
    """A chain step (``model | supervised_stream_filter() | ...``) that releases text only once checked and,
    as it cannot regenerate, ends the stream with the policy's halt message on an unsafe state.
    Input: strings or message chunks; output: strings."""
    watch_scorer = get_scorer(scorer)
    checked_policy = observe_only(as_policy(policy))

    def session() -> ChunkSession:
        s = ChunkSession(checked_policy, max_tokens=UNLIMITED_TOKENS, observers=[on_event] if on_event else [])
        s.begin()
        return s

    def transform(chunks: Iterator[Any]) -> Generator[str, None, None]:
        s = session()
        for chunk in chunks:
            step = settle(s, s.feed(UpstreamDelta(text=_chunk_text(chunk))), watch_scorer)
            if step.released:
                yield step.released
            if step.done:
                return
        step = settle(s, s.end(), watch_scorer)
        if step.released:
            yield step.released

    async def atransform(chunks: AsyncIterator[Any]) -> AsyncGenerator[str, None]:
        s = session()
        async for chunk in chunks:
            step = await asettle(s, s.feed(UpstreamDelta(text=_chunk_text(chunk))), watch_scorer)
            if step.released:
                yield step.released
            if step.done:
                return
        step = await asettle(s, s.end(), watch_scorer)
        if step.released:
            yield step.released

    return RunnableGenerator(transform, atransform, name="supervised_stream_filter")


def _chunk_text(chunk: Any) -> str:
    if isinstance(chunk, str):
        return chunk
    if isinstance(chunk, BaseMessage):
        return chunk.text if isinstance(chunk.text, str) else str(chunk.text)
    raise InputError(f"supervised_stream_filter takes strings or message chunks, got {type(chunk).__name__}")
