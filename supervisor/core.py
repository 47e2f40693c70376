"""The supervision core: cadence, windows, the moral state, decisions, release and events, written once.

ARCHITECTURE.md, "One core, two engines". The core is sans-IO: it never decodes, streams or scores. An
engine holds the response as a :class:`Trajectory` and produces it: the logit engine
(:mod:`supervisor.logit_engine`) token by token on a local primary, the chunk engine
(:mod:`supervisor.chunk_engine`) from a hosted stream. After the response grows, the engine asks
:meth:`SupervisionCore.due` whether a check is due, has the :class:`Check`'s spans measured, and hands
the outcome to :meth:`SupervisionCore.resolve`, which answers with a :class:`Decision`: text released,
or go back to a position and regenerate (rollback, re-prompt), or the generation is over.

Positions are in the engine's own unit (``token_position`` in the logit engine, ``char_offset`` in the
chunk engine); the trajectory maps them to token counts, which drive the cadence and the windows.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from supervisor.actions import Action, Bias, Continue, Halt, Reprompt, Rollback
from supervisor.assessment import Assessment
from supervisor.controller import Controller
from supervisor.errors import ScorerError
from supervisor.events import (
    ConversationState,
    EventKind,
    EventObserver,
    GenerationResult,
    InterventionEvent,
    SteeringReport,
    StopReason,
    Timings,
    TracePoint,
    TriggerWindow,
    UpstreamAttempt,
    Usage,
)
from supervisor.holdback import Holdback
from supervisor.policy import Policy
from supervisor.state import MoralState, StateEstimator, intervention_event

Span = tuple[int, int]

#: Tokens of text without whitespace held back, at most, before it is released anyway (no word boundary comes).
UNSPACED_RELEASE_TOKENS = 32


class Trajectory(Protocol):
    """The response as an engine holds it, in the engine's position unit."""

    @property
    def end(self) -> int:
        """Position of the end of the response."""

    def text(self, start: int, end: int) -> str:
        """The response text between two positions."""

    def tokens_at(self, position: int) -> int:
        """Tokens of the response before ``position``."""

    def checkpoints_after(self, position: int, every: int) -> list[int]:
        """Positions after ``position`` spaced at least ``every`` tokens apart, the first ``every`` after it."""

    def window_start(self, end: int, tokens: int) -> int:
        """The latest position at least ``tokens`` tokens before ``end`` (0 when there is none)."""

    def is_word_start(self, position: int) -> bool:
        """Whether a word starts at ``position`` (0, or whitespace just before or at it): releases and rollbacks
        fall on such positions, so a word is never split between what was shown and what was removed. The end of
        the response is one only after whitespace (the word may go on)."""


@dataclass(frozen=True)
class Check:
    """What to measure at a checkpoint: ``spans[:windows]`` are windows (``spans[:context]`` the windows with
    context, then the short ones of a few words), a further span the whole response."""

    position: int
    spans: list[Span]
    windows: int
    final: bool
    context: int
    covered: int  # releases go no further: the end of the last short window (the position without them)
    measured_to: int  # the end of the last window with context (the word in progress at position waits)

    @property
    def whole(self) -> bool:
        return len(self.spans) > self.windows


@dataclass(frozen=True)
class Decision:
    """The core's answer to a measurement. ``target``: regenerate from this position (rollback, re-prompt);
    ``stop``: the generation is over, for this reason."""

    action: Action
    released: str = ""
    target: int | None = None
    removed_text: str = ""
    stop: StopReason | None = None


@dataclass
class _Trigger:
    state: MoralState | None = None
    window: TriggerWindow = "chunk"


_CONVERSATION_OUTCOME = {"instruction": "answered under a safety instruction", "refuse": "answered with a refusal",
                         "halt": "halted before the answer", "none": "measured only"}


@dataclass(frozen=True)
class Opening:
    """How a response starts, given its conversation: under an ``instruction``, or already over (``stop``: a
    refusal or a halt, ``released`` being its text)."""

    instruction: str | None = None
    released: str = ""
    stop: StopReason | None = None


