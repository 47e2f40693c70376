"""What the scorer reads is what a person sees: visible() undoes what a screen hides or disguises, and every
scoring path (assess_checked, the lexical scorer, the chunk engine) measures the folded text."""

from __future__ import annotations

import asyncio
import string
import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from supervisor import Assessment, Policy
from supervisor.chunk_drivers import answer_checks
from supervisor.chunk_engine import ChunkEngine
from supervisor.primaries.chunk import UpstreamDelta
from supervisor.scorers import assess_checked, get_scorer
from supervisor.scorers.base import aassess_checked
from supervisor.visible_text import obfuscation_variant, visible
from tests.helpers import KeywordScorer


@pytest.mark.parametrize(("text", "expected"), [
    # NFKC
    ("ｆｕｃｋ you", "fuck you"),
    ("\ufb01ne", "fine"),
    ("\U0001d41f\U0001d42e\U0001d41c\U0001d424", "fuck"),  # mathematical bold
    # bidi controls
    ("\u202ekcuf\u202c you", "fuck you"),
    ("\u202ekcuf you", "uoy fuck"),  # no PDF: the override runs to the end of the line
    ("\u202ekcuf\nyou", "fuck\nyou"),
    ("\u202eab\u202dcd\u202cef\u202c gh", "fecdba gh"),  # an LRO inside the RLO keeps its order
    ("\u202eab\u2066cd\u202cef\u2069gh\u202c", "hgcdefba"),  # a PDF does not close the isolate around it
    ("\u202ab\u202ci\u202bt\u202cc\u2067h\u2069", "bitch"),
    ("\u200ef\u200fu\u061cck", "fuck"),
    ("\u202c\u2069stray closers", "stray closers"),
    # format characters
    ("f\u200bu\u200bc\u200bk you", "fuck you"),
    ("f\u200cu\u200dc\u2060k\u00ad\ufeff", "fuck"),
    ("sh\U000e0041\U000e007fit", "shit"),  # tag characters
    # combining marks
    ("f\u0336u\u0336c\u0336k", "fuck"),
    ("s\u0337h\u20dd\u0489it", "shit"),  # Me included
    ("cafe\u0301", "caf\u00e9"),  # NFKC composes a real accent first
    ("caf\u00e9 na\u00efve", "caf\u00e9 na\u00efve"),
    ("\u0301leading mark", "leading mark"),
    ("\u0928\u092e\u0938\u094d\u0924\u0947", "\u0928\u092e\u0938\u094d\u0924\u0947"),  # a virama is spelling
    # mixed-script look-alikes
    ("fu\u0441k", "fuck"),
    ("\u0455h\u0456t", "shit"),
    ("\u0410SSH\u041eLE", "ASSHOLE"),
    ("b\u03b9tch", "bitch"),
    ("\u0441at \u041c\u043e\u0441\u043a\u0432\u0430", "cat \u041c\u043e\u0441\u043a\u0432\u0430"),  # all-Cyrillic stays
    ("\u03b1\u03c1\u03b9\u03b8\u03bc\u03cc\u03c2", "\u03b1\u03c1\u03b9\u03b8\u03bc\u03cc\u03c2"),  # all-Greek stays
    # spelled-out letters
    ("f u c k you", "fuck you"),
    ("f.u.c.k off", "fuck off"),
    ("f-u-c-k", "fuck"),
    ("F_U_C_K", "FUCK"),
    ("f*u*c*k", "fuck"),
    ("f~u~c~k", "fuck"),
    ("f\u00b7u\u00b7c\u00b7k", "fuck"),
    ("call me b i t c h.", "call me bitch."),
    ("I am a cat", "I am a cat"),
    ("you are a b i t c h", "you are a bitch"),  # a leading "a" or "I" before 3+ letters is the article
    ("I h a t e you", "I hate you"),
    ("a s s", "ass"),
    ("e.g. this", "e.g. this"),
    ("a b", "a b"),
    ("f. u. c. k", "f. u. c. k"),  # two characters between letters is not one separator
    ("f.u-c k", "f.u-c k"),  # one separator throughout
    # lone surrogates
    ("a\ud800b", "a\ufffdb"),
    ("\udfff", "\ufffd"),
    ("\ud83d\ude00", "\U0001f600"),  # a pair that JSON split is one emoji
])
def test_visible(text: str, expected: str) -> None:
    assert visible(text) == expected


def test_plain_ascii_is_returned_as_it_is() -> None:
    text = "The weather is mild today, and the park is open for everyone to enjoy a quiet walk."
    assert visible(text) is text


