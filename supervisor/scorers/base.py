"""The scorer protocol: the supervisor model, ``assess(texts) -> list[Assessment]``, batched."""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

from supervisor.assessment import Assessment
from supervisor.errors import ScorerError


@runtime_checkable
class Scorer(Protocol):
    """Anything that measures texts. Implementations must be thread-safe."""

    name: str

    def assess(self, texts: Sequence[str]) -> list[Assessment]: ...

    async def aassess(self, texts: Sequence[str]) -> list[Assessment]: ...


class BaseScorer:
    """Convenience base: subclasses implement ``assess``; ``aassess`` runs it in a worker thread."""

    name: str = "scorer"

    def assess(self, texts: Sequence[str]) -> list[Assessment]:
        raise NotImplementedError

    async def aassess(self, texts: Sequence[str]) -> list[Assessment]:
        return await asyncio.to_thread(self.assess, texts)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


_timeout_pool = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="supervisor-scorer")


def assess_checked(
    scorer: Scorer,
    texts: Sequence[Any],
    timeout_s: float | None,
    method: Callable[[list[Any]], list[Assessment]] | None = None,
) -> list[Assessment]:
    """Call the scorer (``method`` instead of ``scorer.assess`` when given, e.g. ``assess_hidden``),
    turning exceptions, timeouts and malformed answers into :class:`ScorerError`."""
    call = method or scorer.assess
    try:
        if timeout_s is None:
            result = call(list(texts))
        else:
            result = _timeout_pool.submit(call, list(texts)).result(timeout=timeout_s)
    except concurrent.futures.TimeoutError as exc:
        raise ScorerError(f"scorer {scorer.name!r} did not answer within {timeout_s} s") from exc
    except ScorerError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure of a user-supplied scorer is reported the same way
        raise ScorerError(f"scorer {scorer.name!r} raised {type(exc).__name__}: {exc}") from exc
    return _checked_result(scorer, texts, result)


def _checked_result(scorer: Scorer, texts: Sequence[Any], result: Any) -> list[Assessment]:
    if not isinstance(result, list) or len(result) != len(texts) or not all(
        isinstance(item, Assessment) for item in result
    ):
        raise ScorerError(
            f"scorer {scorer.name!r} must return a list of {len(texts)} Assessment objects, got {result!r:.200}"
        )
    return result


async def aassess_checked(scorer: Scorer, texts: Sequence[str], timeout_s: float | None) -> list[Assessment]:
    """Async twin of :func:`assess_checked` (uses the scorer's ``aassess``)."""
    try:
        result = await asyncio.wait_for(scorer.aassess(list(texts)), timeout=timeout_s)
    except asyncio.TimeoutError as exc:
        raise ScorerError(f"scorer {scorer.name!r} did not answer within {timeout_s} s") from exc
    except ScorerError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure of a user-supplied scorer is reported the same way
        raise ScorerError(f"scorer {scorer.name!r} raised {type(exc).__name__}: {exc}") from exc
    return _checked_result(scorer, texts, result)
