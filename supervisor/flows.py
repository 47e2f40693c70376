"""One flow, two drivers. A *flow* is a generator holding the logic of something that needs I/O (a supervised
stream, a check answered by the scorer): it yields what it needs (a :class:`Need`) and is sent the answer. Two thin
drivers answer the same flow, one blocking and one async, as httpx writes an auth flow once for ``Client`` and
``AsyncClient``. The drivers are generic: a caller gives one handler per kind of need (sync or async callables).

What a handler raises is thrown into the flow at the point that asked, so the flow handles faults where it asked
(an upstream that failed mid-read); a :class:`Release` is handed to whoever iterates the driver; closing a driver
closes its flow (whose ``finally`` runs) and then calls ``on_close``."""

from __future__ import annotations

import inspect
from collections.abc import AsyncGenerator, Awaitable, Callable, Generator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

_T = TypeVar("_T")


class Need:
    """Something a flow needs from its driver."""


@dataclass(frozen=True)
class Release(Need):
    """Hand ``text`` to the caller (it has been checked); the flow goes on when the caller asks for more."""

    text: str


Flow = Generator[Need, Any, _T]
Handlers = Mapping[type[Need], Callable[[Any], Any]]


def _handler(handlers: Handlers, need: Need) -> Callable[[Any], Any]:
    try:
        return handlers[type(need)]
    except KeyError:
        raise TypeError(f"no handler for {type(need).__name__} (a bug in the driver that runs this flow)") from None


def drive(flow: Flow[_T], handlers: Handlers, on_close: Callable[[], None] | None = None,
          ) -> Generator[str, None, _T]:
    """Run ``flow`` with blocking handlers: yields what it releases, returns what it returns."""
    answer: Any = None
    error: BaseException | None = None
    try:
        while True:
            try:
                need = flow.throw(error) if error is not None else flow.send(answer)
            except StopIteration as stop:
                return stop.value
            answer, error = None, None
            if isinstance(need, Release):
                yield need.text
                continue
            try:
                answer = _handler(handlers, need)(need)
            except Exception as exc:  # noqa: BLE001 - thrown into the flow, which decides
                error = exc
    finally:
        flow.close()
        if on_close is not None:
            on_close()


def finish(flow: Flow[_T], handlers: Handlers) -> _T:
    """Run a flow that releases nothing to its end (blocking); its return value."""
    runner = drive(flow, handlers)
    while True:
        try:
            next(runner)
        except StopIteration as stop:
            return stop.value


async def adrive(flow: Flow[Any], handlers: Handlers, on_close: Callable[[], Awaitable[None]] | None = None,
                 ) -> AsyncGenerator[str, None]:
    """Run ``flow`` with handlers that may be coroutines: yields what it releases (an async generator cannot return
    a value: use :func:`afinish` for flows that return one)."""
    answer: Any = None
    error: BaseException | None = None
    try:
        while True:
            try:
                need = flow.throw(error) if error is not None else flow.send(answer)
            except StopIteration:
                return
            answer, error = None, None
            if isinstance(need, Release):
                yield need.text
                continue
            try:
                answer = _handler(handlers, need)(need)
                if inspect.isawaitable(answer):
                    answer = await answer
            except Exception as exc:  # noqa: BLE001 - thrown into the flow, which decides
                error = exc
    finally:
        flow.close()
        if on_close is not None:
            await on_close()


async def afinish(flow: Flow[_T], handlers: Handlers) -> _T:
    """Async twin of :func:`finish`."""
    result: list[_T] = []

    def kept() -> Flow[None]:
        result.append((yield from flow))

    async for _ in adrive(kept(), handlers):
        pass
    return result[0]