@pytest.mark.parametrize(("text", "expected"), [
    ("sh1t head", "shit head"),
    ("b!tch", "bitch"),
    ("a$$hole", "asshole"),
    ("$hit", "shit"),
    ("@ss", "ass"),
    ("l33t sp34k", "leet speak"),
    ("h0t d4mn", "hot damn"),
    ("B!TCH!", "BiTCH!"),  # the final ! is punctuation; the model reads lowercase anyway
    ("2024", None),
    ("3.14 and 1,000", None),
    ("the year 2024 was 3.14 times better", None),
    ("hello! C++ rocks", None),
    ("45s and 70s", None),  # more substitutions than letters: a number, not a word
    ("ordinary words only", None),
    ("", None),
])
def test_obfuscation_variant(text: str, expected: str | None) -> None:
    assert obfuscation_variant(text) == expected


ANY_TEXT = st.text(st.characters(exclude_categories=()), max_size=60)  # lone surrogates included
SPICY = st.text(st.sampled_from([
    "a", "b", "e", "f", "k", " ", ".", "-", "_", "*", "~", "\u00b7", "\n", "1", "\u0301", "\u0336", "\u200b",
    "\u202e", "\u202d", "\u202b", "\u202c", "\u2066", "\u2069", "\u200e", "\u0441", "\u0430", "\u03bf", "\u041c",
    "\uff46", "\u1100", "\u1161", "\u11a8", "\u0928", "\u094d", "\ud800", "\U000e0041", "\U0001f600", "\u00a8",
]), max_size=40)  # the characters the rules act on, densely
WORDS = st.lists(st.text(st.sampled_from(string.ascii_letters), min_size=2, max_size=8), min_size=1, max_size=12)


@settings(max_examples=400, deadline=None)
@given(st.one_of(ANY_TEXT, SPICY))
def test_visible_never_raises_is_idempotent_and_leaves_no_format_character(text: str) -> None:
    once = visible(text)
    assert visible(once) == once
    assert not any(unicodedata.category(char) in ("Cf", "Cs") for char in once)
    once.encode("utf-8")  # no lone surrogate left


@settings(max_examples=200, deadline=None)
@given(WORDS, st.sampled_from([" ", ", ", ". ", "\n", " - "]))
def test_plain_ascii_words_are_unchanged(words: list[str], separator: str) -> None:
    text = separator.join(words)
    assert visible(text) == text


@settings(max_examples=200, deadline=None)
@given(ANY_TEXT)
def test_obfuscation_variant_never_raises(text: str) -> None:
    variant = obfuscation_variant(text)
    assert variant is None or (variant != text and len(variant) == len(text))


OBFUSCATED = [
    "\u202ekcuf\u202c you",
    "f\u200bu\u200bc\u200bk you",
    "\uff46\uff55\uff43\uff4b you",
    "f u c k you",
    "fu\u0441k",
    "sh1t head",
]


def test_the_lexical_scorer_sees_through_obfuscation() -> None:
    scorer = get_scorer("lexical")
    *rude, clean = assess_checked(scorer, [*OBFUSCATED, "have a lovely day"], None)
    assert all(a.risk > 0.5 for a in rude), [round(a.risk, 3) for a in rude]
    assert clean.risk < 0.2
    assert [a.risk for a in scorer.assess(OBFUSCATED)] == [a.risk for a in rude]  # direct calls see the same


def test_assess_checked_hands_the_scorer_visible_text_and_other_inputs_as_they_are() -> None:
    scorer = KeywordScorer(word="bad")
    (assessment,) = assess_checked(scorer, ["\u202edab\u202c b\u200ba\u200bd"], None)
    assert scorer.calls == [["bad bad"]] and assessment.risk == 0.5
    spans = [(0, 4), (2, 8)]
    received: list[object] = []

    def assess_spans(items: list[object]) -> list[Assessment]:
        received.extend(items)
        return [Assessment(risk=0.0) for _ in items]

    assess_checked(scorer, spans, None, method=assess_spans)
    assert received == spans


def test_aassess_checked_hands_the_scorer_visible_text() -> None:
    scorer = KeywordScorer(word="bad")
    asyncio.run(aassess_checked(scorer, ["b a d", "\uff42\uff41\uff44"], None))
    assert scorer.calls == [["bad", "bad"]]


def test_the_chunk_engine_never_releases_a_bidi_override_word() -> None:
    session = ChunkEngine(Policy(checkpoint_every=4, window_tokens=8), max_tokens=200)
    session.begin()
    scorer = get_scorer("lexical")
    released = ""
    pieces = ["The", " weather", " is", " mild", " today", " and", " \u202ekcuf\u202c", " you", " all", " day", "."]
    for piece in pieces:
        step = answer_checks(session, session.feed(UpstreamDelta(text=piece)), scorer)
        released += step.released
        if step.done or step.restart:
            break
    else:
        released += answer_checks(session, session.end(), scorer).released
    assert "kcuf" not in released and "\u202e" not in released
    assert any(event.kind in ("rollback", "halt") and "kcuf" in event.removed_text for event in session.events)
