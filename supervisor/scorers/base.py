"""The scorer protocol: the supervisor model, ``assess(texts) -> list[Assessment]``, batched."""

from __future__ import annotations

import asyncio
import concurrent.futures
import math
import threading
from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

from supervisor.assessment import Assessment
from supervisor.errors import ScorerError
from supervisor.visible_text import visible


@runtime_checkable
class Scorer(Protocol):
    """Anything that measures texts. Implementations must be thread-safe."""

    name: str

    def assess(self, texts: Sequence[str]) -> list[Assessment]: ...

    async def aassess(self, texts: Sequence[str]) -> list[Assessment]: ...


@runtime_checkable
class HiddenStateScorer(Protocol):
    """A scorer that can measure a primary's own hidden states (the state probe): the logit engine hands it
    spans of the context of the primary that is generating, instead of their decoded text."""

    name: str

    def reads(self, primary: object) -> bool:
        """True when it can measure ``primary``'s context from its hidden states."""

    def assess_context(self, spans: Sequence[tuple[int, int]]) -> list[Assessment]:
        """One assessment per span of context token positions (``start:end``) of the primary it reads."""


class BaseScorer:
    """Convenience base: subclasses implement ``assess``; ``aassess`` runs it in a worker thread."""

    name: str = "scorer"

    def assess(self, texts: Sequence[str]) -> list[Assessment]:
        raise NotImplementedError

    async def aassess(self, texts: Sequence[str]) -> list[Assessment]:
        return await asyncio.wrap_future(in_own_thread(self.assess, list(texts)))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


def in_own_thread(call: Callable[[Any], Any], argument: Any) -> concurrent.futures.Future[Any]:
    """Run ``call(argument)`` in a new daemon thread. A scorer call that hangs then holds only its own
    thread: no shared pool for it to exhaust (which would make every later, healthy call time out),
    and nothing that waits for it at exit (``asyncio.run`` joins its default executor)."""
    future: concurrent.futures.Future[Any] = concurrent.futures.Future()

    def run() -> None:
        if not future.set_running_or_notify_cancel():
            return
        try:
            future.set_result(call(argument))
        except BaseException as exc:  # noqa: BLE001 - handed to whoever waits on the future
            future.set_exception(exc)

    threading.Thread(target=run, name="supervisor-scorer", daemon=True).start()
    return future


def assess_checked(
    scorer: Scorer,
    texts: Sequence[Any],
    timeout_s: float | None,
    method: Callable[[list[Any]], list[Assessment]] | None = None,
) -> list[Assessment]:
    """Call the scorer (``method`` instead of ``scorer.assess`` when given, e.g. ``assess_hidden``) on what a
    person sees of each text (:func:`~supervisor.visible_text.visible`), turning exceptions, timeouts and
    malformed answers into :class:`ScorerError`."""
    call = method or scorer.assess
    inputs = seen(texts)
    try:
        if timeout_s is None:
            result = call(inputs)
        else:
            result = in_own_thread(call, inputs).result(timeout=timeout_s)
    except ScorerError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure of a user-supplied scorer is reported the same way
        raise _scorer_error(scorer, exc, timeout_s) from exc
    return _checked_result(scorer, texts, result)


def seen(texts: Sequence[Any]) -> list[Any]:
    """What a person sees of each text; anything else a ``method`` measures (hidden-state spans) as it is."""
    return [visible(text) if isinstance(text, str) else text for text in texts]


def _checked_result(scorer: Scorer, texts: Sequence[Any], result: Any) -> list[Assessment]:
    if not isinstance(result, list) or len(result) != len(texts) or not all(
        isinstance(item, Assessment) for item in result
    ):
        raise ScorerError(
            f"scorer {scorer.name!r} must return a list of {len(texts)} Assessment objects, got {result!r:.200}"
        )
    for index, item in enumerate(result):
        # A NaN compares false with every threshold: read as a measurement, it would pass as safe.
        values = [item.risk, *item.categories.values()]
        if not all(isinstance(v, (int, float)) and math.isfinite(v) and 0.0 <= v <= 1.0 for v in values):
            raise ScorerError(
                f"scorer {scorer.name!r} returned an assessment outside [0, 1] for text {index}: {item!r:.200}"
            )
    return result


async def aassess_checked(scorer: Scorer, texts: Sequence[str], timeout_s: float | None) -> list[Assessment]:
    """Async twin of :func:`assess_checked` (uses the scorer's ``aassess``), also on the visible texts."""
    try:
        result = await asyncio.wait_for(scorer.aassess(seen(texts)), timeout=timeout_s)
    except ScorerError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure of a user-supplied scorer is reported the same way
        raise _scorer_error(scorer, exc, timeout_s) from exc
    return _checked_result(scorer, texts, result)


def _scorer_error(scorer: Scorer, exc: Exception, timeout_s: float | None) -> ScorerError:
    """Any failure of a (user-supplied) scorer, as the one error the engines handle."""
    if isinstance(exc, (concurrent.futures.TimeoutError, asyncio.TimeoutError)):
        return ScorerError(f"scorer {scorer.name!r} did not answer within {timeout_s} s")
    return ScorerError(f"scorer {scorer.name!r} raised {type(exc).__name__}: {exc}")
