"""One supervised generation on a logit-controlled primary: the control loop of DESIGN.md.

decode a token -> every ``checkpoint_every`` tokens score the window (and, at a slower cadence,
the whole response) -> update the moral state -> the controller picks an action -> continue,
steer, roll back, re-prompt or halt -> release text that lies behind a passed checkpoint.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from supervisor.actions import Action, Bias, Continue, Halt, Reprompt, Rollback
from supervisor.assessment import Assessment
from supervisor.controller import Controller
from supervisor.errors import ScorerError
from supervisor.events import (
    EventKind,
    EventObserver,
    GenerationResult,
    InterventionEvent,
    StopReason,
    Timings,
    TracePoint,
    TriggerWindow,
    Usage,
)
from supervisor.holdback import Holdback
from supervisor.messages import Message, with_instruction
from supervisor.policy import Policy
from supervisor.primaries.base import LogitPrimary
from supervisor.sampling import SamplingParams, sample
from supervisor.scorers.base import Scorer, assess_checked
from supervisor.state import MoralState, StateEstimator, intervention_event

_CONTENT_TOKEN = re.compile(r"^\s*[A-Za-z]{3,}\s*$")


@dataclass(frozen=True)
class Request:
    """What to generate: chat ``messages`` or a completion ``prompt`` (exactly one of them)."""

    messages: list[Message] | None
    prompt: str | None
    max_tokens: int
    sampling: SamplingParams


class Session:
    """Runs one generation; iterate :meth:`run` for released text, then read :attr:`result`."""

    def __init__(
        self,
        primary: LogitPrimary,
        scorer: Scorer,
        policy: Policy,
        request: Request,
        *,
        supervise: bool = True,
        observers: Sequence[EventObserver] = (),
    ) -> None:
        self.primary = primary
        self.scorer = scorer
        self.policy = policy
        self.request = request
        self.supervise = supervise
        self.observers = list(observers)
        self.result: GenerationResult | None = None

        self._estimator = StateEstimator(policy)
        self._controller = Controller(policy)
        self._holdback = Holdback()
        self._events: list[InterventionEvent] = []
        self._trace: list[TracePoint] = []
        self._usage = Usage()
        self._timings = Timings()
        self._rng = np.random.default_rng(request.sampling.seed)
        self._generated: list[int] = []
        self._released_tokens = 0
        self._prompt_ids: list[int] = []
        self._instruction: str | None = None
        self._banned_at: dict[int, set[int]] = {}
        self._penalties: dict[int, float] = {}
        self._boost_until = -1
        self._bias_strength = 0.0
        self._start = 0.0
        self._checkpoint_count = 0
        self._stop: StopReason | None = None
        self._error: str | None = None
        self._cancelled = False
        self._trigger: tuple[MoralState | None, TriggerWindow] = (None, "chunk")

    def cancel(self) -> None:
        """Ask the loop to stop at the next token (used by async consumers that go away)."""
        self._cancelled = True

    # -- the loop -------------------------------------------------------------------------------
    def run(self) -> Generator[str, None, None]:
        self.primary.acquire()
        try:
            yield from self._run()
        finally:
            self.primary.release()
            if self.result is None:
                self._finish(self._stop or ("cancelled" if self._cancelled else "stop"))

    def _run(self) -> Iterator[str]:
        self._start = time.perf_counter()
        self._prompt_ids = self._build_prompt()
        self.primary.check_fits(len(self._prompt_ids), self.request.max_tokens)
        self._usage.prompt_tokens = len(self._prompt_ids)
        logits = self._timed_primary(self.primary.reset, self._prompt_ids)
        policy = self.policy
        while self._stop is None and not self._cancelled:
            position = len(self._generated)
            finished = position >= self.request.max_tokens
            token = -1
            if not finished:
                token = self._choose(logits, position)
                finished = token in self.primary.eos_token_ids
            if finished:
                reason: StopReason = "length" if position >= self.request.max_tokens else "stop"
                if not self.supervise:
                    yield from self._release(position)
                    self._stop = reason
                    break
                action = self._checkpoint(final=True)
                if isinstance(action, (Continue, Bias)):
                    yield from self._release(len(self._generated))
                    self._stop = reason
                    break
                logits, released = self._apply(action)
                yield from released
                continue
            self._generated.append(token)
            self._usage.generated_tokens += 1
            logits = self._timed_primary(self.primary.step, token)
            since_checkpoint = len(self._generated) - self._estimator.checkpoints[-1].position
            if not self.supervise:
                yield from self._release(len(self._generated))
            elif since_checkpoint >= policy.checkpoint_every:
                action = self._checkpoint(final=False)
                if isinstance(action, (Continue, Bias)):
                    yield from self._release(self._release_target())
                else:
                    logits, released = self._apply(action)
                    yield from released

    # -- prompts ----------------------------------------------------------------------------------
    def _build_prompt(self) -> list[int]:
        request = self.request
        if request.messages is not None:
            messages = request.messages
            if self._instruction:
                messages = with_instruction(messages, self._instruction)
            return self.primary.chat_prompt(messages)
        assert request.prompt is not None
        text = request.prompt if not self._instruction else f"{self._instruction}\n\n{request.prompt}"
        return self.primary.completion_prompt(text)

    # -- decoding ---------------------------------------------------------------------------------
    def _choose(self, logits: np.ndarray, position: int) -> int:
        adjusted = logits.astype(np.float64, copy=True)
        for token_id, penalty in self._penalties.items():
            adjusted[token_id] -= penalty
        for token_id in self._banned_at.get(position, ()):
            adjusted[token_id] = -np.inf
        temperature = self.request.sampling.temperature
        if position < self._boost_until and temperature > 0:
            temperature += self.policy.retry_temperature_boost
        if self._bias_strength > 0:
            self._rerank(adjusted)
        return sample(adjusted, self.request.sampling, self._rng, temperature)

    def _rerank(self, logits: np.ndarray) -> None:
        """Watch zone: score the window extended by each top candidate, push risky ones down."""
        k = min(self.policy.rerank_top_k, len(logits))
        candidates = np.argpartition(-logits, k - 1)[:k]
        candidates = candidates[np.isfinite(logits[candidates])]
        if len(candidates) < 2:
            return
        window = self._generated[-self.policy.window_tokens :]
        texts = [self.primary.decode([*window, int(c)]) for c in candidates]
        try:
            assessments = self._score(texts)
        except ScorerError:
            return  # steering is an optimisation; the next checkpoint still measures (and fails closed)
        for candidate, assessment in zip(candidates, assessments):
            logits[int(candidate)] -= self._bias_strength * assessment.risk

    def _timed_primary(self, method: Callable[[Any], np.ndarray], argument: Any) -> np.ndarray:
        started = time.perf_counter()
        logits = method(argument)
        self._timings.primary_s += time.perf_counter() - started
        return logits

    # -- measurement ------------------------------------------------------------------------------
    def _score(self, texts: list[Any], method: Callable[[list[Any]], list[Assessment]] | None = None,
               ) -> list[Assessment]:
        started = time.perf_counter()
        try:
            return assess_checked(self.scorer, texts, self.policy.scorer_timeout_s, method)
        finally:
            self._usage.scorer_calls += 1
            self._usage.scored_texts += len(texts)
            self._timings.scorer_s += time.perf_counter() - started

    def _checkpoint(self, *, final: bool) -> Action:
        position = len(self._generated)
        self._checkpoint_count += 1
        window_start = max(0, position - self.policy.window_tokens)
        # The final check also covers everything not yet released, however long.
        if final:
            window_start = min(window_start, self._released_tokens)
        # The whole response is scored at a slow cadence, and at every checkpoint while the state is
        # in the watch zone, so that harm building up across chunks is seen before it is released.
        full = final or self._bias_strength > 0 or self._checkpoint_count % self.policy.full_window_every == 0
        spans = [(window_start, position)] + ([(0, position)] if full and window_start > 0 else [])
        try:
            assessments = self._measure(spans)
        except ScorerError as exc:
            return self._on_scorer_error(exc)
        chunk = assessments[0]
        whole = assessments[-1] if full else None
        state = self._estimator.update(position, chunk, whole)
        if final:
            self._trigger = (state, "final")
        else:
            self._trigger = (state, "full" if whole is not None and whole.risk > chunk.risk else "chunk")
        action = self._controller.decide(
            state, safe_positions=self._estimator.safe_positions(), floor=self._released_tokens
        )
        self._trace.append(TracePoint(
            position=position, risk=round(state.risk, 4), forecast=round(state.forecast_risk, 4),
            action=type(action).__name__.lower(), final=final,
        ))
        if isinstance(action, (Continue, Bias)):
            self._estimator.mark_safe()
            entering_watch = isinstance(action, Bias) and self._bias_strength == 0
            self._bias_strength = action.strength if isinstance(action, Bias) else 0.0
            if entering_watch:
                self._record("bias", detail=f"rerank top-{self.policy.rerank_top_k} candidates")
        return action

    def _measure(self, spans: list[tuple[int, int]]) -> list[Assessment]:
        """Score response spans: from the primary's own hidden states when the scorer is a state probe
        attached to this primary (no extra forward pass), else from their decoded text."""
        layer = getattr(self.scorer, "layer", None)
        assess_hidden = getattr(self.scorer, "assess_hidden", None)
        if assess_hidden is not None and layer is not None and getattr(self.primary, "probe_layer", None) == layer:
            offset = len(self._prompt_ids)
            hidden_states = self.primary.hidden_states  # type: ignore[attr-defined]
            # an empty response is measured by the state after the prompt (its last token)
            windows = [hidden_states(offset + start - (end == start), offset + end) for start, end in spans]
            return self._score(windows, assess_hidden)
        return self._score([self.primary.decode(self._generated[start:end]) for start, end in spans])

    def _on_scorer_error(self, exc: ScorerError) -> Action:
        self._trigger = (None, "chunk")
        if self.policy.on_scorer_error == "fail_open":
            self._record("scorer_error", detail=f"fail_open: released unchecked: {exc}")
            self._estimator.update(len(self._generated), Assessment(risk=0.0))
            self._estimator.mark_safe()
            return Continue()
        self._error = str(exc)
        self._stop = "scorer_error"
        return Halt(message=self.policy.halt_message, to_position=self._released_tokens)

    # -- actions ----------------------------------------------------------------------------------
    def _apply(self, action: Action) -> tuple[np.ndarray, list[str]]:
        assert isinstance(action, (Rollback, Reprompt, Halt))
        target = max(action.to_position, self._released_tokens)
        removed_ids = self._generated[target:]
        removed_text = self._removed_text(target)
        self._usage.discarded_tokens += len(removed_ids)
        self._generated = self._generated[:target]
        self._estimator.rollback(target)
        self._bias_strength = 0.0
        if isinstance(action, Halt):
            if self._stop == "scorer_error":
                self._record("scorer_error", removed_text=removed_text, detail=f"fail_closed: {self._error}")
            else:
                self._stop = "halt"
                self._record("halt", removed_text=removed_text, detail=action.message)
            released = [self._holdback.append(action.message)] if action.message else []
            self._mark_first_release(released)
            return np.empty(0), released
        self._avoid(target, removed_ids)
        if isinstance(action, Rollback):
            self._record("rollback", removed_text=removed_text)
            logits = self._timed_primary(self.primary.truncate, len(self._prompt_ids) + target)
        else:
            self._instruction = action.instruction
            self._record("reprompt", removed_text=removed_text, detail=action.instruction)
            self._prompt_ids = self._build_prompt()
            logits = self._timed_primary(self.primary.reset, self._prompt_ids + self._generated)
        return logits, []

    def _avoid(self, position: int, removed_ids: list[int]) -> None:
        """Make the retry differ: ban the rejected first token there, penalise the rejected words."""
        if removed_ids:
            self._banned_at.setdefault(position, set()).add(removed_ids[0])
        kept = set(self._generated)
        for token_id in set(removed_ids) - kept:
            if _CONTENT_TOKEN.match(self.primary.decode([token_id])):
                self._penalties[token_id] = self.policy.rejected_token_penalty
        self._boost_until = position + self.policy.checkpoint_every

    def _removed_text(self, target: int) -> str:
        before = self.primary.decode(self._generated[:target])
        whole = self.primary.decode(self._generated)
        return whole[len(before):] if whole.startswith(before) else self.primary.decode(self._generated[target:])

    # -- release ----------------------------------------------------------------------------------
    def _release_target(self) -> int:
        passed = self._estimator.safe_positions()
        lag = self.policy.holdback_checkpoints
        return passed[-1 - lag] if len(passed) > lag else 0

    def _release(self, position: int) -> Iterator[str]:
        if position <= self._released_tokens:
            return
        delta = self._holdback.release(self.primary.decode(self._generated[:position]))
        self._released_tokens = position
        if delta:
            self._mark_first_release([delta])
            yield delta

    def _mark_first_release(self, deltas: list[str]) -> None:
        if self._timings.first_release_s is None and any(deltas):
            self._timings.first_release_s = time.perf_counter() - self._start

    # -- events and result ------------------------------------------------------------------------
    def _record(self, kind: EventKind, *, removed_text: str = "", detail: str = "") -> None:
        state, window = self._trigger
        event = intervention_event(
            kind, state, window, position=len(self._generated), checkpoint=self._checkpoint_count,
            removed_text=removed_text, detail=detail, time_s=time.perf_counter() - self._start,
        )
        self._events.append(event)
        for observer in self.observers:
            observer(event)

    def _finish(self, reason: StopReason) -> None:
        self._usage.completion_tokens = self._released_tokens
        self._timings.total_s = time.perf_counter() - self._start if self._start else 0.0
        self.result = GenerationResult(
            text=self._holdback.released,
            stop_reason=reason,
            events=self._events,
            trace=self._trace,
            usage=self._usage,
            timings=self._timings,
            error=self._error,
        )
