"""The trajectory's moral state, estimated by a filter over the measurements at checkpoints.

A Holt (level + trend) filter per category: the level follows the measured risk, the trend its
change between checkpoints, and the forecast extrapolates both a short horizon ahead. The filter
state is stored per checkpoint so that a rollback restores exactly the state at its target.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from supervisor.assessment import CATEGORIES, Assessment
from supervisor.events import EventKind, InterventionEvent, TriggerWindow
from supervisor.policy import Policy


@dataclass(frozen=True)
class Checkpoint:
    """A token position in the response at which the trajectory was measured."""

    index: int
    position: int
    measured: dict[str, float]
    risk: float
    safe: bool = False
    #: The text before this was measured (the windows end at the last whole word: the word in progress at
    #: ``position`` waits for the next checkpoint); None: all of it, up to ``position``.
    measured_to: int | None = None

    @property
    def passed_to(self) -> int:
        """How far a pass of this checkpoint vouches for the response: releases and rollbacks go no further."""
        return self.position if self.measured_to is None else self.measured_to


@dataclass(frozen=True)
class MoralState:
    """What the supervisor believes about the trajectory after the latest checkpoint."""

    checkpoint: Checkpoint
    measured: dict[str, float]
    level: dict[str, float]
    trend: dict[str, float]
    forecast: dict[str, float]
    peak: float
    last_safe: Checkpoint
    full_measured: dict[str, float] | None = None

    @property
    def risk(self) -> float:
        return max(self.measured.values(), default=0.0)

    @property
    def forecast_risk(self) -> float:
        return max(self.forecast.values(), default=0.0)

    @property
    def top_category(self) -> str | None:
        if not self.measured:
            return None
        return max(self.measured, key=lambda name: self.measured[name])


@dataclass
class _FilterState:
    level: dict[str, float] = field(default_factory=dict)
    trend: dict[str, float] = field(default_factory=dict)
    peak: float = 0.0


def per_category(assessment: Assessment) -> dict[str, float]:
    values = {name: assessment.categories.get(name, 0.0) for name in CATEGORIES}
    # A scorer that reports only an overall risk still drives the generic category.
    values["toxicity"] = max(values["toxicity"], assessment.risk if not assessment.categories else 0.0)
    return values


class StateEstimator:
    """Turns successive measurements into a :class:`MoralState`; supports exact rollback."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.prior: dict[str, float] = {}  # the floor of the initial level per category (the conversation's)
        origin = Checkpoint(index=0, position=0, measured={}, risk=0.0, safe=True)
        self._checkpoints: list[Checkpoint] = [origin]
        self._filters: list[_FilterState] = [_FilterState()]

    @property
    def checkpoints(self) -> list[Checkpoint]:
        return list(self._checkpoints)

    @property
    def latest(self) -> Checkpoint:
        """The last checkpoint (without copying the list: asked for at every step)."""
        return self._checkpoints[-1]

    @property
    def last_safe(self) -> Checkpoint:
        return next(cp for cp in reversed(self._checkpoints) if cp.safe)

    def safe_positions(self) -> list[int]:
        return [cp.passed_to for cp in self._checkpoints if cp.safe]

    def update(self, position: int, chunk: Assessment, full: Assessment | None = None, *,
               measured_to: int | None = None) -> MoralState:
        """Add the measurement at ``position`` (of the text before ``measured_to``, when that is less); ``full``
        is the whole-response measurement, if taken."""
        measured = per_category(chunk)
        full_measured = per_category(full) if full is not None else None
        if full_measured is not None:
            measured = {name: max(measured[name], full_measured[name]) for name in CATEGORIES}
        previous = self._filters[-1]
        alpha, beta = self.policy.smoothing, self.policy.trend_smoothing
        level: dict[str, float] = {}
        trend: dict[str, float] = {}
        forecast: dict[str, float] = {}
        for name in CATEGORIES:
            old_level = previous.level.get(name, max(measured[name], self.prior.get(name, 0.0)))
            old_trend = previous.trend.get(name, 0.0)
            new_level = alpha * measured[name] + (1 - alpha) * (old_level + old_trend)
            new_trend = beta * (new_level - old_level) + (1 - beta) * old_trend
            level[name], trend[name] = new_level, new_trend
            forecast[name] = min(1.0, max(0.0, new_level + self.policy.forecast_horizon * new_trend))
        risk = max(measured.values())
        peak = max(previous.peak, risk)
        checkpoint = Checkpoint(index=len(self._checkpoints), position=position, measured=measured, risk=risk,
                                measured_to=measured_to if measured_to is not None and measured_to < position else None)
        self._checkpoints.append(checkpoint)
        self._filters.append(_FilterState(level=level, trend=trend, peak=peak))
        return MoralState(
            checkpoint=checkpoint,
            measured=measured,
            level=level,
            trend=trend,
            forecast=forecast,
            peak=peak,
            last_safe=self.last_safe,
            full_measured=full_measured,
        )

    def filtered_risk(self) -> float:
        """The filter's risk after the latest checkpoint: the larger of level and forecast, over categories (0 before
        any measurement)."""
        latest = self._filters[-1]
        horizon = self.policy.forecast_horizon
        return max(
            (max(level, min(1.0, level + horizon * latest.trend.get(name, 0.0))) for name, level in latest.level.items()),
            default=max(self.prior.values(), default=0.0),
        )

    def mark_safe(self) -> Checkpoint:
        """The controller let the latest checkpoint pass."""
        latest = self._checkpoints[-1]
        passed = Checkpoint(latest.index, latest.position, latest.measured, latest.risk, safe=True,
                            measured_to=latest.measured_to)
        self._checkpoints[-1] = passed
        return passed

    def rollback(self, position: int) -> None:
        """Forget every checkpoint after ``position`` (and the one just measured, if unsafe)."""
        while len(self._checkpoints) > 1 and (
            self._checkpoints[-1].position > position or not self._checkpoints[-1].safe
        ):
            self._checkpoints.pop()
            self._filters.pop()


def intervention_event(
    kind: EventKind,
    state: MoralState | None,
    window: TriggerWindow,
    *,
    position: int,
    checkpoint: int,
    removed_text: str,
    detail: str,
    time_s: float,
) -> InterventionEvent:
    """The event of an action, with what the state said when it was taken (``state`` None: no
    measurement triggered it, e.g. a scorer or upstream failure; ``checkpoint`` is then the count so far)."""
    return InterventionEvent(
        kind=kind,
        position=position,
        checkpoint=state.checkpoint.index if state else checkpoint,
        risk=round(state.risk, 4) if state else 0.0,
        category=state.top_category if state else None,
        forecast=round(state.forecast_risk, 4) if state else None,
        window=window,
        removed_text=removed_text,
        detail=detail,
        time_s=round(time_s, 4),
    )
