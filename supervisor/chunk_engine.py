"""The chunk engine: one supervised generation on a hosted primary, from a stream of text deltas.

The session is sans-IO: it never touches the network or the scorer. A driver (:func:`run_chunked`,
:func:`arun_chunked`) opens upstream requests through a :class:`~supervisor.primaries.chunk.ChunkPrimary`,
feeds the session the deltas, has what the session asks for scored, and obeys each :class:`Directive`:
release text, abort the upstream stream and start the next attempt from a checked prefix, or stop.
Cadence, windows, the state, the decisions, release and events are the supervision core's
(:mod:`supervisor.core`); this engine adds attempts, continuation from the checked prefix and
``logit_bias``. It serves the OpenAI client wrapper, LangChain and ``Supervisor.generate`` on an
OpenAI-compatible primary.

Positions are character offsets in the response (``char_offset``: hosted streams give text, not our
token ids); token counts come from the primary's tokenizer where it has one, an estimate otherwise.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from supervisor.actions import Reprompt
from supervisor.assessment import Assessment
from supervisor.char_trajectory import CharTrajectory
from supervisor.conversation import ConversationMeasure, measures_conversation
from supervisor.core import Check, SupervisionCore, tile_words
from supervisor.errors import ScorerError, UpstreamError
from supervisor.events import EventObserver, GenerationResult, StopReason, UpstreamAttempt
from supervisor.policy import Policy
from supervisor.primaries.chunk import (
    Attempt,
    AttemptReason,
    Candidate,
    ChunkPrimary,
    UpstreamDelta,
    estimate_tokens,
)
from supervisor.state import per_category

#: max_tokens for a session whose caller set no limit (the upstream's own limit applies).
UNLIMITED_TOKENS = 1 << 20
_FINISH_FOR_STOP = {"halt": "content_filter", "scorer_error": "content_filter", "length": "length"}
_WORD = re.compile(r"[A-Za-z][A-Za-z'-]{2,}")


def finish_reason(result: GenerationResult, *, tool_calls: bool = False) -> str:
    """The OpenAI-style finish reason of a supervised answer (a halt reads as ``content_filter``)."""
    return _FINISH_FOR_STOP.get(result.stop_reason, "tool_calls" if tool_calls else "stop")


@dataclass
class Directive:
    """What the driver must do next. ``check``: score these texts and call ``resolve``."""

    released: str = ""
    check: list[str] | None = None
    restart: Attempt | None = None
    done: bool = False


class ChunkEngine:
    """The chunk engine's session. See the module docstring."""

    def __init__(
        self,
        policy: Policy,
        *,
        max_tokens: int,
        count_tokens: Callable[[str], int] = estimate_tokens,
        token_ids: Callable[[str], list[int] | None] | None = None,
        supervise: bool = True,
        observers: Sequence[EventObserver] = (),
        conversation: Sequence[Mapping[str, Any]] | None = None,
        measured_by: Any = None,
    ) -> None:
        self.policy = policy
        self.max_tokens = max_tokens
        self.count_tokens = count_tokens
        self.token_ids = token_ids
        self.supervise = supervise
        # Over an API there is no reranking: in the watch zone, text is held back until the state recovers.
        self.core = SupervisionCore(policy, can_steer=False, observers=list(observers))
        self.response = CharTrajectory(piece_tokens=policy.checkpoint_every)
        self._attempts: list[UpstreamAttempt] = []
        self._instruction: str | None = None
        self._logit_bias: dict[int, int] = {}
        self._pending: Check | Literal["words"] | _Candidates | None = None
        self._after_check: Literal["continue"] | None = None
        self._restart_reason: AttemptReason = "rollback"
        self._removed_words: list[str] = []
        self._finish_reason: str | None = None
        self._stream_tokens = 0
        self._retries = 0
        #: The messages before the response, to measure before it starts (chat mode; None: a bare text stream)
        self.conversation = (ConversationMeasure(conversation, measured_by, policy)
                             if conversation and supervise and measures_conversation(policy) else None)

    @property
    def result(self) -> GenerationResult | None:
        return self.core.result

    @property
    def released_text(self) -> str:
        return self.core.released_text

    @property
    def events(self) -> list[Any]:
        return list(self.core.events)

    @property
    def streamed_chars(self) -> int:
        """Non-zero once any response text was fed (kept characters plus discarded tokens)."""
        return self.response.end + self.core.usage.discarded_tokens

    def start_from(self, outcome: list[Assessment] | ScorerError) -> Directive:
        """The conversation's measurements came back (a scorer failure leaves the response without a prior: its
        own checks fail closed). Done, with its text released, when the conversation's action is a refusal or a
        halt (no upstream request is made)."""
        if self.conversation is None or isinstance(outcome, ScorerError):
            return Directive()
        opening = self.core.start_from(self.conversation.state(outcome))
        if opening.stop is not None:
            return self._done(opening.stop, opening.released)
        self._instruction = opening.instruction
        return Directive()

    # -- attempts -------------------------------------------------------------------------------
    def begin(self) -> Attempt:
        self.core.start()
        return self._attempt("start")

    def _close_attempt(self) -> None:
        if self._attempts and self._attempts[-1].completion_tokens is None:
            self._attempts[-1].completion_tokens = self._stream_tokens  # the server did not say: our count

    def _attempt(self, reason: AttemptReason, *, streaming: bool = False) -> Attempt:
        """The next request. After a rollback or re-prompt it asks for ``best_of`` candidates of one block, unless
        ``streaming`` (the candidates did not pass: stream as usual)."""
        self._close_attempt()
        prefix = self.response.response
        left = max(1, self.max_tokens - self.response.tokens)
        best_of = self.policy.best_of if reason in ("rollback", "reprompt") and not streaming else 1
        attempt = Attempt(
            index=len(self._attempts),
            reason=reason,
            prefix=prefix,
            instruction=self._instruction,
            logit_bias=dict(self._logit_bias),
            max_tokens=min(left, self.policy.best_of_block_tokens) if best_of > 1 else left,
            temperature_boost=self.policy.retry_temperature_boost if reason in ("rollback", "reprompt") else 0.0,
            candidates=best_of,
        )
        if best_of > 1:
            return attempt  # its requests are recorded when the candidates come back (choose)
        self._attempts.append(UpstreamAttempt(
            index=attempt.index, reason=reason, prefix_chars=len(prefix), logit_bias_entries=len(attempt.logit_bias),
        ))
        self._finish_reason = None
        self._stream_tokens = 0
        return attempt

    # -- the stream -----------------------------------------------------------------------------
    def feed(self, delta: UpstreamDelta) -> Directive:
        """One upstream delta. Returns a Directive that may ask for a check (nothing is released unchecked)."""
        record = self._attempts[-1]
        if delta.prompt_tokens is not None:
            record.prompt_tokens = delta.prompt_tokens
        if delta.completion_tokens is not None:
            record.completion_tokens = delta.completion_tokens
        if delta.finish_reason is not None:
            self._finish_reason = record.finish_reason = delta.finish_reason
        if not delta.text:
            return Directive()
        tokens = self.count_tokens(delta.text)
        self._stream_tokens += tokens
        self.core.usage.generated_tokens += tokens
        self.response.append(delta.text, tokens)
        if not self.supervise:
            return Directive(released=self.core.release(self.response, self.response.end))
        return self._ask(self.core.due(self.response))

    def end(self) -> Directive:
        """The upstream stream finished normally."""
        if not self.supervise:
            return self._done(self._stop_reason())
        check = self.core.due(self.response, final=True)
        return self._ask(check) if check is not None else self._done(self._stop_reason())

    def _ask(self, check: Check | None) -> Directive:
        if check is None:
            return Directive()
        self._pending = check
        return Directive(check=[self.response.text(start, end) for start, end in check.spans])

    def resolve(self, outcome: list[Assessment] | ScorerError) -> Directive:
        """The scorer's answer to the last ``Directive.check`` (or the error it raised)."""
        pending, self._pending = self._pending, None
        if pending == "words":
            if not isinstance(outcome, ScorerError):
                self._ban_words(outcome)
            return Directive(restart=self._attempt(self._restart_reason))
        if isinstance(pending, _Candidates):
            return self._chosen(pending, outcome)
        if pending is None:
            raise RuntimeError("resolve() called with no check pending")
        after, self._after_check = self._after_check, None
        decision = self.core.resolve(self.response, pending, outcome)
        if decision.target is not None:
            self.response.truncate(decision.target)
        if decision.stop is not None:
            reason = self._stop_reason() if decision.stop == "stop" else decision.stop
            return self._done(reason, decision.released)
        if decision.target is None:
            if after == "continue":
                return Directive(released=decision.released, restart=self._attempt("continue"))
            return Directive(released=decision.released)
        if isinstance(decision.action, Reprompt):
            self._instruction = decision.action.instruction
            self._restart_reason = "reprompt"
        else:
            self._restart_reason = "rollback"
        return self._ban_step(decision.removed_text)

    def _ban_step(self, removed: str) -> Directive:
        """Ask to score the words of the removed text (those to ban through logit_bias), or restart at once."""
        kept = self.response.response.lower()
        words = list(dict.fromkeys(w for w in _WORD.findall(removed) if w.lower() not in kept))
        if self.token_ids is None or not words or len(self._logit_bias) >= self.policy.max_logit_bias_entries:
            return Directive(restart=self._attempt(self._restart_reason))
        self._removed_words = words
        self._pending = "words"
        return Directive(check=list(words))

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

    # -- best-of-K ------------------------------------------------------------------------------
    def choose(self, attempt: Attempt, candidates: Sequence[Candidate]) -> Directive:
        """The candidates of a best-of-K ``attempt`` came back: asks to measure them (one batch: each candidate
        after the context window of the checked prefix, and in windows of a few words)."""
        start = self.response.window_start(self.response.end, self.policy.window_tokens)
        context = self.response.text(start, self.response.end)
        texts: list[str] = []
        owners: list[int] = []
        counts = [self.count_tokens(candidate.text) for candidate in candidates]
        for index, (candidate, count) in enumerate(zip(candidates, counts)):
            tokens = candidate.completion_tokens or count
            self.core.usage.generated_tokens += tokens
            self._attempts.append(UpstreamAttempt(
                index=len(self._attempts), reason="candidate", prefix_chars=len(attempt.prefix),
                logit_bias_entries=len(attempt.logit_bias), prompt_tokens=candidate.prompt_tokens,
                completion_tokens=tokens, finish_reason=candidate.finish_reason,
            ))
            pieces = [context + candidate.text, *_word_windows(candidate.text, self.policy.short_window_words)]
            texts.extend(pieces)
            owners.extend([index] * len(pieces))
        self._pending = _Candidates(attempt, list(candidates), counts, owners)
        return Directive(check=texts)

    def _chosen(self, pending: _Candidates, outcome: list[Assessment] | ScorerError) -> Directive:
        """Continue with the safest candidate that passes; with none (or no measurement), stream as usual: the
        checks that follow decide either way."""
        risks: list[float] = [0.0] * len(pending.candidates)
        passes = [True] * len(pending.candidates)
        if isinstance(outcome, ScorerError):
            passes = [False] * len(passes)
        else:
            for owner, assessment in zip(pending.owners, outcome):
                risks[owner] = max(risks[owner], assessment.risk)
                if self.core.controller.flags(per_category(assessment)):  # the rule a check would apply
                    passes[owner] = False
        usable = [i for i, ok in enumerate(passes) if ok and pending.candidates[i].text
                  and pending.candidates[i].finish_reason != "tool_calls"]
        if not usable:
            self._discard_candidates(pending, None)
            return Directive(restart=self._attempt(pending.attempt.reason, streaming=True))
        best = min(usable, key=lambda i: risks[i])
        chosen = pending.candidates[best]
        self._discard_candidates(pending, best)
        self.response.append(chosen.text, pending.counts[best])
        if chosen.finish_reason not in (None, "length") or self.response.tokens >= self.max_tokens:
            self._finish_reason = chosen.finish_reason or "length"
            check = self.core.due(self.response, final=True)
            return self._ask(check) if check is not None else self._done(self._stop_reason())
        check = self.core.due(self.response)
        if check is None:
            return Directive(restart=self._attempt("continue"))
        self._after_check = "continue"
        return self._ask(check)

    def _discard_candidates(self, pending: _Candidates, kept: int | None) -> None:
        self.core.usage.discarded_tokens += sum(count for i, count in enumerate(pending.counts) if i != kept)

    def fault(self, exc: BaseException) -> tuple[Attempt, float]:
        """The upstream failed mid-request. Returns the retry and how long to wait first; raises
        :class:`UpstreamError` (with the released text) once the policy's retries are spent."""
        if self._attempts:
            self._attempts[-1].error = f"{type(exc).__name__}: {exc}"
        self._pending = None
        self._after_check = None
        self._retries += 1
        if self._retries > self.policy.max_upstream_retries:
            self._finish("upstream_error", error=f"upstream failed {self._retries} times; last: {exc}")
            raise UpstreamError(
                f"the upstream model failed {self._retries} times (policy.max_upstream_retries="
                f"{self.policy.max_upstream_retries}); last error: {type(exc).__name__}: {exc}. "
                f"{len(self.released_text)} characters had been released; nothing unchecked was.",
                released_text=self.released_text,
                result=self.result,
                failures=self._retries,
                last_fault=str(exc),
            ) from exc
        # Only checked text survives: resume from the last passed checkpoint.
        target = max(self.core.estimator.safe_positions()[-1], self.core.released_position)
        removed = self.core.retreat(self.response, target)
        self.response.truncate(target)
        self.core.record("upstream_retry", self.response, target, removed_text=removed,
                         detail=f"{type(exc).__name__}: {exc}", unmeasured=True)
        retry_after = getattr(exc, "retry_after_s", None)
        wait = retry_after if retry_after is not None else self.policy.upstream_backoff_s * 2 ** (self._retries - 1)
        return self._attempt("retry"), min(float(wait), 60.0)

    def cancel(self) -> None:
        self._finish("cancelled")

    # -- the end --------------------------------------------------------------------------------
    def _stop_reason(self) -> StopReason:
        return "length" if self._finish_reason == "length" else "stop"

    def _done(self, reason: StopReason, released: str = "") -> Directive:
        self._finish(reason)
        return Directive(released=released, done=True)

    def _finish(self, reason: StopReason, *, error: str | None = None) -> None:
        if self.core.result is not None:
            return
        self._close_attempt()
        usage = self.core.usage
        usage.prompt_tokens = sum(a.prompt_tokens or 0 for a in self._attempts)
        usage.generated_tokens = sum(a.completion_tokens or 0 for a in self._attempts)
        model_text = self.response.text(0, self.core.released_position)
        self.core.finish(reason, completion_tokens=self.count_tokens(model_text) if model_text else 0,
                         attempts=self._attempts, error=error)


