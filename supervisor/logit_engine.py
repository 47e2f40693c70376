"""The logit engine: one supervised generation on a local primary, token by token.

Decode a token; when the supervision core (:mod:`supervisor.core`) says a check is due, measure its
spans (decoded text, or the primary's own hidden states for a state probe) and act on the decision:
release, steer the next tokens (rerank), roll back (crop the KV cache), re-prompt, or halt. Cadence,
windows, the state, the decisions, release and events are the core's; this engine adds sampling,
reranking, bans and KV truncation.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import numpy as np

from supervisor.actions import Reprompt, Rollback
from supervisor.assessment import Assessment
from supervisor.conversation import ConversationMeasure, measures_conversation
from supervisor.core import Check, Decision, Opening, SupervisionCore
from supervisor.errors import ScorerError
from supervisor.events import EventObserver, GenerationResult, StopReason
from supervisor.measuring import measure
from supervisor.messages import Message, with_instruction
from supervisor.policy import Policy
from supervisor.primaries.base import LogitPrimary
from supervisor.sampling import SamplingParams, sample
from supervisor.scorers.base import HiddenStateScorer, Scorer, in_own_thread
from supervisor.steering import CandidateValue, candidate_value, steer, word_continuations

_CONTENT_TOKEN = re.compile(r"^\s*[A-Za-z]{3,}\s*$")


@dataclass(frozen=True)
class Request:
    """What to generate: chat ``messages`` or a completion ``prompt`` (exactly one of them)."""

    messages: list[Message] | None
    prompt: str | None
    max_tokens: int
    sampling: SamplingParams


class TokenTrajectory:
    """The response as token ids; positions are token positions (a :class:`~supervisor.core.Trajectory`)."""

    def __init__(self, primary: LogitPrimary) -> None:
        self.primary = primary
        self.ids: list[int] = []
        self._pieces: dict[int, str] = {}

    @property
    def end(self) -> int:
        return len(self.ids)

    def text(self, start: int, end: int) -> str:
        whole = self.primary.decode(self.ids[:end])
        if start == 0:
            return whole
        before = self.primary.decode(self.ids[:start])
        return whole[len(before):] if whole.startswith(before) else self.primary.decode(self.ids[start:end])

    def tokens_at(self, token_position: int) -> int:
        return token_position

    def checkpoints_after(self, token_position: int, every: int) -> list[int]:
        return list(range(token_position + every, self.end + 1, every))

    def window_start(self, end: int, tokens: int) -> int:
        return max(0, end - tokens)

    def piece(self, token_id: int) -> str:
        """The token's text on its own (cached: asked for at every word-boundary test)."""
        piece = self._pieces.get(token_id)
        if piece is None:
            piece = self._pieces[token_id] = self.primary.decode([token_id])
        return piece

    def is_word_start(self, token_position: int) -> bool:
        if token_position <= 0:
            return True
        if token_position > len(self.ids):
            return False
        before = self.piece(self.ids[token_position - 1])
        if before[-1:].isspace():
            return True
        if token_position == len(self.ids):
            return False
        after = self.piece(self.ids[token_position])
        return after[:1].isspace() and "\ufffd" not in before


