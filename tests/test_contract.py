"""The policy's contract, run against both engines: wherever the policy says what happens, the logit engine
(a local primary, token by token) and the chunk engine (a hosted stream) behave the same.

Both scripted primaries write one character per token (the chunk one streams one character per delta and
counts characters as tokens), so checkpoints, windows and event positions can be compared exactly.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import pytest

from supervisor import GenerationResult, Policy, Supervisor
from supervisor.primaries.chunk import Attempt, ChunkPrimary, UpstreamDelta
from supervisor.scorers.base import Scorer
from tests.helpers import ConstantScorer, FailingScorer, KeywordScorer, ScriptedPrimary

ENGINES = ["logit", "chunk"]
SAFE = "the park is open and the weather is mild today."
#: One scale of windows, releases at checkpoints, no continuous steering: the cadence tests count exact spans.
ONE_SCALE: dict[str, Any] = {"short_window_words": 0, "release_whole_words": False, "steering": "off"}


class CharChunkPrimary(ChunkPrimary):
    """A hosted model that streams ``script`` one character per delta, and ``fallback`` on every retry."""

    name = "char-chunks"

    def __init__(self, script: str, fallback: str) -> None:
        self.script, self.fallback = script, fallback
        self.attempts: list[Attempt] = []

    def token_counter(self, request: Any) -> Callable[[str], int]:
        return len

    def _deltas(self, attempt: Attempt) -> Iterator[UpstreamDelta]:
        text = self.script if attempt.index == 0 else self.fallback
        for char in text[: attempt.max_tokens]:
            yield UpstreamDelta(text=char)
        yield UpstreamDelta(finish_reason="stop")

    @contextmanager
    def open(self, request: Any, attempt: Attempt) -> Iterator[Iterator[UpstreamDelta]]:
        self.attempts.append(attempt)
        yield self._deltas(attempt)

    @asynccontextmanager
    async def aopen(self, request: Any, attempt: Attempt) -> AsyncIterator[AsyncIterator[UpstreamDelta]]:
        self.attempts.append(attempt)

        async def deltas() -> AsyncIterator[UpstreamDelta]:
            for delta in self._deltas(attempt):
                yield delta

        yield deltas()


class Counted:
    """Counts the calls of the scorer it wraps."""

    def __init__(self, scorer: Any) -> None:
        self.scorer, self.name, self.calls = scorer, scorer.name, 0

    def assess(self, texts: Any) -> Any:
        self.calls += 1
        return self.scorer.assess(texts)

    async def aassess(self, texts: Any) -> Any:
        self.calls += 1
        return await self.scorer.aassess(texts)


def run(engine: str, script: str, scorer: Scorer, policy: Policy, *, fallback: str = " all good.",
        max_tokens: int = 200) -> tuple[list[str], GenerationResult, list[int]]:
    """Released deltas, the result, and how many scorer calls had been made when each delta was released. The logit
    engine runs in completion mode (no conversation), so the chunk engine's conversation is not measured either:
    like for like (tests/test_conversation.py covers the conversation)."""
    policy = policy.model_copy(update={"conversation_prior": 0.0, "conversation_action": "none"})
    counted = Counted(scorer)
    sup = Supervisor(scorer=counted, policy=policy)  # type: ignore[arg-type]
    if engine == "logit":
        stream = sup.stream(ScriptedPrimary(script, fallback=fallback), prompt="Go.", max_tokens=max_tokens,
                            temperature=0.0)
    else:
        stream = sup.stream(CharChunkPrimary(script, fallback), [{"role": "user", "content": "Go."}],
                            max_tokens=max_tokens)
    deltas, calls = [], []
    for delta in stream:
        deltas.append(delta)
        calls.append(counted.calls)
    assert stream.result is not None
    assert "".join(deltas) == stream.result.text
    return deltas, stream.result, calls


@pytest.mark.parametrize("engine", ENGINES)
def test_cadence_starts_short_and_grows_to_checkpoint_every(engine: str) -> None:
    policy = Policy(checkpoint_every=8, first_checkpoint_tokens=2, window_tokens=16)
    _, result, _ = run(engine, SAFE, ConstantScorer(0.0), policy)
    # the first checkpoint, due at 2 ("th"), waits for its word to end ("the "): only a word in progress is never
    # measured (see test_stream_check: "ho" + "me"); the gap then doubles from there
    assert [p.position for p in result.trace] == [4, 8, 16, 24, 32, 40, len(SAFE)]
    assert result.trace[-1].final and result.text == SAFE and result.stop_reason == "stop"


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("lag", [0, 1, 2])
def test_text_is_released_only_behind_passed_checkpoints(engine: str, lag: int) -> None:
    scorer = KeywordScorer()
    policy = Policy(checkpoint_every=4, first_checkpoint_tokens=4, window_tokens=8, holdback_checkpoints=lag,
                    **ONE_SCALE)
    deltas, result, calls = run(engine, SAFE, scorer, policy)
    assert result.text == SAFE
    assert calls[0] == lag + 1, "the first text waits for lag + 1 passed checkpoints"
    released = 0
    for delta, made in zip(deltas[:-1], calls):
        released += len(delta)
        if made < len(result.trace):  # not the final check: up to where that checkpoint's windows measured (its
            # last whole word: a check comes once the word at its position has ended)
            checked = result.trace[made - 1 - lag].position
            assert released == _word_start_before(SAFE, checked)


@pytest.mark.parametrize("engine", ENGINES)
def test_watch_zone_is_entered_once_and_scores_the_whole_response_at_every_checkpoint(engine: str) -> None:
    scorer = ConstantScorer(0.45)
    policy = Policy(checkpoint_every=4, first_checkpoint_tokens=4, window_tokens=8, full_window_every=1000,
                    watch_threshold=0.35, act_threshold=0.6, **ONE_SCALE)
    _, result, _ = run(engine, SAFE, scorer, policy)
    assert [e.kind for e in result.events] == ["bias"]
    assert result.events[0].position == 4
    checks = [texts for texts in scorer.calls if texts[-1] in SAFE and SAFE.startswith(texts[-1])]
    after_first = [texts for texts in checks[1:] if len(texts[-1]) > policy.window_tokens]
    # every check after the first: its window(s) (two when the check before waited for a word to end) and, last,
    # the whole response so far
    assert after_first and all(len(texts) >= 2 and len(texts) <= 3 for texts in after_first)
    assert result.text == SAFE


@pytest.mark.parametrize("engine", ENGINES)
def test_whole_response_is_scored_at_the_policy_cadence(engine: str) -> None:
    scorer = KeywordScorer()
    policy = Policy(checkpoint_every=4, first_checkpoint_tokens=4, window_tokens=8, full_window_every=3, **ONE_SCALE)
    run(engine, SAFE, scorer, policy)
    whole = [i + 1 for i, texts in enumerate(scorer.calls)
             if len(texts) >= 2 and SAFE.startswith(texts[-1]) and len(texts[-1]) > policy.window_tokens]
    assert whole[:3] == [3, 6, 9]


@pytest.mark.parametrize("engine", ENGINES)
def test_escalation_ladder_rollbacks_then_reprompts_then_halt(engine: str) -> None:
    # no steering: on a one-character-per-token primary it would break "bad" into "ba." instead of climbing the ladder
    policy = Policy(checkpoint_every=4, first_checkpoint_tokens=4, window_tokens=8, max_rollbacks=2,
                    max_reprompts=1, halt_message="[stopped]", steering="off", retry="heat")
    _, result, _ = run(engine, "ok " + "bad " * 20, KeywordScorer(step=1.0), policy, fallback="bad bad bad bad")
    assert [e.kind for e in result.events] == ["rollback", "rollback", "reprompt", "halt"]
    assert result.stop_reason == "halt" and result.text.endswith("[stopped]") and "bad" not in result.text
    # "ok b" passed the first checkpoint, but a rollback goes back to the end of a word ("ok", the retry writes
    # its own space); the retry fails at the same place, so the second rollback goes one safe checkpoint further
    # back (to the start); positions in tokens
    assert [e.position for e in result.events] == [2, 0, 0, 0]
    assert all(e.removed_text for e in result.events)


@pytest.mark.parametrize("engine", ENGINES)
def test_a_rollback_resumes_from_the_last_safe_checkpoint(engine: str) -> None:
    policy = Policy(checkpoint_every=4, first_checkpoint_tokens=4, window_tokens=8)
    script = "the park is open bad words follow here"
    _, result, _ = run(engine, script, KeywordScorer(step=1.0), policy, fallback=" and sunny.")
    assert [e.kind for e in result.events] == ["rollback"]
    assert result.text.startswith("the park is open") and "bad" not in result.text
    assert result.text.endswith(" and sunny.")


@pytest.mark.parametrize("engine", ENGINES)
def test_scorer_failure_fails_closed_and_releases_nothing_unchecked(engine: str) -> None:
    policy = Policy(checkpoint_every=4, first_checkpoint_tokens=4, window_tokens=8, halt_message="[x]")
    _, result, _ = run(engine, SAFE, FailingScorer(fail_after=1), policy)
    assert result.stop_reason == "scorer_error" and result.text == "[x]"
    assert [e.kind for e in result.events] == ["scorer_error"] and "fail_closed" in result.events[0].detail
    assert result.error and "supervisor model crashed" in result.error


@pytest.mark.parametrize("engine", ENGINES)
def test_scorer_failure_fail_open_releases_and_records(engine: str) -> None:
    policy = Policy(checkpoint_every=4, first_checkpoint_tokens=4, window_tokens=8, on_scorer_error="fail_open")
    _, result, _ = run(engine, SAFE, FailingScorer(fail_after=1), policy)
    assert result.text == SAFE and result.stop_reason == "stop"
    assert result.events and all(e.kind == "scorer_error" and "fail_open" in e.detail for e in result.events)


@pytest.mark.parametrize("engine", ENGINES)
def test_observers_see_every_event_as_it_happens(engine: str) -> None:
    seen: list[Any] = []
    policy = Policy(checkpoint_every=4, first_checkpoint_tokens=4, window_tokens=8)
    sup = Supervisor(scorer=KeywordScorer(step=1.0), policy=policy, observers=[seen.append])
    script, fallback = "the park is open bad words follow here", " and sunny."
    if engine == "logit":
        result = sup.generate(ScriptedPrimary(script, fallback=fallback), prompt="Go.", max_tokens=100,
                              temperature=0.0)
    else:
        result = sup.generate(CharChunkPrimary(script, fallback), [{"role": "user", "content": "Go."}],
                              max_tokens=100)
    assert seen == result.events and seen


@pytest.mark.parametrize("engine", ENGINES)
def test_async_twin_gives_the_same_result(engine: str) -> None:
    policy = Policy(checkpoint_every=4, first_checkpoint_tokens=4, window_tokens=8)
    script, fallback = "the park is open bad words follow here", " and sunny."
    _, expected, _ = run(engine, script, KeywordScorer(step=1.0), policy, fallback=fallback)
    sup = Supervisor(scorer=KeywordScorer(step=1.0), policy=policy)

    async def generate() -> GenerationResult:
        if engine == "logit":
            return await sup.agenerate(ScriptedPrimary(script, fallback=fallback), prompt="Go.", max_tokens=200,
                                       temperature=0.0)
        return await sup.agenerate(CharChunkPrimary(script, fallback), [{"role": "user", "content": "Go."}],
                                   max_tokens=200)

    result = asyncio.run(generate())
    assert result.text == expected.text
    assert [(e.kind, e.position) for e in result.events] == [(e.kind, e.position) for e in expected.events]


def _word_start_before(known: str, position: int) -> int:
    """The latest word start at or before ``position`` when ``known`` had been written."""
    while position > 0 and not (known[position - 1].isspace() or known[position:position + 1].isspace()):
        position -= 1
    return position


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("lag", [0, 1])
def test_text_is_released_at_word_starts_behind_passed_checkpoints(engine: str, lag: int) -> None:
    policy = Policy(checkpoint_every=4, first_checkpoint_tokens=4, window_tokens=8, holdback_checkpoints=lag,
                    steering="off")
    deltas, result, calls = run(engine, SAFE, KeywordScorer(), policy)
    assert result.text == SAFE
    released = 0
    for delta, made in zip(deltas[:-1], calls):
        released += len(delta)
        assert SAFE[released - 1].isspace() or SAFE[released].isspace(), f"a word split: {SAFE[:released]!r}"
        if made < len(result.trace):  # released when the check at trace[made - 1] passed: up to where the lagged
            # checkpoint's windows measured (the last whole word then)
            checked = result.trace[made - 1 - lag].position
            assert released == _word_start_before(SAFE, checked)


@pytest.mark.parametrize("engine", ENGINES)
def test_short_windows_of_whole_words_cover_every_released_word(engine: str) -> None:
    scorer = KeywordScorer()
    policy = Policy(checkpoint_every=8, first_checkpoint_tokens=8, window_tokens=24, short_window_words=3,
                    steering="off")
    _, result, _ = run(engine, SAFE, scorer, policy)
    assert result.text == SAFE
    short = {t for texts in scorer.calls for t in texts if len(t.split()) <= 3}
    assert short, "no short window was measured"
    for text in short:  # whole words: each starts and ends at a word boundary of the response
        start = SAFE.index(text)
        assert start == 0 or SAFE[start - 1].isspace() or text[0].isspace(), text
    for word in SAFE.split():
        assert any(word in t.split() for t in short), f"{word!r} was never measured in a short window"
