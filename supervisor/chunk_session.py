"""One supervised generation on a chunk-controlled primary (hosted APIs): the chunk control of DESIGN.md.

The session is sans-IO: it never touches the network or the scorer itself. A driver
(:func:`run_chunked`, :func:`arun_chunked`) opens upstream requests through a :class:`ChunkPrimary`,
feeds the session the text deltas, scores what the session asks to have scored, and obeys each
:class:`Step`: release text, abort the upstream stream and start the next :class:`Attempt` from a
checked prefix, or stop. The same session serves the OpenAI client wrapper, LangChain, and
``Supervisor.generate`` on an OpenAI-compatible primary.

Positions in the response are character offsets here (hosted streams give text, not our token
ids); token counts come from the primary's tokenizer where it has one, an estimate otherwise.
"""

from __future__ import annotations

import asyncio
import bisect
import dataclasses
import re
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Generator, Iterator, Sequence
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Literal

from supervisor.actions import Bias, Continue, Halt, Reprompt, Rollback
from supervisor.assessment import Assessment
from supervisor.controller import Controller
from supervisor.errors import ScorerError, UpstreamError, UpstreamFault
from supervisor.events import (
    EventKind,
    EventObserver,
    GenerationResult,
    InterventionEvent,
    StopReason,
    Timings,
    TracePoint,
    TriggerWindow,
    UpstreamAttempt,
    Usage,
)
from supervisor.holdback import Holdback
from supervisor.policy import Policy
from supervisor.scorers.base import Scorer, aassess_checked, assess_checked
from supervisor.state import MoralState, StateEstimator, intervention_event

AttemptReason = Literal["start", "rollback", "reprompt", "retry"]
#: max_tokens for a session whose caller set no limit (the upstream's own limit applies).
UNLIMITED_TOKENS = 1 << 20
_FINISH_FOR_STOP = {"halt": "content_filter", "scorer_error": "content_filter", "length": "length"}


def finish_reason(result: GenerationResult, *, tool_calls: bool = False) -> str:
    """The OpenAI-style finish reason of a supervised answer (a halt reads as ``content_filter``)."""
    return _FINISH_FOR_STOP.get(result.stop_reason, "tool_calls" if tool_calls else "stop")
_WORD = re.compile(r"[A-Za-z][A-Za-z'-]{2,}")
_ESTIMATE_PIECE = re.compile(r"\w+|[^\w\s]")


def estimate_tokens(text: str) -> int:
    """Rough token count for primaries without a local tokenizer: words and punctuation marks."""
    return len(_ESTIMATE_PIECE.findall(text))


@dataclass(frozen=True)
class Attempt:
    """One upstream request: continue the assistant's answer after ``prefix`` (checked text)."""

    index: int
    reason: AttemptReason
    prefix: str
    instruction: str | None
    logit_bias: dict[int, int]
    max_tokens: int
    temperature_boost: float


@dataclass(frozen=True)
class UpstreamDelta:
    """One piece of an upstream stream: text and/or the finish reason and usage, plus the raw event."""

    text: str = ""
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    raw: Any = None


@dataclass
class Step:
    """What the driver must do next. ``check``: score these texts and call ``resolve``."""

    released: str = ""
    check: list[str] | None = None
    restart: Attempt | None = None
    done: bool = False


class ChunkPrimary(ABC):
    """A model behind a streaming text API: the session can read, abort, and start again."""

    name: str = "chunk-primary"

    def tokenizer(self, request: Any) -> Callable[[str], list[int]] | None:
        """The model's tokenizer for ``request`` (token ids for logit_bias), or None when it has none."""
        return None

    def token_counter(self, request: Any) -> Callable[[str], int]:
        """How to count response tokens (checkpoint cadence, max_tokens left): an estimate by default."""
        return estimate_tokens

    @abstractmethod
    def open(self, request: Any, attempt: Attempt) -> AbstractContextManager[Iterator[UpstreamDelta]]:
        """Start the upstream request for ``attempt``; leaving the context closes it."""

    @abstractmethod
    def aopen(self, request: Any, attempt: Attempt) -> AbstractAsyncContextManager[AsyncIterator[UpstreamDelta]]:
        """Async twin of :meth:`open`."""


# -- continuing an answer through a chat API (no native continuation) --------------------------
CONTINUE_INSTRUCTION = (
    "Continue your previous answer exactly where it stops, without repeating any of it and without "
    "commenting on this request."
)