class LogitEngine:
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
        self.core = SupervisionCore(policy, can_steer=True, observers=list(observers))
        self.response = TokenTrajectory(primary)
        self._rng = np.random.default_rng(request.sampling.seed)
        self._prompt_ids: list[int] = []
        self._instruction: str | None = None
        self._banned_at: dict[int, set[int]] = {}
        self._penalties: dict[int, float] = {}
        self._boost_until = -1
        self._stop: StopReason | None = None
        self._cancelled = False
        self._ahead: tuple[Check, Future[list[Assessment] | ScorerError]] | None = None
        self._ahead_until = 0
        self._unglued_at = -1
        self._value: CandidateValue | None = candidate_value(policy.steering, primary) if supervise else None
        if self._value is not None:
            self.core.steering.value = self._value.name

    @property
    def result(self) -> GenerationResult | None:
        return self.core.result

    def cancel(self) -> None:
        """Ask the loop to stop at the next token (used by async consumers that go away)."""
        self._cancelled = True

    # -- the loop -------------------------------------------------------------------------------
    def run(self) -> Generator[str, None, None]:
        self.primary.claim()
        try:
            yield from self._run()
        finally:
            self.primary.free()
            self.core.finish(self._stop or ("cancelled" if self._cancelled else "stop"),
                             completion_tokens=self.core.released_position)

    def _run(self) -> Iterator[str]:
        core, response = self.core, self.response
        core.start()
        opening = self._start_from_conversation()
        if opening.stop is not None:  # a refusal or a halt: the primary is not asked
            self._stop = opening.stop
            yield from self._released(opening.released)
            return
        self._instruction = opening.instruction
        self._prompt_ids = self._build_prompt()
        self.primary.check_fits(len(self._prompt_ids), self.request.max_tokens)
        core.usage.prompt_tokens = len(self._prompt_ids)
        logits = self._timed_primary(self.primary.reset, self._prompt_ids)
        while self._stop is None and not self._cancelled:
            token_position = response.end
            finished = token_position >= self.request.max_tokens
            token = -1
            if not finished:
                token = self._choose(logits, token_position)
                finished = token in self.primary.eos_token_ids
            if finished and self._ahead is not None:
                decision = self._settle()  # the check still being scored comes first
                yield from self._released(decision.released)
                if decision.target is not None:
                    logits = self._act(decision)
                continue
            if finished:
                reason: StopReason = "length" if token_position >= self.request.max_tokens else "stop"
                check = core.due(response, final=True) if self.supervise else None
                if check is None:
                    yield from self._released(core.release(response, token_position))
                    self._stop = reason
                    break
                decision = self._check(check)
                yield from self._released(decision.released)
                if decision.stop == "stop":
                    self._stop = reason
                else:
                    logits = self._act(decision)
                continue
            response.ids.append(token)
            core.usage.generated_tokens += 1
            logits = self._timed_primary(self.primary.step, token)
            if not self.supervise:
                yield from self._released(core.release(response, response.end))
                continue
            if self._ahead is not None:
                if response.end < self._ahead_until:
                    continue  # decode on while the check is scored
                decision = self._settle()
                yield from self._released(decision.released)
                if decision.target is not None:
                    logits = self._act(decision)
                    continue
            check = core.due(response)
            if check is None:
                continue
            if self._scores_ahead():
                self._ahead = (check, in_own_thread(self._measure_texts, self._texts(check)))
                self._ahead_until = check.position + core.cadence()
                continue
            decision = self._check(check)
            yield from self._released(decision.released)
            if decision.target is not None:
                logits = self._act(decision)

    @staticmethod
    def _released(delta: str) -> Iterator[str]:
        if delta:
            yield delta

    # -- prompts ----------------------------------------------------------------------------------
    def _start_from_conversation(self) -> Opening:
        """Measure the messages before the response (what is not cached yet, in one batch) and start from them. A
        completion prompt is the request too: measured as one user turn, it is the prior (an RTP prompt that opens an
        insult starts its continuation in the watch zone, the steering's gain raised from the first token), without
        the conversation action: a safety instruction before a text to continue steered no better and read worse
        (benchmarks/steering.py, 2026-12-03: -47% against -51% toxicity, perplexity 24.6 against 23.0)."""
        request = self.request
        messages = request.messages if request.messages is not None else (
            [{"role": "user", "content": request.prompt}] if request.prompt else None)
        if not (self.supervise and messages and measures_conversation(self.policy)) or self._hidden_state_scorer():
            return Opening()  # (a state probe reads hidden states: measuring the messages as text costs a forward pass)
        measure = ConversationMeasure(messages, self.scorer, self.policy)
        outcome = self._measure_texts(measure.pending) if measure.pending else []
        if isinstance(outcome, ScorerError):  # a failure leaves no prior: the response's own checks fail closed
            return Opening()
        return self.core.start_from(measure.state(outcome), act=request.messages is not None)

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
    def _choose(self, logits: np.ndarray, token_position: int) -> int:
        adjusted = logits.astype(np.float64, copy=True)
        for token_id, penalty in self._penalties.items():
            adjusted[token_id] -= penalty
        for token_id in self._banned_at.get(token_position, ()):
            adjusted[token_id] = -np.inf
        if token_position == self._unglued_at:
            adjusted[word_continuations(self.primary)] = -np.inf
        temperature = self.request.sampling.temperature
        retrying = token_position < self._boost_until
        if retrying and temperature > 0 and self.policy.retry == "heat":
            temperature += self.policy.retry_temperature_boost
        if self._value is not None:
            steered = retrying and self.policy.retry == "steer"
            gain = self.policy.steering_gain_max if steered else self.core.steering_gain()
            if gain > 0:
                steer(adjusted, self.response, self._value, gain, self.policy.steering_top_k, self.core.steering,
                      self.policy.steering_value_floor)
        if self.core.bias_strength > 0:
            self._rerank(adjusted, self.core.bias_strength)
        elif retrying and self.policy.retry == "steer":  # only after a rollback, so only under supervision
            self._rerank(adjusted, self.policy.rerank_strength)
        return sample(adjusted, self.request.sampling, self._rng, temperature)

    def _rerank(self, logits: np.ndarray, strength: float) -> None:
        """Watch zone and retries: score the window extended by each top candidate with the supervisor's own
        scorer, push risky ones down."""
        if self._hidden_state_scorer() is not None:
            return  # a state probe would run the primary's own model once per candidate; its checks steer enough
        k = min(self.policy.rerank_top_k, len(logits))
        candidates = np.argpartition(-logits, k - 1)[:k]
        candidates = candidates[np.isfinite(logits[candidates])]
        if len(candidates) < 2:
            return
        window = self.response.ids[-self.policy.window_tokens :]
        texts = [self.primary.decode([*window, int(c)]) for c in candidates]
        assessments = measure(self.core, self.scorer, texts)
        if not isinstance(assessments, list):
            return  # steering is an optimisation; the next checkpoint still measures (and fails closed)
        for candidate, assessment in zip(candidates, assessments):
            logits[int(candidate)] -= strength * assessment.risk

    def _timed_primary(self, method: Callable[[Any], np.ndarray], argument: Any) -> np.ndarray:
        started = time.perf_counter()
        logits = method(argument)
        self.core.timings.primary_s += time.perf_counter() - started
        return logits

    # -- measurement ------------------------------------------------------------------------------
    def _hidden_state_scorer(self) -> HiddenStateScorer | None:
        """The scorer, when it measures this primary's own hidden states (the state probe)."""
        scorer = self.scorer
        return scorer if isinstance(scorer, HiddenStateScorer) and scorer.reads(self.primary) else None

    def _scores_ahead(self) -> bool:
        # The state probe reads the primary's own states, which decoding changes: it is measured in place.
        return self.policy.score_ahead and self._hidden_state_scorer() is None

    def _texts(self, check: Check) -> list[str]:
        return [self.primary.decode(self.response.ids[start:end]) for start, end in check.spans]

    def _measure_texts(self, texts: list[str]) -> list[Assessment] | ScorerError:
        return measure(self.core, self.scorer, texts)

    def _check(self, check: Check) -> Decision:
        """Measure the check's spans now: from the primary's own hidden states when the scorer reads them (no
        extra forward pass), else from their decoded text."""
        probe = self._hidden_state_scorer()
        if probe is not None:
            offset = len(self._prompt_ids)
            # an empty response is measured by the state after the prompt (its last token)
            context = [(offset + start - (end == start), offset + end) for start, end in check.spans]
            outcome = measure(self.core, self.scorer, context, probe.assess_context)
        else:
            outcome = self._measure_texts(self._texts(check))
        return self.core.resolve(self.response, check, outcome)

    def _settle(self) -> Decision:
        """The decision on the check that was scored ahead (waiting for the scorer if it is not done yet)."""
        assert self._ahead is not None
        check, future = self._ahead
        self._ahead = None
        started = time.perf_counter()
        outcome = future.result()
        self.core.timings.scorer_wait_s += time.perf_counter() - started
        return self.core.resolve(self.response, check, outcome)

    # -- actions ----------------------------------------------------------------------------------
    def _act(self, decision: Decision) -> np.ndarray:
        """Cut the response back to the decision's target; regenerate from there (or stop, on a halt)."""
        assert decision.target is not None
        target = decision.target
        removed_ids = self.response.ids[target:]
        self.response.ids = self.response.ids[:target]
        if decision.stop is not None:
            self._stop = decision.stop
            return np.empty(0)
        self._avoid(target, removed_ids)
        if isinstance(decision.action, Rollback):
            return self._timed_primary(self.primary.truncate, len(self._prompt_ids) + target)
        assert isinstance(decision.action, Reprompt)
        self._instruction = decision.action.instruction
        self._prompt_ids = self._build_prompt()
        return self._timed_primary(self.primary.reset, self._prompt_ids + self.response.ids)

    def _avoid(self, token_position: int, removed_ids: list[int]) -> None:
        """Make the retry differ: ban the rejected first token there; then steer the retry (retry='steer') or
        heat it and penalise the rejected words (retry='heat')."""
        if removed_ids:
            self._banned_at.setdefault(token_position, set()).add(removed_ids[0])
        if token_position == self.core.released_position and not self.response.is_word_start(token_position):
            # the released text ends in a word that the removed token had ended (it began with a space): the
            # retry must not glue letters onto that word, which the user already saw
            self._unglued_at = token_position
        self._boost_until = token_position + self.policy.checkpoint_every
        if self.policy.retry != "heat":
            return
        kept = set(self.response.ids)
        for token_id in set(removed_ids) - kept:
            if _CONTENT_TOKEN.match(self.primary.decode([token_id])):
                self._penalties[token_id] = self.policy.rejected_token_penalty

