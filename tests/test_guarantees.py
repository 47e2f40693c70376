"""The guarantees, as properties over random texts, delta sizes, flag positions and faults, for both engines.

- Nothing unchecked is released: every released character lay inside a window that the scorer passed.
  A marker character stands for harm at a random position; the scorer flags every window that holds it,
  so a marker in the released text is a character that no passed check covered.
- Released text is never retracted: the deltas handed out concatenate to ``result.text`` (or, when the
  upstream gives up, to ``UpstreamError.released_text``).
- A halt, a scorer fault and an upstream that keeps failing release nothing unchecked.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from supervisor import Policy
from supervisor.assessment import Assessment
from supervisor.chunk_session import arun_chunked, chunk_session, run_chunked
from supervisor.errors import UpstreamError, UpstreamFault
from supervisor.primaries.chunk import Attempt, ChunkPrimary, UpstreamDelta, estimate_tokens
from supervisor.sampling import SamplingParams
from supervisor.scorers.base import BaseScorer
from supervisor.session import Request, Session
from tests.helpers import ScriptedPrimary

MARK = "#"
PROPERTY_SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


class MarkerScorer(BaseScorer):
    """Flags every text holding the marker; raises on the calls listed in ``faults``."""

    name = "marker"

    def __init__(self, faults: frozenset[int] = frozenset()) -> None:
        self.faults = faults
        self.calls = 0

    def assess(self, texts: Sequence[str]) -> list[Assessment]:
        call, self.calls = self.calls, self.calls + 1
        if call in self.faults:
            raise RuntimeError(f"scorer fault on call {call}")
        return [Assessment.from_categories({"toxicity": 1.0 if MARK in text else 0.0}) for text in texts]


class CutPrimary(ChunkPrimary):
    """Streams one answer per attempt: its deltas as drawn or, with ``sizes``, the answer re-cut into deltas of
    those sizes (cycled). The upstream fails before the deltas listed in ``faults`` as ``(attempt, delta)``."""

    name = "cut"

    def __init__(self, answers: list[list[str]], sizes: list[int] | None, faults: frozenset[tuple[int, int]],
                 count_tokens: Callable[[str], int]) -> None:
        self.answers, self.sizes, self.faults, self.count_tokens = answers, sizes, faults, count_tokens

    def token_counter(self, request: Any) -> Callable[[str], int]:
        return self.count_tokens

    def _pieces(self, attempt: Attempt) -> list[str]:
        deltas = self.answers[min(attempt.index, len(self.answers) - 1)]
        if self.sizes is None:
            return deltas
        text, pieces, offset = "".join(deltas), [], 0
        while offset < len(text):
            size = self.sizes[len(pieces) % len(self.sizes)]
            pieces.append(text[offset:offset + size])
            offset += size
        return pieces

    def _deltas(self, attempt: Attempt) -> Iterator[UpstreamDelta]:
        for index, piece in enumerate(self._pieces(attempt)):
            if (attempt.index, index) in self.faults:
                raise UpstreamFault("connection reset by peer")
            yield UpstreamDelta(text=piece)
        yield UpstreamDelta(finish_reason="stop")

    @contextmanager
    def open(self, request: Any, attempt: Attempt) -> Iterator[Iterator[UpstreamDelta]]:
        yield self._deltas(attempt)

    @asynccontextmanager
    async def aopen(self, request: Any, attempt: Attempt) -> AsyncIterator[AsyncIterator[UpstreamDelta]]:
        async def deltas() -> AsyncIterator[UpstreamDelta]:
            for delta in self._deltas(attempt):
                await asyncio.sleep(0)
                yield delta

        yield deltas()


WORDS = ["the", "park", "is", "open", "walk", "a", "quiet", ",", ".", "\n", "friends", "sun", "x", "extraordinarily"]
words = st.lists(st.sampled_from(WORDS), min_size=1, max_size=3).map(lambda w: " " + " ".join(w))
long_run = st.lists(st.sampled_from(WORDS), min_size=20, max_size=80).map(lambda w: " " + " ".join(w))
flagged = st.sampled_from([MARK, f" {MARK}", f"x{MARK}", f" a {MARK} b"])
deltas = st.lists(st.one_of(words, words, long_run, flagged), max_size=30)
texts = deltas.map("".join)
delta_sizes = st.one_of(
    st.none(),                            # the deltas as drawn: small, large and flagged ones mixed
    st.lists(st.integers(1, 250), min_size=1, max_size=12),
    st.just([1]),                         # many 1-character deltas
    st.just([100_000]),                   # the whole answer in one delta
    st.tuples(st.integers(1, 4), st.integers(100, 400)).map(list),  # a small delta, then a large one
)
token_counters = st.sampled_from([estimate_tokens, len, lambda text: 1])  # 1: a tokenizer that undercounts


@st.composite
def policies(draw: st.DrawFn) -> Policy:
    every = draw(st.integers(1, 12))
    return Policy(
        checkpoint_every=every,
        window_tokens=every + draw(st.integers(0, 16)),
        full_window_every=draw(st.integers(1, 5)),
        holdback_checkpoints=draw(st.integers(0, 2)),
        max_rollbacks=draw(st.integers(0, 3)),
        max_reprompts=draw(st.integers(0, 1)),
        max_upstream_retries=draw(st.integers(0, 2)),
        upstream_backoff_s=0.0,
        first_checkpoint_tokens=draw(st.integers(1, 16)),
        score_ahead=draw(st.booleans()),
    )


def check_released(released: list[str], result_text: str) -> None:
    text = "".join(released)
    assert text == result_text, "released deltas must concatenate to the result (nothing retracted)"
    assert MARK not in text, f"unchecked text released: {text!r}"


def _chunk_case(answers: list[list[str]], sizes: list[int] | None, upstream_faults: frozenset[tuple[int, int]],
                count_tokens: Callable[[str], int], policy: Policy) -> tuple[CutPrimary, Any]:
    primary = CutPrimary(answers, sizes, upstream_faults, count_tokens)
    return primary, chunk_session(primary, None, policy, max_tokens=10_000)


@PROPERTY_SETTINGS
@given(
    answers=st.lists(deltas, min_size=1, max_size=4),
    sizes=delta_sizes,
    scorer_faults=st.frozensets(st.integers(0, 30), max_size=3),
    upstream_faults=st.frozensets(st.tuples(st.integers(0, 4), st.integers(0, 20)), max_size=3),
    count_tokens=token_counters,
    policy=policies(),
)
def test_chunk_engine_never_releases_unchecked_text(
    answers: list[list[str]], sizes: list[int] | None, scorer_faults: frozenset[int],
    upstream_faults: frozenset[tuple[int, int]], count_tokens: Callable[[str], int], policy: Policy,
) -> None:
    primary, session = _chunk_case(answers, sizes, upstream_faults, count_tokens, policy)
    released: list[str] = []
    try:
        for piece in run_chunked(session, primary, None, MarkerScorer(scorer_faults)):
            released.append(piece)
    except UpstreamError as exc:
        check_released(released, exc.released_text)
        return
    assert session.result is not None
    check_released(released, session.result.text)


@settings(PROPERTY_SETTINGS, max_examples=60)
@given(
    answers=st.lists(deltas, min_size=1, max_size=3),
    sizes=delta_sizes,
    scorer_faults=st.frozensets(st.integers(0, 30), max_size=2),
    upstream_faults=st.frozensets(st.tuples(st.integers(0, 3), st.integers(0, 20)), max_size=2),
    policy=policies(),
)
def test_async_chunk_engine_never_releases_unchecked_text(
    answers: list[list[str]], sizes: list[int] | None, scorer_faults: frozenset[int],
    upstream_faults: frozenset[tuple[int, int]], policy: Policy,
) -> None:
    primary, session = _chunk_case(answers, sizes, upstream_faults, estimate_tokens, policy)

    async def consume() -> list[str]:
        released: list[str] = []
        try:
            async for piece in arun_chunked(session, primary, None, MarkerScorer(scorer_faults)):
                released.append(piece)
        except UpstreamError as exc:
            check_released(released, exc.released_text)
            raise
        return released

    try:
        released = asyncio.run(consume())
    except UpstreamError:
        return
    assert session.result is not None
    check_released(released, session.result.text)


@PROPERTY_SETTINGS
@given(
    script=texts,
    fallback=texts,
    scorer_faults=st.frozensets(st.integers(0, 60), max_size=3),
    policy=policies(),
    max_tokens=st.integers(1, 300),
)
def test_logit_engine_never_releases_unchecked_text(
    script: str, fallback: str, scorer_faults: frozenset[int], policy: Policy, max_tokens: int,
) -> None:
    primary = ScriptedPrimary(script, fallback=fallback or " ok.")
    request = Request(messages=None, prompt="Say something.", max_tokens=max_tokens,
                      sampling=SamplingParams(temperature=0.0))
    session = Session(primary, MarkerScorer(scorer_faults), policy, request)
    released = list(session.run())
    assert session.result is not None
    check_released(released, session.result.text)


def test_the_reported_case_a_flagged_word_before_a_large_delta() -> None:
    """Issue 10: "Fuck" (lexical risk 1.0) then one ~25-word delta was released before any check saw it."""
    from supervisor.chunk_session import ChunkSession, settle

    pieces = [MARK, " you are great and the weather is mild today and the park is open for everyone to enjoy "
                    "a quiet walk with friends and family in the afternoon sun",
              " and we all had a very good time there today."]
    session = ChunkSession(Policy(), max_tokens=1000)
    session.begin()
    scorer = MarkerScorer()
    out = "".join(settle(session, session.feed(UpstreamDelta(text=piece)), scorer).released for piece in pieces)
    out += settle(session, session.end(), scorer).released
    assert MARK not in out
    assert [event.kind for event in session.events][:1] == ["rollback"]
