"""The controller: maps a MoralState to one Action along an escalation ladder with budgets."""

from __future__ import annotations

from collections.abc import Mapping

from supervisor.actions import Action, Bias, Continue, Halt, Reprompt, Rollback
from supervisor.policy import Policy
from supervisor.state import MoralState


class Controller:
    """Safe -> Continue; watch -> Bias; unsafe -> Rollback, then Reprompt, then Halt.

    A rollback goes to the last safe checkpoint. When the retry fails again at the same place,
    the next rollback goes one safe checkpoint further back, never behind ``floor`` (the released
    text, which is never retracted).
    """

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.rollbacks = 0
        self.reprompts = 0
        self._last_target: int | None = None
        self._depth = 0

    def flags(self, measured: Mapping[str, float]) -> bool:
        """Whether a measurement per category crosses its act threshold (the unsafe zone)."""
        return any(value >= self.policy.act_threshold_for(name) for name, value in measured.items())

    def zone(self, state: MoralState) -> str:
        if self.flags(state.measured):
            return "unsafe"
        if max(state.risk, state.forecast_risk) >= self.policy.watch_threshold:
            return "watch"
        return "safe"

    def steering_gain(self, risk: float) -> float:
        """The continuous steering's gain for a filtered risk: steering_gain at 0, rising linearly to
        steering_gain_max at act_threshold (and staying there above it)."""
        policy = self.policy
        share = min(1.0, max(0.0, risk / policy.act_threshold)) if policy.act_threshold > 0 else 1.0
        return policy.steering_gain + (policy.steering_gain_max - policy.steering_gain) * share

    def decide(self, state: MoralState, *, safe_positions: list[int], floor: int) -> Action:
        zone = self.zone(state)
        if zone == "safe":
            return Continue()
        if zone == "watch":
            return Bias(strength=self.policy.rerank_strength)
        target = self._rollback_target(safe_positions, floor)
        if self.rollbacks < self.policy.max_rollbacks:
            self.rollbacks += 1
            return Rollback(to_position=target)
        if self.reprompts < self.policy.max_reprompts:
            self.reprompts += 1
            return Reprompt(instruction=self.policy.reprompt_instruction, to_position=target)
        return Halt(message=self.policy.halt_message, to_position=floor)

    def _rollback_target(self, safe_positions: list[int], floor: int) -> int:
        candidates = [p for p in safe_positions if p >= floor] or [floor]
        latest = candidates[-1]
        if self._last_target is not None and latest <= self._last_target:
            self._depth += 1
        else:
            self._depth = 0
        target = candidates[max(0, len(candidates) - 1 - self._depth)]
        self._last_target = target
        return target
