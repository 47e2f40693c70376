"""The chunk engine on a scripted stream: what only it does (logit_bias bans, upstream faults, attempts,
async close). The policy's contract for both engines is in test_contract.py."""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import pytest

from supervisor import Policy
from supervisor.chunk_drivers import arun_chunked, run_chunked
from supervisor.chunk_engine import chunk_engine
from supervisor.errors import UpstreamError, UpstreamFault
from supervisor.primaries.chunk import Attempt, ChunkPrimary, UpstreamDelta
from tests.helpers import KeywordScorer

SAFE = "The weather is mild today and the park is open for everyone to enjoy a quiet walk."


class WordTokenizer:
    """One id per distinct piece (a word with or without its leading space)."""

    def __init__(self) -> None:
        self.ids: dict[str, int] = {}

    def __call__(self, text: str) -> list[int]:
        return [self.ids.setdefault(piece, len(self.ids)) for piece in re.findall(r" ?\S+", text)]


class ScriptedChunkPrimary(ChunkPrimary):
    """Streams a scripted answer per attempt (word by word); records what each request asked for."""

    name = "scripted-chunks"

    def __init__(self, answers: list[str], *, fault_after: dict[int, int] | None = None) -> None:
        self.answers = answers
        self.fault_after = fault_after or {}
        self.attempts: list[Attempt] = []
        self.closed = 0
        self.words = WordTokenizer()

    def tokenizer(self, request: Any) -> Any:
        return self.words

    def _deltas(self, attempt: Attempt) -> Iterator[UpstreamDelta]:
        answer = self.answers[min(attempt.index, len(self.answers) - 1)]
        pieces = re.findall(r" ?\S+", answer)
        for count, piece in enumerate(pieces):
            if self.fault_after.get(attempt.index) == count:
                raise UpstreamFault("connection reset by peer")
            yield UpstreamDelta(text=piece)
        yield UpstreamDelta(finish_reason="stop", prompt_tokens=10, completion_tokens=len(pieces))

    @contextmanager
    def open(self, request: Any, attempt: Attempt) -> Iterator[Iterator[UpstreamDelta]]:
        self.attempts.append(attempt)
        try:
            yield self._deltas(attempt)
        finally:
            self.closed += 1

    @asynccontextmanager
    async def aopen(self, request: Any, attempt: Attempt) -> AsyncIterator[AsyncIterator[UpstreamDelta]]:
        self.attempts.append(attempt)

        async def deltas() -> AsyncIterator[UpstreamDelta]:
            for delta in self._deltas(attempt):
                await asyncio.sleep(0)
                yield delta

        try:
            yield deltas()
        finally:
            self.closed += 1


POLICY = Policy(checkpoint_every=4, window_tokens=8, upstream_backoff_s=0.0)


def run(primary: ScriptedChunkPrimary, scorer: Any, policy: Policy = POLICY, max_tokens: int = 200) -> tuple[list[str], Any]:
    session = chunk_engine(primary, {}, policy, max_tokens=max_tokens)
    released = list(run_chunked(session, primary, {}, scorer))
    return released, session.result


def test_unsafe_continuation_is_rolled_back_and_banned_through_logit_bias() -> None:
    first = "The weather is mild today and then bad bad bad bad words pour out of it."
    primary = ScriptedChunkPrimary([first, " and the park is open for everyone."])
    released, result = run(primary, KeywordScorer(step=1.0))
    text = "".join(released)
    assert "bad" not in text
    assert result.count("rollback") == 1
    rollback = next(e for e in result.events if e.kind == "rollback")
    assert "bad" in rollback.removed_text
    retry = primary.attempts[1]
    assert retry.reason == "rollback"
    assert first.startswith(retry.prefix) and "bad" not in retry.prefix
    assert text == retry.prefix + " and the park is open for everyone."
    banned = {primary.words.ids[w] for w in ("bad", " bad") if w in primary.words.ids}
    assert banned and all(retry.logit_bias.get(i) == -100 for i in banned)
    assert retry.temperature_boost > 0
    assert len(result.attempts) == 2 and result.attempts[1].logit_bias_entries == len(retry.logit_bias)


def test_upstream_fault_resumes_from_checked_text_and_nothing_unchecked_escapes() -> None:
    primary = ScriptedChunkPrimary([SAFE], fault_after={0: 9})
    released, result = run(primary, KeywordScorer())
    assert "".join(released) == result.text
    assert [e.kind for e in result.events] == ["upstream_retry"]
    retry = primary.attempts[1]
    assert retry.reason == "retry" and SAFE.startswith(retry.prefix) and retry.prefix
    assert result.attempts[0].error and "connection reset" in result.attempts[0].error


def test_upstream_failing_beyond_the_budget_raises_with_the_released_text() -> None:
    policy = Policy(checkpoint_every=2, window_tokens=4, holdback_checkpoints=0, max_upstream_retries=1,
                    upstream_backoff_s=0.0)
    primary = ScriptedChunkPrimary([SAFE], fault_after={0: 7, 1: 0})
    session = chunk_engine(primary, {}, policy, max_tokens=200)
    released = ""
    with pytest.raises(UpstreamError) as caught:
        for delta in run_chunked(session, primary, {}, KeywordScorer()):
            released += delta
    assert released and caught.value.released_text == released
    assert caught.value.result.stop_reason == "upstream_error"
    assert SAFE.startswith(released)