@dataclass
class SupervisionCore:
    """One supervised generation's loop state. ``can_steer``: the engine acts on a :class:`Bias` (reranks
    candidates) and so keeps releasing in the watch zone; an engine that cannot steer holds text back there
    until the state recovers."""

    policy: Policy
    can_steer: bool
    observers: Sequence[EventObserver] = ()
    usage: Usage = field(default_factory=Usage)
    timings: Timings = field(default_factory=Timings)
    result: GenerationResult | None = None

    def __post_init__(self) -> None:
        self.estimator = StateEstimator(self.policy)
        self.controller = Controller(self.policy)
        self.holdback = Holdback()
        self.events: list[InterventionEvent] = []
        self.trace: list[TracePoint] = []
        self.released_position = 0
        self.bias_strength = 0.0
        self.checkpoint_count = 0
        self.error: str | None = None
        self.steering = SteeringReport()
        self.conversation: ConversationState | None = None
        self._trigger = _Trigger()
        self._start = time.perf_counter()
        self._count_lock = threading.Lock()

    def start(self) -> None:
        self._start = time.perf_counter()

    @property
    def released_text(self) -> str:
        return self.holdback.released

    @property
    def last_checkpoint(self) -> int:
        return self.estimator.latest.position

    def steering_gain(self) -> float:
        """The continuous steering's gain now, from the filtered state (the controller's law)."""
        return self.controller.steering_gain(self.estimator.filtered_risk())

    # -- when to measure, and what ----------------------------------------------------------------
    def cadence(self) -> int:
        """Tokens to the next checkpoint: ``first_checkpoint_tokens``, doubling with each passed checkpoint up
        to ``checkpoint_every``, so that the first text is checked (and released) early."""
        passed = len(self.estimator.checkpoints) - 1
        return min(self.policy.checkpoint_every, self.policy.first_checkpoint_tokens << min(passed, 16))

    def due(self, trajectory: Trajectory, *, final: bool = False) -> Check | None:
        """The check due now, if any. ``final``: the response is complete; whatever is not yet released is
        checked (None when all of it already was)."""
        previous = self.last_checkpoint
        ends = trajectory.checkpoints_after(previous, self.cadence())
        if final:
            if trajectory.end == previous and trajectory.end == self.released_position:
                return None
            ends = [end for end in ends if end < trajectory.end] + [trajectory.end]
        elif not ends:
            return None
        position = ends[-1]
        if not final and self._only_a_word_in_progress(trajectory, position):
            return None  # "ho" on the way to "home": measured once it is a word
        self.checkpoint_count += 1
        spans = self._window_spans(trajectory, ends, final)
        context = len(spans)
        short = self._short_spans(trajectory, position, final)
        covered = short[-1][1] if short else (spans[-1][1] if self.policy.short_window_words <= 0 else 0)
        spans += [span for span in short if span not in spans]
        windows = len(spans)
        whole = final or self.bias_strength > 0 or self.checkpoint_count % self.policy.full_window_every == 0
        if whole and (windows > 1 or spans[0][0] > 0):
            spans.append((0, position if final else self._whole_words_end(trajectory, 0, position)))
        return Check(position=position, spans=spans, windows=windows, final=final, context=context, covered=covered,
                     measured_to=spans[context - 1][1])

    def _window_spans(self, trajectory: Trajectory, ends: list[int], final: bool) -> list[Span]:
        """The windows that cover the response from the last checkpoint to the last of ``ends`` (one per cadence
        step): each ``window_tokens`` long and reaching back at least to where the one before ended. However the
        response arrived (one token or one huge delta at a time), every character lies in a scored window. A
        window ends where the last whole word does (before the response's end, the word in progress is not a word
        yet: "the ho" on the way to "the home"); the next window starts there."""
        previous = self.estimator.latest.passed_to  # where the last check's windows ended
        spans: list[Span] = []
        for index, end in enumerate(ends):
            start = min(trajectory.window_start(end, self.policy.window_tokens), previous)
            stop = end if final and index == len(ends) - 1 else self._whole_words_end(trajectory, start, end)
            if stop > start or index == len(ends) - 1:  # (no word ended in it yet: a later window covers it)
                spans.append((start, stop))
                previous = stop
        return spans

    def _only_a_word_in_progress(self, trajectory: Trajectory, position: int) -> bool:
        """Since what the last check measured, only one word has begun and it has not ended (nor grown to a window
        of text without spaces)."""
        measured = self.estimator.latest.passed_to
        whole = word_start(trajectory, position, floor=measured)
        return not trajectory.text(measured, whole).strip() and \
            trajectory.tokens_at(position) - trajectory.tokens_at(measured) < self._unspaced_tokens()

    def _whole_words_end(self, trajectory: Trajectory, start: int, end: int) -> int:
        """``end``, or the start of the word in progress there (``end`` itself when no word boundary comes)."""
        stop = word_start(trajectory, end, floor=start)
        if trajectory.tokens_at(end) - trajectory.tokens_at(stop) >= self._unspaced_tokens():
            return end  # no word boundary comes (Chinese, a long URL): measure what there is
        return stop

    def _short_spans(self, trajectory: Trajectory, position: int, final: bool) -> list[Span]:
        """Windows of ``short_window_words`` whole words that tile the response from the start of the word at the
        last checkpoint to ``position``, overlapping by half: one flagged word is measured nearly alone, never
        diluted in a long benign window (the second of two scales: a short window and one with context). A word still in progress
        at ``position`` waits for the next check ("hell" on the way to "hello" is not a word yet); nothing of it is
        released before (releases fall on word starts). Stateless: a rollback needs no bookkeeping here."""
        words = self.policy.short_window_words
        if words <= 0:
            return []
        # from the start of the word in progress at the last checkpoint (which that check left out)
        start = word_start(trajectory, self.last_checkpoint - 1) if self.last_checkpoint > 0 else 0
        end = position if final else word_start(trajectory, position, floor=start)
        if trajectory.tokens_at(position) - trajectory.tokens_at(end) >= self._unspaced_tokens():
            end = position  # no word boundary comes (Chinese, a long URL): measure what there is
        if end <= start:
            return []
        starts = [p for p in range(start, end) if p == start or trajectory.is_word_start(p)]
        return tile_words(starts, end, words)

    # -- what the measurement means ---------------------------------------------------------------
    def resolve(self, trajectory: Trajectory, check: Check, outcome: list[Assessment] | ScorerError) -> Decision:
        """Update the state with the measurement of ``check`` and decide. On a rollback or re-prompt the
        engine must cut its trajectory back to ``decision.target`` and regenerate from there."""
        if isinstance(outcome, ScorerError):
            return self._on_scorer_error(trajectory, check, outcome)
        chunk = Assessment.worst(outcome[: check.windows])
        whole = outcome[check.windows] if check.whole else None
        state = self.estimator.update(check.position, chunk, whole, measured_to=check.measured_to)
        short = check.windows > check.context and Assessment.worst(outcome[check.context: check.windows]).risk > max(
            (a.risk for a in outcome[: check.context]), default=0.0)
        window: TriggerWindow = "final" if check.final else (
            "full" if whole is not None and whole.risk > chunk.risk else "short" if short else "chunk")
        self._trigger = _Trigger(state, window)
        action = self.controller.decide(
            state, safe_positions=self.estimator.safe_positions(), floor=self.released_position
        )
        self.trace.append(TracePoint(
            position=trajectory.tokens_at(check.position), risk=round(state.risk, 4),
            forecast=round(state.forecast_risk, 4), action=type(action).__name__.lower(), final=check.final,
        ))
        if isinstance(action, (Continue, Bias)):
            return self._passed(trajectory, check, action)
        if isinstance(action, Halt):
            return self.halt(trajectory, action, "halt")
        assert isinstance(action, (Rollback, Reprompt))
        return self._go_back(trajectory, action)

    def _passed(self, trajectory: Trajectory, check: Check, action: Continue | Bias) -> Decision:
        self.estimator.mark_safe()
        entering_watch = isinstance(action, Bias) and self.bias_strength == 0
        self.bias_strength = action.strength if isinstance(action, Bias) else 0.0
        if entering_watch:
            self.record("bias", trajectory, check.position, detail=(
                f"rerank top-{self.policy.rerank_top_k} candidates" if self.can_steer
                else "watch zone: text held back until the state recovers (no logit access)"))
        if check.final:
            released = self.release(trajectory, check.position)
            return Decision(action, released, stop="stop")
        if isinstance(action, Bias) and not self.can_steer:
            return Decision(action)
        # never beyond what this check's short windows measured (the word in progress at due() time was not)
        target = min(self._word_aligned(trajectory, self._release_target()), max(check.covered, self.released_position))
        return Decision(action, self.release(trajectory, target))

    def _go_back(self, trajectory: Trajectory, action: Rollback | Reprompt) -> Decision:
        target = max(word_start(trajectory, action.to_position), self.released_position)
        while target > self.released_position and trajectory.text(target - 1, target).isspace():
            target -= 1  # before the space, not after it: the retry writes its own (" a", not "  a")
        removed = self.retreat(trajectory, target)
        if isinstance(action, Reprompt):
            self.record("reprompt", trajectory, target, removed_text=removed, detail=action.instruction)
        else:
            self.record("rollback", trajectory, target, removed_text=removed)
        return Decision(action, target=target, removed_text=removed)

    def retreat(self, trajectory: Trajectory, target: int) -> str:
        """Forget the state after ``target`` (the engine cuts its trajectory there); returns the text removed."""
        removed = trajectory.text(target, trajectory.end)
        self.usage.discarded_tokens += trajectory.tokens_at(trajectory.end) - trajectory.tokens_at(target)
        self.estimator.rollback(target)
        self.bias_strength = 0.0
        return removed

    def halt(self, trajectory: Trajectory, action: Halt, reason: StopReason, *, error: str | None = None) -> Decision:
        """Stop: nothing more of the response is released; the policy's message is."""
        target = self.released_position
        removed = self.retreat(trajectory, target)
        if reason == "scorer_error":
            self.record("scorer_error", trajectory, target, removed_text=removed, detail=f"fail_closed: {error}")
        else:
            self.record("halt", trajectory, target, removed_text=removed, detail=action.message)
        released = self.holdback.append(action.message) if action.message else ""
        self._mark_first_release(released)
        self.error = error if error is not None else self.error
        return Decision(action, released, target=target, removed_text=removed, stop=reason)

    def _on_scorer_error(self, trajectory: Trajectory, check: Check, exc: ScorerError) -> Decision:
        self._trigger = _Trigger()
        if self.policy.on_scorer_error == "fail_open":
            self.record("scorer_error", trajectory, check.position, detail=f"fail_open: released unchecked: {exc}")
            self.estimator.update(check.position, Assessment(risk=0.0))
            return self._passed(trajectory, check, Continue())
        halt = Halt(message=self.policy.halt_message, to_position=self.released_position)
        return self.halt(trajectory, halt, "scorer_error", error=str(exc))

    # -- release ----------------------------------------------------------------------------------
    def _release_target(self) -> int:
        passed = self.estimator.safe_positions()
        lag = self.policy.holdback_checkpoints
        return passed[-1 - lag] if len(passed) > lag else 0

    def _word_aligned(self, trajectory: Trajectory, position: int) -> int:
        """``position`` moved back to the start of its word, so that no word is split between a release and a
        later rollback. Text without spaces (Chinese, Japanese, a long URL) is released at ``position`` once a window
        of it (at least UNSPACED_RELEASE_TOKENS) waits, rather than held to the end."""
        if not self.policy.release_whole_words:
            return position
        aligned = word_start(trajectory, position, floor=self.released_position)
        if aligned > self.released_position:
            return aligned
        waiting = trajectory.tokens_at(position) - trajectory.tokens_at(self.released_position)
        return position if waiting >= self._unspaced_tokens() else self.released_position

    def _unspaced_tokens(self) -> int:
        return max(self.policy.window_tokens, UNSPACED_RELEASE_TOKENS)

    def release(self, trajectory: Trajectory, position: int) -> str:
        """Release the response up to ``position`` (only what was not released yet)."""
        if position <= self.released_position:
            return ""
        delta = self.holdback.release(trajectory.text(0, position))
        self.released_position = position
        self._mark_first_release(delta)
        return delta

    def start_from(self, conversation: ConversationState, *, act: bool = True) -> Opening:
        """The response continues ``conversation``: its state seeds the estimator; an unsafe one gets the policy's
        conversation_action (unless ``act`` is False: a completion prompt's), recorded as an event. A refusal or a
        halt is released here and ends the response."""
        self.conversation = conversation
        self.estimator.prior = conversation.prior(self.policy.conversation_prior)
        if conversation.zone != "unsafe":
            return Opening()
        action = conversation.action = self.policy.conversation_action if act else "none"
        outcome = _CONVERSATION_OUTCOME[action] if act else (
            f"the prompt is the continuation's prior ({self.policy.conversation_prior:g} of its risk: steered harder "
            "from the first token); a completion prompt gets no conversation action")
        event = InterventionEvent(
            kind="conversation", position=0, checkpoint=0, risk=conversation.risk, category=conversation.category,
            window="conversation", time_s=round(time.perf_counter() - self._start, 4),
            detail=(f"the conversation is in the unsafe region (filtered risk {conversation.risk:.2f}, riskiest "
                    f"message {conversation.peak:.2f}): " + outcome),
        )
        self.events.append(event)
        for observer in self.observers:
            observer(event)
        if action == "instruction":
            return Opening(instruction=self.policy.conversation_instruction)
        if action == "none":
            return Opening()
        answer = self.policy.conversation_refusal if action == "refuse" else self.policy.halt_message
        released = self.holdback.append(answer) if answer else ""
        self._mark_first_release(released)
        return Opening(released=released, stop="stop" if action == "refuse" else "halt")

    def count_scorer_call(self, inputs: int, seconds: float) -> None:
        with self._count_lock:  # a check scored ahead on a worker and a rerank call can finish at once
            self.usage.scorer_calls += 1
            self.usage.scored_texts += inputs
            self.timings.scorer_s += seconds

    def _mark_first_release(self, delta: str) -> None:
        if delta and self.timings.first_release_s is None:
            self.timings.first_release_s = time.perf_counter() - self._start

    # -- events and result ------------------------------------------------------------------------
    def record(self, kind: EventKind, trajectory: Trajectory, position: int, *, removed_text: str = "",
               detail: str = "", unmeasured: bool = False) -> None:
        """Record an intervention at ``position`` (with what the last measurement said, unless ``unmeasured``:
        no measurement triggered it, e.g. an upstream failure) and tell the observers."""
        trigger = _Trigger() if unmeasured else self._trigger
        event = intervention_event(
            kind, trigger.state, trigger.window, position=trajectory.tokens_at(position),
            checkpoint=self.checkpoint_count, removed_text=removed_text, detail=detail,
            time_s=time.perf_counter() - self._start,
        )
        self.events.append(event)
        for observer in self.observers:
            observer(event)

    def finish(self, reason: StopReason, *, completion_tokens: int, attempts: Sequence[UpstreamAttempt] = (),
               error: str | None = None) -> GenerationResult:
        """The result (once: later calls return the first one)."""
        if self.result is None:
            self.usage.completion_tokens = completion_tokens
            self.timings.total_s = time.perf_counter() - self._start
            self.result = GenerationResult(
                text=self.holdback.released, stop_reason=reason, events=self.events, trace=self.trace,
                usage=self.usage, timings=self.timings, error=error if error is not None else self.error,
                attempts=list(attempts), steering=self.steering, conversation=self.conversation,
            )
        return self.result


def tile_words(starts: list[int], end: int, words: int) -> list[Span]:
    """Spans of ``words`` whole words over the words beginning at ``starts`` (ascending) and ending at ``end``,
    each starting half a window after the one before; the last ends at ``end``."""
    bounds = [*starts, end]
    stride = max(1, words // 2)
    spans: list[Span] = []
    for index in range(0, len(bounds) - 1, stride):
        spans.append((bounds[index], bounds[min(index + words, len(bounds) - 1)]))
        if index + words >= len(bounds) - 1:
            break
    return spans


def word_start(trajectory: Trajectory, position: int, *, floor: int = 0) -> int:
    """The latest word start at or before ``position`` (``floor`` when there is none after it)."""
    for candidate in range(position, floor, -1):
        if trajectory.is_word_start(candidate):
            return candidate
    return floor
