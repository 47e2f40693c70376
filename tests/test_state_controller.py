from __future__ import annotations

from supervisor import Assessment, Bias, Continue, Halt, Policy, Reprompt, Rollback
from supervisor.controller import Controller
from supervisor.state import StateEstimator


def tox(p: float) -> Assessment:
    return Assessment.from_categories({"toxicity": p})


def test_filter_tracks_trend_and_forecasts_ahead() -> None:
    estimator = StateEstimator(Policy())
    states = []
    for i, p in enumerate([0.05, 0.15, 0.25, 0.35]):
        states.append(estimator.update(8 * (i + 1), tox(p)))
        estimator.mark_safe()
    last = states[-1]
    assert last.trend["toxicity"] > 0.05
    assert last.forecast_risk > last.risk  # rising risk is forecast to keep rising
    assert last.peak == 0.35
    assert estimator.last_safe.position == 32


def test_rollback_restores_the_filter_exactly() -> None:
    estimator = StateEstimator(Policy())
    estimator.update(8, tox(0.1))
    estimator.mark_safe()
    before = estimator.update(16, tox(0.2))
    estimator.mark_safe()
    estimator.update(24, tox(0.9))  # unsafe, not marked safe
    estimator.rollback(16)
    assert estimator.safe_positions() == [0, 8, 16]
    again = estimator.update(24, tox(0.2))
    reference = StateEstimator(Policy())
    reference.update(8, tox(0.1))
    reference.mark_safe()
    reference.update(16, tox(0.2))
    reference.mark_safe()
    expected = reference.update(24, tox(0.2))
    assert again.level == expected.level and again.forecast == expected.forecast
    assert before.checkpoint.position == 16


def test_whole_response_measurement_counts() -> None:
    estimator = StateEstimator(Policy())
    state = estimator.update(32, tox(0.1), full=tox(0.8))
    assert state.risk == 0.8 and state.full_measured is not None


def test_escalation_ladder_and_budgets() -> None:
    policy = Policy(max_rollbacks=2, max_reprompts=1)
    controller = Controller(policy)
    estimator = StateEstimator(policy)
    actions = []
    for _ in range(5):
        state = estimator.update(8, tox(0.95))
        actions.append(controller.decide(state, safe_positions=estimator.safe_positions(), floor=0))
        estimator.rollback(0)
    kinds = [type(a) for a in actions]
    assert kinds == [Rollback, Rollback, Reprompt, Halt, Halt]
    assert controller.rollbacks == 2 and controller.reprompts == 1


def test_zones_and_per_category_thresholds() -> None:
    policy = Policy(watch_threshold=0.3, act_threshold=0.7, category_thresholds={"hate": 0.4})
    controller = Controller(policy)
    estimator = StateEstimator(policy)
    safe = estimator.update(8, tox(0.1))
    assert isinstance(controller.decide(safe, safe_positions=[0], floor=0), Continue)
    watch = estimator.update(16, tox(0.5))
    assert isinstance(controller.decide(watch, safe_positions=[0], floor=0), Bias)
    hate = estimator.update(24, Assessment.from_categories({"hate": 0.45}))
    assert isinstance(controller.decide(hate, safe_positions=[0], floor=0), Rollback)


def test_repeated_failure_rolls_back_further_but_never_past_the_floor() -> None:
    controller = Controller(Policy(max_rollbacks=10))
    estimator = StateEstimator(Policy())
    for position in (8, 16, 24):
        estimator.update(position, tox(0.0))
        estimator.mark_safe()
    targets = []
    for _ in range(4):
        state = estimator.update(32, tox(0.99))
        action = controller.decide(state, safe_positions=estimator.safe_positions(), floor=8)
        assert isinstance(action, Rollback)
        targets.append(action.to_position)
        estimator.rollback(action.to_position)
    assert targets == [24, 16, 8, 8]
