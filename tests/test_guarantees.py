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

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from supervisor import Policy
from supervisor.assessment import Assessment
from supervisor.chunk_drivers import arun_chunked, run_chunked
from supervisor.chunk_engine import chunk_engine
from supervisor.errors import UpstreamError, UpstreamFault
from supervisor.logit_engine import LogitEngine, Request
from supervisor.primaries.chunk import Attempt, ChunkPrimary, UpstreamDelta, estimate_tokens
from supervisor.sampling import SamplingParams
from supervisor.scorers.base import BaseScorer
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
        short_window_words=draw(st.integers(0, 6)),
        release_whole_words=draw(st.booleans()),
        retry=draw(st.sampled_from(["steer", "heat"])),
        steering=draw(st.sampled_from(["off", "lexical"])),
        best_of=draw(st.sampled_from([1, 1, 2, 3])),
        best_of_block_tokens=draw(st.integers(1, 24)),
    )


def check_released(released: list[str], result_text: str) -> None:
    text = "".join(released)
    assert text == result_text, "released deltas must concatenate to the result (nothing retracted)"
    assert MARK not in text, f"unchecked text released: {text!r}"


def _chunk_case(answers: list[list[str]], sizes: list[int] | None, upstream_faults: frozenset[tuple[int, int]],
                count_tokens: Callable[[str], int], policy: Policy) -> tuple[CutPrimary, Any]:
    primary = CutPrimary(answers, sizes, upstream_faults, count_tokens)
    return primary, chunk_engine(primary, None, policy, max_tokens=10_000)


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
    session = LogitEngine(primary, MarkerScorer(scorer_faults), policy, request)
    released = list(session.run())
    assert session.result is not None
    check_released(released, session.result.text)


def test_the_reported_case_a_flagged_word_before_a_large_delta() -> None:
    """Issue 10: "Fuck" (lexical risk 1.0) then one ~25-word delta was released before any check saw it."""
    from supervisor.chunk_drivers import answer_checks
    from supervisor.chunk_engine import ChunkEngine

    pieces = [MARK, " you are great and the weather is mild today and the park is open for everyone to enjoy "
                    "a quiet walk with friends and family in the afternoon sun",
              " and we all had a very good time there today."]
    session = ChunkEngine(Policy(), max_tokens=1000)
    session.begin()
    scorer = MarkerScorer()
    out = "".join(answer_checks(session, session.feed(UpstreamDelta(text=piece)), scorer).released for piece in pieces)
    out += answer_checks(session, session.end(), scorer).released
    assert MARK not in out
    assert [event.kind for event in session.events][:1] == ["rollback"]


# -- two scales, whole words ------------------------------------------------------------------------
SHORT = 6


class DilutedMarkerScorer(BaseScorer):
    """Sees the marker only in a text of at most SHORT words, as a linear scorer sees one profane word among many
    benign ones: a marked word in a long window passes, so only the short windows can catch it."""

    name = "diluted-marker"

    def assess(self, texts: Sequence[str]) -> list[Assessment]:
        return [Assessment.from_categories({"toxicity": float(MARK in t and len(t.split()) <= SHORT)}) for t in texts]


spaced_words = st.lists(st.sampled_from([w for w in WORDS if w.strip()]), min_size=1, max_size=8).map(
    lambda w: " " + " ".join(w))
spaced_flagged = st.sampled_from([f" {MARK}", f" x{MARK}y", f" a {MARK} b", f" un{MARK}"])
spaced_deltas = st.lists(st.one_of(spaced_words, spaced_words, long_run, spaced_flagged), max_size=20)


@st.composite
def two_scale_policies(draw: st.DrawFn) -> Policy:
    policy = draw(policies())
    return policy.model_copy(update={
        "short_window_words": draw(st.integers(1, SHORT)), "release_whole_words": True,
        "window_tokens": max(policy.window_tokens, 24)})  # long windows: the marker hides in them


