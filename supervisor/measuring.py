"""Measuring for the engines' drivers: a scorer call within the policy's timeout, counted in the core's usage."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from supervisor.assessment import Assessment
from supervisor.core import SupervisionCore
from supervisor.errors import ScorerError
from supervisor.scorers.base import Scorer, aassess_checked, assess_checked


def measure(core: SupervisionCore, scorer: Scorer, inputs: Sequence[Any],
            method: Callable[[list[Any]], list[Assessment]] | None = None) -> list[Assessment] | ScorerError:
    """Score ``inputs`` (texts, or whatever ``method`` takes) within the policy's timeout, counting the call
    in the core's usage and timings; a failure comes back as the :class:`ScorerError` it stands for."""
    started = time.perf_counter()
    try:
        return assess_checked(scorer, inputs, core.policy.scorer_timeout_s, method)
    except ScorerError as exc:
        return exc
    finally:
        core.count_scorer_call(len(inputs), time.perf_counter() - started)


async def ameasure(core: SupervisionCore, scorer: Scorer, texts: Sequence[str]) -> list[Assessment] | ScorerError:
    """Async twin of :func:`measure` (the scorer's ``aassess``)."""
    started = time.perf_counter()
    try:
        return await aassess_checked(scorer, texts, core.policy.scorer_timeout_s)
    except ScorerError as exc:
        return exc
    finally:
        core.count_scorer_call(len(texts), time.perf_counter() - started)