@dataclass
class _Candidates:
    attempt: Attempt
    candidates: list[Candidate]
    counts: list[int]  # each candidate's tokens, by our count
    owners: list[int]  # the candidate each measured text belongs to


def _word_windows(text: str, words: int) -> list[str]:
    """``text`` in windows of ``words`` whole words, tiled as the core tiles a checked stretch (none when 0)."""
    if words <= 0 or not text.strip():
        return []
    starts = [0, *(m.start() for m in re.finditer(r"(?<=\S)\s", text))]
    return [text[a:b] for a, b in tile_words(starts, len(text), words)]


def chunk_engine(
    primary: ChunkPrimary,
    request: Any,
    policy: Policy,
    *,
    max_tokens: int,
    supervise: bool = True,
    observers: Sequence[EventObserver] = (),
    conversation: Sequence[Mapping[str, Any]] | None = None,
    measured_by: Any = None,
) -> ChunkEngine:
    """An engine wired to ``primary``'s tokenizer for ``request``; ``conversation``: the messages it answers."""
    return ChunkEngine(
        policy,
        max_tokens=max_tokens,
        count_tokens=primary.token_counter(request),
        token_ids=primary.tokenizer(request),
        supervise=supervise,
        observers=observers,
        conversation=conversation,
        measured_by=measured_by,
    )