def check_whole_words(released: list[str], result_text: str, halted: bool) -> None:
    """Every release but the last ends where a word ends in the final text (no letters on both sides)."""
    shown = ""
    for delta in released[:-1] if not halted else released[:-2]:
        shown += delta
        nxt = result_text[len(shown):len(shown) + 1]
        assert not (shown[-1:].isalnum() and nxt.isalnum()), (
            f"a word split between releases: {shown[-12:]!r} | {result_text[len(shown):len(shown) + 12]!r}")


@PROPERTY_SETTINGS
@given(answers=st.lists(spaced_deltas, min_size=1, max_size=3), sizes=delta_sizes, count_tokens=token_counters,
       policy=two_scale_policies())
def test_chunk_engine_a_flagged_word_never_hides_in_a_long_window(
    answers: list[list[str]], sizes: list[int] | None, count_tokens: Callable[[str], int], policy: Policy,
) -> None:
    primary, session = _chunk_case(answers, sizes, frozenset(), count_tokens, policy)
    released = list(run_chunked(session, primary, None, DilutedMarkerScorer()))
    assert session.result is not None
    check_released(released, session.result.text)
    check_whole_words(released, session.result.text, session.result.stop_reason == "halt")


@PROPERTY_SETTINGS
@given(script=spaced_deltas.map("".join), fallback=spaced_deltas.map("".join), policy=two_scale_policies(),
       max_tokens=st.integers(1, 300))
def test_logit_engine_a_flagged_word_never_hides_in_a_long_window(
    script: str, fallback: str, policy: Policy, max_tokens: int,
) -> None:
    primary = ScriptedPrimary(script, fallback=fallback or " ok.")
    request = Request(messages=None, prompt="Say something.", max_tokens=max_tokens,
                      sampling=SamplingParams(temperature=0.0))
    session = LogitEngine(primary, DilutedMarkerScorer(), policy, request)
    released = list(session.run())
    assert session.result is not None
    check_released(released, session.result.text)
    check_whole_words(released, session.result.text, session.result.stop_reason == "halt")


#: Content words (alt-profanity-check drops stop words, so a text of them would not dilute anything).
CONTENT_WORDS = ("garden river mountain coffee library window teacher morning market bicycle painting kitchen village "
                 "summer bridge harbor orchard festival museum violin lantern meadow bakery sunrise pottery cottage "
                 "forest picnic journey harvest ceramics notebook sailboat chocolate").split()


def diluted_word_cases(seed: int, count: int) -> Iterator[list[str]]:
    """One profane word among 20-30 benign content words, cut into 2-5 deltas at random places."""
    import random

    rng = random.Random(seed)
    for _ in range(count):
        words = rng.sample(CONTENT_WORDS, k=rng.randint(20, 30))
        words.insert(rng.randint(0, len(words)), "fuck")
        text = " " + " ".join(words)
        cuts = sorted(rng.sample(range(1, len(text)), k=rng.randint(1, 4)))
        yield [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)])]


@pytest.mark.parametrize("engine", ["chunk", "logit"])
def test_the_reported_case_one_profane_word_in_a_long_benign_window(engine: str) -> None:
    """Issue 18: one profane word among 20-60 benign words, the lexical scorer, random chunkings: long windows
    scored it 0.13-0.58 and it reached the caller (24 of these 40 cases with short_window_words=0); the short
    windows see it nearly alone."""
    from supervisor.scorers.lexical import LexicalScorer

    scorer = LexicalScorer()
    for case, pieces in enumerate(diluted_word_cases(18, 40 if engine == "chunk" else 10)):
        if engine == "chunk":
            primary = CutPrimary([pieces, [" and that was all."]], None, frozenset(), estimate_tokens)
            session = chunk_engine(primary, None, Policy(), max_tokens=10_000)
            released = "".join(run_chunked(session, primary, None, scorer))
        else:
            local = ScriptedPrimary("".join(pieces), fallback=" and that was all.")
            request = Request(messages=None, prompt="Say something.", max_tokens=400,
                              sampling=SamplingParams(temperature=0.0))
            # one character per token: windows as long as the hosted ones (5 of these 10 leak without short windows)
            policy = Policy(steering="off", window_tokens=192, checkpoint_every=64)
            released = "".join(LogitEngine(local, scorer, policy, request).run())
        assert "fuck" not in released, f"case {case}: {released!r}"
