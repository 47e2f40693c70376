"""A chain step that releases a model's streamed text only once checked."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Generator, Iterator
from pathlib import Path
from typing import Any

from langchain_core.messages import BaseMessage
from langchain_core.runnables import RunnableGenerator

from supervisor.errors import InputError
from supervisor.events import EventObserver
from supervisor.policy import Policy
from supervisor.scorers import Scorer, get_scorer
from supervisor.stream_check import StreamCheck


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

    def check() -> StreamCheck:
        return StreamCheck(watch_scorer, policy, on_event=on_event)

    def transform(chunks: Iterator[Any]) -> Generator[str, None, None]:
        stream = check()
        for chunk in chunks:
            checked = stream.feed(_chunk_text(chunk))
            if checked.text:
                yield checked.text
            if checked.stopped:
                return
        if tail := stream.end().text:
            yield tail

    async def atransform(chunks: AsyncIterator[Any]) -> AsyncGenerator[str, None]:
        stream = check()
        async for chunk in chunks:
            checked = await stream.afeed(_chunk_text(chunk))
            if checked.text:
                yield checked.text
            if checked.stopped:
                return
        if tail := (await stream.aend()).text:
            yield tail

    return RunnableGenerator(transform, atransform, name="supervised_stream_filter")


def _chunk_text(chunk: Any) -> str:
    if isinstance(chunk, str):
        return chunk
    if isinstance(chunk, BaseMessage):
        return chunk.text if isinstance(chunk.text, str) else str(chunk.text)
    raise InputError(f"supervised_stream_filter takes strings or message chunks, got {type(chunk).__name__}")