def test_max_tokens_left_shrinks_on_retries() -> None:
    primary = ScriptedChunkPrimary(["The weather is mild today and bad bad bad bad", " it is fine."])
    run(primary, KeywordScorer(), max_tokens=50)
    retry = primary.attempts[1]
    assert retry.max_tokens == 50 - len(WordTokenizer()(retry.prefix))


def test_async_twin_gives_the_same_answer_and_closing_early_closes_upstream() -> None:
    answers = ["The weather is mild today and then bad bad bad bad words.", " and the park is open."]
    sync_primary = ScriptedChunkPrimary(answers)
    sync_text = "".join(run(sync_primary, KeywordScorer())[0])

    async def collect() -> str:
        primary = ScriptedChunkPrimary(answers)
        session = chunk_engine(primary, {}, POLICY, max_tokens=200)
        return "".join([d async for d in arun_chunked(session, primary, {}, KeywordScorer())])

    assert asyncio.run(collect()) == sync_text

    primary = ScriptedChunkPrimary([SAFE * 3])
    session = chunk_engine(primary, {}, Policy(checkpoint_every=2, holdback_checkpoints=0), max_tokens=500)
    stream = run_chunked(session, primary, {}, KeywordScorer())
    first = next(stream)
    stream.close()
    assert first and primary.closed == 1
    assert session.result is not None and session.result.stop_reason == "cancelled"
    assert session.result.text == first


# -- best-of-K after a rollback ------------------------------------------------------------------------
class CandidatesPrimary(ChunkPrimary):
    """Streams ``first`` on the first request; every later request (a candidate, or the stream after one) writes
    the next of ``later`` in turn."""

    name = "candidates"

    def __init__(self, first: str, later: list[str]) -> None:
        self.first, self.later, self.requests = first, later, 0
        self.attempts: list[Attempt] = []
        self._lock = threading.Lock()

    def _text(self, attempt: Attempt) -> str:
        with self._lock:
            self.attempts.append(attempt)
            if attempt.index == 0:
                return self.first
            text = self.later[self.requests % len(self.later)]
            self.requests += 1
            return text

    def _deltas(self, text: str) -> Iterator[UpstreamDelta]:
        for word in re.findall(r"\s*\S+", text):
            yield UpstreamDelta(text=word)
        yield UpstreamDelta(finish_reason="stop", completion_tokens=len(text.split()))

    @contextmanager
    def open(self, request: Any, attempt: Attempt) -> Iterator[Iterator[UpstreamDelta]]:
        yield self._deltas(self._text(attempt))

    @asynccontextmanager
    async def aopen(self, request: Any, attempt: Attempt) -> AsyncIterator[AsyncIterator[UpstreamDelta]]:
        text = self._text(attempt)

        async def deltas() -> AsyncIterator[UpstreamDelta]:
            for delta in self._deltas(text):
                yield delta

        yield deltas()


@pytest.mark.parametrize("use_async", [False, True])
def test_best_of_k_continues_with_the_safest_candidate_that_passes(use_async: bool) -> None:
    from supervisor import Supervisor
    from tests.helpers import KeywordScorer

    primary = CandidatesPrimary(" the park is open bad bad bad", [" bad news again", " a quiet walk", " bad bad"])
    policy = Policy(best_of=3, best_of_block_tokens=8, checkpoint_every=4, first_checkpoint_tokens=4, window_tokens=8)
    sup = Supervisor(scorer=KeywordScorer(word="bad", step=0.7), policy=policy)
    messages = [{"role": "user", "content": "hi"}]
    if use_async:
        result = asyncio.run(sup.agenerate(primary, messages, max_tokens=50))
    else:
        result = sup.generate(primary, messages, max_tokens=50)
    assert "bad" not in result.text
    # (back to " the park is": "open" ended the first delta, a word still in progress when it was checked)
    assert result.text.startswith(" the park is ") and result.text.endswith(" a quiet walk")
    reasons = [a.reason for a in result.attempts]
    assert reasons[:4] == ["start", "candidate", "candidate", "candidate"]
    candidate_requests = [a for a in primary.attempts if a.candidates == 3]
    assert len(candidate_requests) == 3 and all(a.max_tokens == 8 for a in candidate_requests)
    assert result.count("rollback") == 1


def test_best_of_k_streams_as_usual_when_no_candidate_passes() -> None:
    from supervisor import Supervisor
    from tests.helpers import KeywordScorer

    primary = CandidatesPrimary(" the park is open bad bad bad", [" bad", " bad bad", " bad one", " fine now."])
    policy = Policy(best_of=3, checkpoint_every=4, first_checkpoint_tokens=4, window_tokens=8, max_rollbacks=4)
    result = Supervisor(scorer=KeywordScorer(word="bad", step=0.7), policy=policy).generate(
        primary, [{"role": "user", "content": "hi"}], max_tokens=50)
    assert "bad" not in result.text
    reasons = [a.reason for a in result.attempts]
    assert reasons[1:4] == ["candidate"] * 3 and reasons[4] == "rollback"  # then one plain stream: " fine now."
    assert result.text.endswith(" fine now.")