class _EchoFilter:
    """Instruction continuation: drop the prefix when the model repeats it at the start of its answer."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix.strip()
        self.buffer = ""
        self.decided = not self.prefix

    def feed(self, text: str) -> str:
        if self.decided:
            return text
        self.buffer += text
        head = self.buffer.lstrip()
        if len(head) < len(self.prefix) and self.prefix.startswith(head):
            return ""
        self.decided = True
        out = head[len(self.prefix):] if head.startswith(self.prefix) else self.buffer
        return out

    def flush(self) -> str:
        if self.decided:
            return ""
        self.decided = True
        return self.buffer


class _Joiner:
    """Instruction continuation: a new answer starts a fresh word; put back the space the prefix needs."""

    def __init__(self, prefix: str) -> None:
        self.pending = bool(prefix) and not prefix[-1].isspace()

    def __call__(self, text: str) -> str:
        if not self.pending or not text:
            return text
        self.pending = False
        return " " + text.lstrip() if text[0].isalnum() else text


class ContinuationFilter:
    """Applied to the deltas of a request that continues ``prefix`` by instruction: drops the prefix when
    the model repeats it, and puts back the space between the prefix and a new word. ``active=False``
    (native continuation) passes deltas through."""

    def __init__(self, prefix: str, *, active: bool = True) -> None:
        self._echo = _EchoFilter(prefix if active else "")
        self._joiner = _Joiner(prefix if active else "")

    def apply(self, delta: UpstreamDelta) -> UpstreamDelta:
        return dataclasses.replace(delta, text=self._joiner(self._echo.feed(delta.text)))

    def flush(self, finish_reason: str | None = None) -> UpstreamDelta | None:
        """What the filter still holds at the end of the stream (with ``finish_reason``, if given)."""
        rest = self._joiner(self._echo.flush())
        return UpstreamDelta(rest, finish_reason) if rest or finish_reason else None


@dataclass
class _Trajectory:
    """The response as it stands: text and, at each piece boundary, the cumulative token count.

    A delta longer than ``piece_tokens`` is cut into pieces at spaces, with token counts shared out by
    length, so that checkpoints and scored windows keep their size whatever the upstream's delta sizes.
    """

    piece_tokens: int = 1 << 30
    text: str = ""
    bounds: list[tuple[int, int]] = field(default_factory=lambda: [(0, 0)])

    @property
    def tokens(self) -> int:
        return self.bounds[-1][1]

    def append(self, text: str, tokens: int) -> None:
        start, base = len(self.text), self.tokens
        self.text += text
        pieces = -(-tokens // self.piece_tokens)
        cuts: list[int] = []
        for k in range(1, pieces):
            target = len(text) * k // pieces
            space = text.find(" ", target)
            cut = space if 0 < space < len(text) else target
            if cut > (cuts[-1] if cuts else 0):
                cuts.append(cut)
        for cut in cuts:
            self.bounds.append((start + cut, base + tokens * cut // len(text)))
        self.bounds.append((len(self.text), base + tokens))

    # Both coordinates of ``bounds`` only grow, so lookups bisect (feed() asks on every delta).
    def _index_at_chars(self, chars: int) -> int:
        return bisect.bisect_right(self.bounds, chars, key=lambda bound: bound[0]) - 1

    def tokens_at(self, chars: int) -> int:
        index = self._index_at_chars(chars)
        return self.bounds[index][1] if index >= 0 else 0

    def window_start(self, end_chars: int, tokens_back: int) -> int:
        """Character offset of the latest boundary at least ``tokens_back`` tokens before ``end_chars``."""
        limit = self.tokens_at(end_chars) - tokens_back
        index = bisect.bisect_right(self.bounds, limit, key=lambda bound: bound[1]) - 1
        return self.bounds[index][0] if index >= 0 else 0

    def checkpoints_after(self, chars: int, every: int) -> list[int]:
        """Boundaries after ``chars`` spaced at least ``every`` tokens apart (the first one ``every`` after it)."""
        due: list[int] = []
        last = self.tokens_at(chars)
        for offset, tokens in self.bounds[self._index_at_chars(chars) + 1:]:
            if tokens - last >= every:
                due.append(offset)
                last = tokens
        return due

    def truncate(self, chars: int) -> None:
        self.text = self.text[:chars]
        self.bounds = [(c, t) for c, t in self.bounds if c <= chars]


class ChunkSession:
    """The control loop of DESIGN.md over a stream of text deltas. See the module docstring."""

    def __init__(
        self,
        policy: Policy,
        *,
        max_tokens: int,
        count_tokens: Callable[[str], int] = estimate_tokens,
        token_ids: Callable[[str], list[int] | None] | None = None,
        supervise: bool = True,
        observers: Sequence[EventObserver] = (),
    ) -> None:
        self.policy = policy
        self.max_tokens = max_tokens
        self.count_tokens = count_tokens
        self.token_ids = token_ids
        self.supervise = supervise
        self.observers = list(observers)
        self.result: GenerationResult | None = None
        self.timings = Timings()
        self.usage = Usage()

        self._estimator = StateEstimator(policy)
        self._controller = Controller(policy)
        self._holdback = Holdback()
        self._response = _Trajectory(piece_tokens=policy.checkpoint_every)
        self._events: list[InterventionEvent] = []
        self._trace: list[TracePoint] = []
        self._attempts: list[UpstreamAttempt] = []
        self._released_chars = 0
        self._instruction: str | None = None
        self._logit_bias: dict[int, int] = {}
        self._pending: Literal["checkpoint", "final", "words"] | None = None
        self._pending_windows = 0
        self._pending_offset = 0
        self._restart_reason: AttemptReason = "rollback"
        self._removed_words: list[str] = []
        self._finish_reason: str | None = None
        self._stream_tokens = 0
        self._checkpoint_count = 0
        self._retries = 0
        self._start = time.perf_counter()
        self._trigger: tuple[MoralState | None, TriggerWindow] = (None, "chunk")

    @property
    def released_text(self) -> str:
        return self._holdback.released

    @property
    def events(self) -> list[InterventionEvent]:
        return list(self._events)

    @property
    def streamed_chars(self) -> int:
        """Non-zero once any response text was fed (kept characters plus discarded tokens)."""
        return len(self._response.text) + self.usage.discarded_tokens

    # -- attempts -------------------------------------------------------------------------------
    def begin(self) -> Attempt:
        self._start = time.perf_counter()
        return self._attempt("start")

    def _close_attempt(self) -> None:
        if self._attempts and self._attempts[-1].completion_tokens is None:
            self._attempts[-1].completion_tokens = self._stream_tokens  # the server did not say: our count

    def _attempt(self, reason: AttemptReason) -> Attempt:
        self._close_attempt()
        prefix = self._response.text
        attempt = Attempt(
            index=len(self._attempts),
            reason=reason,
            prefix=prefix,
            instruction=self._instruction,
            logit_bias=dict(self._logit_bias),
            max_tokens=max(1, self.max_tokens - self._response.tokens),
            temperature_boost=self.policy.retry_temperature_boost if reason in ("rollback", "reprompt") else 0.0,
        )
        self._attempts.append(UpstreamAttempt(
            index=attempt.index, reason=reason, prefix_chars=len(prefix), logit_bias_entries=len(attempt.logit_bias),
        ))
        self._finish_reason = None
        self._stream_tokens = 0
        return attempt

    # -- the stream -----------------------------------------------------------------------------
    def feed(self, delta: UpstreamDelta) -> Step:
        """One upstream delta. Returns a Step that may ask for a check (nothing is released unchecked)."""
        record = self._attempts[-1]
        if delta.prompt_tokens is not None:
            record.prompt_tokens = delta.prompt_tokens
        if delta.completion_tokens is not None:
            record.completion_tokens = delta.completion_tokens
        if delta.finish_reason is not None:
            self._finish_reason = record.finish_reason = delta.finish_reason
        if not delta.text:
            return Step()
        tokens = self.count_tokens(delta.text)
        self._stream_tokens += tokens
        self._response.append(delta.text, tokens)
        if not self.supervise:
            return Step(released=self._release(len(self._response.text)))
        due = self._response.checkpoints_after(self._estimator.checkpoints[-1].position, self.policy.checkpoint_every)
        return self._ask(due[-1], final=False) if due else Step()

    def end(self) -> Step:
        """The upstream stream finished normally."""
        if not self.supervise:
            return self._done(self._stop_reason())
        position = len(self._response.text)
        if position == self._estimator.checkpoints[-1].position and position == self._released_chars:
            return self._done(self._stop_reason())
        return self._ask(position, final=True)

    def _ask(self, char_offset: int, *, final: bool) -> Step:
        """Check the response up to ``char_offset``: its windows and, at the policy's cadence, all of it."""
        self._checkpoint_count += 1
        spans = self._window_spans(char_offset)
        self._pending, self._pending_offset, self._pending_windows = (
            "final" if final else "checkpoint", char_offset, len(spans))
        full = final or self._checkpoint_count % self.policy.full_window_every == 0
        if full and (len(spans) > 1 or spans[0][0] > 0):
            spans.append((0, char_offset))
        return Step(check=[self._response.text[start:end] for start, end in spans])

    def _window_spans(self, char_offset: int) -> list[tuple[int, int]]:
        """The windows that cover the text from the last checkpoint to ``char_offset``: one per
        ``checkpoint_every`` tokens, each ``window_tokens`` long and reaching back at least to where the one
        before ended. However the upstream cut its deltas, every character lies inside a scored window."""
        previous = self._estimator.checkpoints[-1].position
        ends = [end for end in self._response.checkpoints_after(previous, self.policy.checkpoint_every)
                if end < char_offset]
        spans = []
        for end in [*ends, char_offset]:
            spans.append((min(self._response.window_start(end, self.policy.window_tokens), previous), end))
            previous = end
        return spans

    def resolve(self, outcome: list[Assessment] | ScorerError) -> Step:
        """The scorer's answer to the last ``Step.check`` (or the error it raised)."""
        pending, self._pending = self._pending, None
        if pending == "words":
            if not isinstance(outcome, ScorerError):
                self._ban_words(outcome)
            return Step(restart=self._attempt(self._restart_reason))
        if pending is None:
            raise RuntimeError("resolve() called with no check pending")
        final = pending == "final"
        if isinstance(outcome, ScorerError):
            return self._on_scorer_error(outcome, final=final)
        position = self._pending_offset
        windows = self._pending_windows
        chunk = Assessment.worst(outcome[:windows])
        whole = outcome[windows] if len(outcome) > windows else None
        state = self._estimator.update(position, chunk, whole)
        window: TriggerWindow = "final" if final else ("full" if whole is not None and whole.risk > chunk.risk else "chunk")
        self._trigger = (state, window)
        action = self._controller.decide(
            state, safe_positions=self._estimator.safe_positions(), floor=self._released_chars
        )
        self._trace.append(TracePoint(
            position=self._response.tokens, risk=round(state.risk, 4), forecast=round(state.forecast_risk, 4),
            action=type(action).__name__.lower(), final=final,
        ))
        if isinstance(action, (Continue, Bias)):
            self._estimator.mark_safe()
            if final:
                released = self._release(position)
                return self._done(self._stop_reason(), released)
            # No reranking over an API: in the watch zone, text is held back until the state recovers.
            if isinstance(action, Bias):
                return Step()
            return Step(released=self._release(self._release_target()))
        if isinstance(action, Halt):
            return self._halt("halt", action.message)
        assert isinstance(action, (Rollback, Reprompt))
        return self._roll_back(action)

    def _roll_back(self, action: Rollback | Reprompt) -> Step:
        target = max(action.to_position, self._released_chars)
        removed = self._response.text[target:]
        self._discard(target)
        if isinstance(action, Reprompt):
            self._instruction = action.instruction
            self._restart_reason = "reprompt"
            self._record("reprompt", removed_text=removed, detail=action.instruction)
        else:
            self._restart_reason = "rollback"
            self._record("rollback", removed_text=removed)
        kept = self._response.text.lower()
        words = list(dict.fromkeys(w for w in _WORD.findall(removed) if w.lower() not in kept))
        if self.token_ids is None or not words or len(self._logit_bias) >= self.policy.max_logit_bias_entries:
            return Step(restart=self._attempt(self._restart_reason))
        self._removed_words = words
        self._pending = "words"
        return Step(check=list(words))

    def _ban_words(self, assessments: list[Assessment]) -> None:
        """logit_bias for the retry: ban the risky words of the removed text (every single-token spelling),
        push down the first token of longer ones; when no single word is risky, push down all of them."""
        assert self.token_ids is not None
        risky = [w for w, a in zip(self._removed_words, assessments) if a.risk >= self.policy.watch_threshold]
        words, hard = (risky, True) if risky else (self._removed_words, False)
        soft = -max(1, round(self.policy.rejected_token_penalty))
        for word in words:
            for spelling in (word, " " + word, word.capitalize(), " " + word.capitalize(), word.lower(), " " + word.lower()):
                try:
                    ids = self.token_ids(spelling) or []
                except (OSError, ValueError):
                    return  # the tokenizer went away: retry without the bias rather than fail
                if not ids:
                    continue
                value = -100 if hard and len(ids) == 1 else soft
                if len(self._logit_bias) >= self.policy.max_logit_bias_entries and ids[0] not in self._logit_bias:
                    return
                self._logit_bias[ids[0]] = min(value, self._logit_bias.get(ids[0], 0))

    def fault(self, exc: BaseException) -> tuple[Attempt, float]:
        """The upstream failed mid-request. Returns the retry and how long to wait first; raises
        :class:`UpstreamError` (with the released text) once the policy's retries are spent."""
        self._attempts[-1].error = f"{type(exc).__name__}: {exc}"
        self._pending = None
        self._retries += 1
        if self._retries > self.policy.max_upstream_retries:
            self._finish("upstream_error", error=f"upstream failed {self._retries} times; last: {exc}")
            raise UpstreamError(
                f"the upstream model failed {self._retries} times (policy.max_upstream_retries="
                f"{self.policy.max_upstream_retries}); last error: {type(exc).__name__}: {exc}. "
                f"{len(self.released_text)} characters had been released; nothing unchecked was.",
                released_text=self.released_text,
                result=self.result,
            ) from exc
        # Only checked text survives: resume from the last passed checkpoint.
        target = max(self._estimator.safe_positions()[-1], self._released_chars)
        removed = self._response.text[target:]
        self._discard(target)
        self._trigger = (None, "chunk")
        self._record("upstream_retry", removed_text=removed, detail=f"{type(exc).__name__}: {exc}")
        retry_after = getattr(exc, "retry_after_s", None)
        wait = retry_after if retry_after is not None else self.policy.upstream_backoff_s * 2 ** (self._retries - 1)
        return self._attempt("retry"), min(float(wait), 60.0)

    def cancel(self) -> None:
        if self.result is None:
            self._finish("cancelled")

    # -- helpers --------------------------------------------------------------------------------
    def _discard(self, target: int) -> None:
        removed_tokens = self._response.tokens - self._response.tokens_at(target)
        self.usage.discarded_tokens += removed_tokens
        self._response.truncate(target)
        self._estimator.rollback(target)

    def _on_scorer_error(self, exc: ScorerError, *, final: bool) -> Step:
        self._trigger = (None, "chunk")
        if self.policy.on_scorer_error == "fail_open":
            self._record("scorer_error", detail=f"fail_open: released unchecked: {exc}")
            position = len(self._response.text)
            self._estimator.update(position, Assessment(risk=0.0))
            self._estimator.mark_safe()
            released = self._release(position)
            return self._done(self._stop_reason(), released) if final else Step(released=released)
        removed = self._response.text[self._released_chars:]
        self._discard(self._released_chars)
        self._record("scorer_error", removed_text=removed, detail=f"fail_closed: {exc}")
        message = self._holdback.append(self.policy.halt_message) if self.policy.halt_message else ""
        self._mark_first_release(message)
        return self._done("scorer_error", message, error=str(exc))

    def _halt(self, reason: StopReason, message: str) -> Step:
        removed = self._response.text[self._released_chars:]
        self._discard(self._released_chars)
        self._record("halt", removed_text=removed, detail=message)
        released = self._holdback.append(message) if message else ""
        self._mark_first_release(released)
        return self._done(reason, released)

    def _stop_reason(self) -> StopReason:
        return "length" if self._finish_reason == "length" else "stop"

    def _release_target(self) -> int:
        passed = self._estimator.safe_positions()
        lag = self.policy.holdback_checkpoints
        return passed[-1 - lag] if len(passed) > lag else 0

    def _release(self, position: int) -> str:
        if position <= self._released_chars:
            return ""
        delta = self._holdback.release(self._response.text[:position])
        self._released_chars = position
        self._mark_first_release(delta)
        return delta

    def _mark_first_release(self, delta: str) -> None:
        if delta and self.timings.first_release_s is None:
            self.timings.first_release_s = time.perf_counter() - self._start

    def _record(self, kind: EventKind, *, removed_text: str = "", detail: str = "") -> None:
        state, window = self._trigger
        event = intervention_event(
            kind, state, window, position=self._response.tokens, checkpoint=self._checkpoint_count,
            removed_text=removed_text, detail=detail, time_s=time.perf_counter() - self._start,
        )
        self._events.append(event)
        for observer in self.observers:
            observer(event)

    def _done(self, reason: StopReason, released: str = "", *, error: str | None = None) -> Step:
        self._finish(reason, error=error)
        return Step(released=released, done=True)

    def _finish(self, reason: StopReason, *, error: str | None = None) -> None:
        if self.result is not None:
            return
        self._close_attempt()
        usage = self.usage
        usage.prompt_tokens = sum(a.prompt_tokens or 0 for a in self._attempts)
        usage.generated_tokens = sum(a.completion_tokens or 0 for a in self._attempts)
        model_text = self._response.text[: self._released_chars]
        usage.completion_tokens = self.count_tokens(model_text) if model_text else 0
        self.timings.total_s = time.perf_counter() - self._start
        self.result = GenerationResult(
            text=self._holdback.released,
            stop_reason=reason,
            events=self._events,
            trace=self._trace,
            usage=usage,
            timings=self.timings,
            error=error,
            attempts=self._attempts,
        )


