"""Intervention events and the result of one supervised generation."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from pydantic import BaseModel, Field

EventKind = Literal["bias", "rollback", "reprompt", "halt", "scorer_error", "upstream_retry", "conversation"]
StopReason = Literal["stop", "length", "halt", "scorer_error", "upstream_error", "cancelled"]
TriggerWindow = Literal["chunk", "short", "full", "final", "candidates", "conversation"]
Zone = Literal["safe", "watch", "unsafe"]
ConversationAction = Literal["none", "instruction", "refuse", "halt"]


class InterventionEvent(BaseModel):
    """One action other than Continue: what was measured, what was done, what was removed."""

    kind: EventKind
    position: int = Field(description="Token position in the response at which the action applied.")
    checkpoint: int = Field(description="Index of the checkpoint whose measurement triggered it.")
    risk: float = Field(description="Measured overall risk that triggered it (0 for scorer errors).")
    category: str | None = Field(default=None, description="Category with the highest measured probability.")
    forecast: float | None = Field(default=None, description="The estimator's forecast risk at that moment.")
    window: TriggerWindow = Field(
        default="chunk", description=(
            "Which measurement triggered it: chunk (a window with context), short (a window of a few words), full "
            "(the whole response), final (the check before the end), candidates (the steering's rerank), "
            "conversation (the messages before the response)."),
    )
    removed_text: str = Field(default="", description="Generated text discarded by this action (never released).")
    detail: str = Field(default="", description="Human-readable reason (the instruction, the error, ...).")
    time_s: float = Field(description="Seconds since the generation started.")


EventObserver = Callable[[InterventionEvent], None]


class TracePoint(BaseModel):
    """One checkpoint measurement: the trajectory as the supervisor saw it."""

    position: int
    risk: float = Field(description="Measured risk (window, or whole response where larger).")
    forecast: float = Field(description="Forecast risk from the estimator's level and trend.")
    action: str = Field(description="What the controller decided: continue, bias, rollback, reprompt, halt.")
    final: bool = False


class Usage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = Field(default=0, description="Tokens of the released response.")
    generated_tokens: int = Field(default=0, description="Tokens decoded in all, discarded ones included.")
    discarded_tokens: int = 0
    scorer_calls: int = 0
    scored_texts: int = 0


class Timings(BaseModel):
    total_s: float = 0.0
    first_release_s: float | None = Field(default=None, description="Seconds until the first released text.")
    primary_s: float = Field(default=0.0, description="Seconds spent in the primary (prefill, decode, rollback).")
    scorer_s: float = Field(default=0.0, description="Seconds the scorer took, summed over its calls.")
    scorer_wait_s: float = Field(
        default=0.0,
        description="Local primaries with score_ahead: seconds decoding stood still for a check scored ahead.",
    )


class UpstreamAttempt(BaseModel):
    """One request to a hosted (chunk-controlled) primary; a supervised answer may take several."""

    index: int
    reason: Literal["start", "rollback", "reprompt", "retry", "candidate", "continue"] = Field(
        description="Why the request was made; 'candidate': one of best_of candidates after a rollback, 'continue': "
                    "the stream after the chosen candidate.")
    prefix_chars: int = Field(description="Length of the checked response text this request continued.")
    prompt_tokens: int | None = Field(default=None, description="As the server reported it (None if it did not).")
    completion_tokens: int | None = Field(
        default=None, description="As the server reported it, else counted from the stream (our tokenizer or estimate)."
    )
    logit_bias_entries: int = 0
    finish_reason: str | None = None
    error: str | None = Field(default=None, description="The upstream fault that ended this request, if any.")


class SteeringReport(BaseModel):
    """What the continuous steering did in one generation."""

    value: str = Field(default="off", description="The candidate value used (Policy.steering).")
    steps: int = Field(default=0, description="Tokens decoded under the steering.")
    moved: int = Field(default=0, description="Steps where some candidate was valued above the floor and moved down.")
    reordered: int = Field(default=0, description="Steps where the steering changed the most likely candidate.")
    mean_gain: float = Field(default=0.0, description="Average gain over the steered steps.")
    max_gain: float = 0.0
    max_value: float = Field(default=0.0, description="Highest candidate value seen (the riskiest candidate offered).")
    seconds: float = Field(default=0.0, description="Time spent valuing candidates.")

    def add(self, gain: float, moved: bool, reordered: bool, max_value: float, seconds: float) -> None:
        self.mean_gain = (self.mean_gain * self.steps + gain) / (self.steps + 1)
        self.steps += 1
        self.moved += int(moved)
        self.reordered += int(reordered)
        self.max_gain = max(self.max_gain, gain)
        self.max_value = max(self.max_value, max_value)
        self.seconds += seconds


class Turn(BaseModel):
    """One message as the supervisor measured it, and the conversation's state after it."""

    index: int = Field(description="Position of the message in the conversation.")
    role: str
    risk: float = Field(description="Measured risk of this message.")
    categories: dict[str, float] = Field(description="Measured probability per category.")
    flagged: bool = Field(description="The message itself crosses an act threshold.")
    state_risk: float = Field(description="The conversation's filtered risk after it (level and forecast).")
    zone: Zone = Field(description="The conversation's zone after it.")


class ConversationState(BaseModel):
    """Where the conversation is heading, after its last message."""

    turns: list[Turn] = Field(default_factory=list)
    risk: float = Field(default=0.0, description="Filtered risk after the last message (level and forecast).")
    peak: float = Field(default=0.0, description="Highest measured risk of any message.")
    category: str | None = Field(default=None, description="The category with the highest filtered level.")
    zone: Zone = "safe"
    level: dict[str, float] = Field(default_factory=dict, description="Filtered level per category.")
    action: ConversationAction = Field(
        default="none", description=(
            "What the response got because of it (Policy.conversation_action, applied when the zone is unsafe): "
            "none, instruction (a safety instruction in the system message), refuse (a refusal turn), halt."))

    def prior(self, weight: float) -> dict[str, float]:
        """The floor of a response's initial level per category."""
        return {name: weight * value for name, value in self.level.items()}


class GenerationResult(BaseModel):
    text: str = Field(description="The released response: exactly what stream() yielded, concatenated.")
    stop_reason: StopReason
    events: list[InterventionEvent] = Field(default_factory=list)
    trace: list[TracePoint] = Field(default_factory=list, description="Every checkpoint, in order.")
    usage: Usage = Field(default_factory=Usage)
    timings: Timings = Field(default_factory=Timings)
    error: str | None = Field(default=None, description="Why generation stopped early, when it did.")
    attempts: list[UpstreamAttempt] = Field(
        default_factory=list, description="Hosted primaries: every upstream request, in order (empty for local ones)."
    )
    steering: SteeringReport = Field(
        default_factory=SteeringReport, description="Local primaries: what the continuous steering did."
    )
    conversation: ConversationState | None = Field(
        default=None, description="The conversation the response continued, as measured before it (chat mode)."
    )

    def count(self, kind: EventKind) -> int:
        return sum(1 for event in self.events if event.kind == kind)
