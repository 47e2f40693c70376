"""What the supervised OpenAI resources share: the client's settings, the pass-through of everything else, and the
streams' sync and async drivers (siblings over one :class:`StreamParts` per API, as httpx's ``Client`` and
``AsyncClient`` are siblings over ``BaseClient``)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, AsyncIterator, Generator, Iterator
from typing import Any

from typing_extensions import Self

from supervisor.chunk_engine import ChunkEngine
from supervisor.errors import InputError
from supervisor.events import EventObserver, GenerationResult
from supervisor.policy import Policy
from supervisor.scorers import Scorer


class Settings:
    def __init__(self, scorer: Scorer, policy: Policy, on_event: EventObserver | None) -> None:
        self.scorer = scorer
        self.policy = policy
        self.on_event = on_event


class Passthrough:
    """Every attribute not defined here comes from the wrapped object."""

    def __init__(self, target: Any) -> None:
        self._target = target

    def __getattr__(self, name: str) -> Any:
        return getattr(self._target, name)


UNSUPERVISED_GENERATION = ("parse", "stream", "with_raw_response", "with_streaming_response")


class GuardedResource(Passthrough):
    """A generating resource: its other ways to generate would bypass supervision, so they are refused."""

    def __getattr__(self, name: str) -> Any:
        if name in UNSUPERVISED_GENERATION:
            raise InputError(
                f"{name} is not supervised by llm-supervisor (it would return unchecked text); use create(...) "
                "(stream=True for streaming), or call it on client.unwrapped knowingly"
            )
        return getattr(self._target, name)


class StreamParts(ABC):
    """One API's supervised stream, apart from its I/O: the engine, and how released text becomes that API's
    objects (chat chunks, Responses events). :class:`SyncStream` and :class:`AsyncStream` drive it."""

    def __init__(self, session: ChunkEngine) -> None:
        self.session = session

    @abstractmethod
    def on_text(self, text: str) -> list[Any]:
        """The objects that carry one piece of released text."""

    @abstractmethod
    def closing(self) -> list[Any]:
        """The objects that end the stream (the session's result is set)."""

    @property
    def events(self) -> list[Any]:
        return self.session.events

    @property
    def supervision(self) -> GenerationResult | None:
        return self.session.result


class SyncStream:
    """Iterates an API's objects carrying released text only; closes the upstream on ``close()`` or when a
    ``with`` block ends. ``events`` grows live; ``supervision`` is set at the end."""

    def __init__(self, parts: StreamParts, texts: Generator[str, None, None]) -> None:
        self._parts = parts
        self._texts = texts
        self._items = self._generate()

    def _generate(self) -> Generator[Any, None, None]:
        for text in self._texts:
            yield from self._parts.on_text(text)
        yield from self._parts.closing()

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        return next(self._items)

    def close(self) -> None:
        self._items.close()
        self._texts.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def events(self) -> list[Any]:
        return self._parts.events

    @property
    def supervision(self) -> GenerationResult | None:
        return self._parts.supervision


class AsyncStream:
    """The async sibling of :class:`SyncStream` (``async for``, ``await close()``, ``async with``)."""

    def __init__(self, parts: StreamParts, texts: AsyncGenerator[str, None]) -> None:
        self._parts = parts
        self._texts = texts
        self._items = self._generate()

    async def _generate(self) -> AsyncGenerator[Any, None]:
        async for text in self._texts:
            for item in self._parts.on_text(text):
                yield item
        for item in self._parts.closing():
            yield item

    def __aiter__(self) -> AsyncIterator[Any]:
        return self

    async def __anext__(self) -> Any:
        return await self._items.__anext__()

    async def close(self) -> None:
        await self._items.aclose()
        await self._texts.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def events(self) -> list[Any]:
        return self._parts.events

    @property
    def supervision(self) -> GenerationResult | None:
        return self._parts.supervision