# -- drivers ------------------------------------------------------------------------------------
def settle(session: ChunkSession, step: Step, scorer: Scorer) -> Step:
    released = step.released
    while step.check is not None:
        started = time.perf_counter()
        outcome: list[Assessment] | ScorerError
        try:
            outcome = assess_checked(scorer, step.check, session.policy.scorer_timeout_s)
        except ScorerError as exc:
            outcome = exc
        session.usage.scorer_calls += 1
        session.usage.scored_texts += len(step.check)
        session.timings.scorer_s += time.perf_counter() - started
        step = session.resolve(outcome)
        released += step.released
    step.released = released
    return step


async def asettle(session: ChunkSession, step: Step, scorer: Scorer) -> Step:
    released = step.released
    while step.check is not None:
        started = time.perf_counter()
        outcome: list[Assessment] | ScorerError
        try:
            outcome = await aassess_checked(scorer, step.check, session.policy.scorer_timeout_s)
        except ScorerError as exc:
            outcome = exc
        session.usage.scorer_calls += 1
        session.usage.scored_texts += len(step.check)
        session.timings.scorer_s += time.perf_counter() - started
        step = session.resolve(outcome)
        released += step.released
    step.released = released
    return step


def run_chunked(
    session: ChunkSession, primary: ChunkPrimary, request: Any, scorer: Scorer
) -> Generator[str, None, None]:
    """Drive ``session`` over ``primary``: yields released text; ``session.result`` is set at the end.
    Closing the generator closes the upstream stream and finishes the result as cancelled."""
    attempt: Attempt | None = session.begin()
    try:
        while attempt is not None:
            step = Step()
            try:
                with primary.open(request, attempt) as upstream:
                    for delta in upstream:
                        step = settle(session, session.feed(delta), scorer)
                        if step.released:
                            yield step.released
                        if step.done or step.restart:
                            break
                    else:
                        step = settle(session, session.end(), scorer)
                        if step.released:
                            yield step.released
            except UpstreamFault as exc:
                attempt, wait = session.fault(exc)
                time.sleep(wait)
                continue
            attempt = step.restart
            if attempt is None and not step.done:
                raise RuntimeError("chunk session stopped without a result")  # a bug, never a silent end
    finally:
        session.cancel()


async def arun_chunked(
    session: ChunkSession, primary: ChunkPrimary, request: Any, scorer: Scorer
) -> AsyncGenerator[str, None]:
    """Async twin of :func:`run_chunked`."""
    attempt: Attempt | None = session.begin()
    try:
        while attempt is not None:
            step = Step()
            try:
                async with primary.aopen(request, attempt) as upstream:
                    async for delta in upstream:
                        step = await asettle(session, session.feed(delta), scorer)
                        if step.released:
                            yield step.released
                        if step.done or step.restart:
                            break
                    else:
                        step = await asettle(session, session.end(), scorer)
                        if step.released:
                            yield step.released
            except UpstreamFault as exc:
                attempt, wait = session.fault(exc)
                await asyncio.sleep(wait)
                continue
            attempt = step.restart
            if attempt is None and not step.done:
                raise RuntimeError("chunk session stopped without a result")
    finally:
        session.cancel()


def chunk_session(
    primary: ChunkPrimary,
    request: Any,
    policy: Policy,
    *,
    max_tokens: int,
    supervise: bool = True,
    observers: Sequence[EventObserver] = (),
) -> ChunkSession:
    """A session wired to ``primary``'s tokenizer for ``request``."""
    return ChunkSession(
        policy,
        max_tokens=max_tokens,
        count_tokens=primary.token_counter(request),
        token_ids=primary.tokenizer(request),
        supervise=supervise,
        observers=observers,
    )
