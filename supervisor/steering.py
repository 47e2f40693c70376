"""Continuous steering of a local primary: at every token the top candidates' logits move down by a value of where
each candidate leads, times a gain that the estimated state sets (a control law, not a switch: docs/how-it-works.md).

One value per candidate, in [0, 1], from one cheap call per token:

- :class:`LexicalValue`: alt-profanity-check on the last few words of the response followed by the candidate, so a
  word piece is valued as the word it completes ("f" + "uck");
- :class:`VocabValue`: the same model on every vocabulary token alone, computed once per primary; free per token,
  blind to word pieces.

The logits move by ``gain * (value - lowest value among the candidates)``, values under a floor counting as 0: the
least risky candidate keeps its logit, so the steering reorders the top candidates and never pushes probability
mass onto unvalued ones, and where no candidate is risky the primary's distribution is left exactly as it was.
"""

from __future__ import annotations

import bisect
import re
import threading
import time
from collections.abc import Callable
from typing import Protocol, TypeVar

import numpy as np

from supervisor.errors import MissingDependencyError
from supervisor.events import SteeringReport
from supervisor.primaries.base import LogitPrimary
from supervisor.scorers.lexical import profanity_model

#: Tokens of the response read back to find its last words (more than a few words' worth).
_TAIL_TOKENS = 16
_WORDS = re.compile(r"\s*\S+")
_OPEN_WORD = re.compile(r"[^\W\d_]+$")
#: A word whose own profanity probability is below this counts as benign (benign words score 0.01-0.06).
_BENIGN = 0.1
_T = TypeVar("_T")


class ResponseView(Protocol):
    """What a value reads of the response: its token ids and each token's text."""

    ids: list[int]

    def piece(self, token_id: int) -> str: ...


class CandidateValue(Protocol):
    """Where each candidate token leads, as a risk in [0, 1] (one batched call for all candidates)."""

    name: str

    def values(self, response: ResponseView, candidates: np.ndarray) -> np.ndarray: ...


def last_words(text: str, words: int) -> str:
    """The last ``words`` words of ``text`` with the whitespace before them (a word in progress counts as one)."""
    pieces = _WORDS.findall(text)
    return "".join(pieces[-words:]) + text[len("".join(pieces)):]


class LexicalValue:
    """alt-profanity-check's probability of the response's last ``words`` words followed by each candidate.

    A word in progress is read as the word it is so far, except where it continues a word of earlier tokens and
    is also the beginning of a benign word ("hel" + "l" on the way to "hello", "bit" + "c" to "bitcoin"): there
    only the words before it are valued, so the steering never breaks a benign word whose start reads as a
    profane one. A candidate that starts a word is valued as the word it is (a tokenizer writes "assist" as one
    token, not as " ass" + "ist").
    """

    name = "lexical"

    def __init__(self, primary: LogitPrimary, words: int = 3) -> None:
        self.words = words
        self._model = profanity_model()
        self._benign = benign_words(primary)

    def values(self, response: ResponseView, candidates: np.ndarray) -> np.ndarray:
        tail = last_words("".join(response.piece(t) for t in response.ids[-_TAIL_TOKENS:]), self.words)
        open_word = _OPEN_WORD.search(tail)
        texts = []
        for candidate in candidates:
            piece = response.piece(int(candidate))
            text = tail + piece
            if open_word is not None and piece[:1].isalpha():
                word = _OPEN_WORD.search(text)
                if word is not None and self._begins_benign_word(word.group().lower()):
                    text = text[: word.start()]
            texts.append(text)
        return self._model.probabilities(texts)

    def _begins_benign_word(self, start: str) -> bool:
        index = bisect.bisect_right(self._benign, start)
        return index < len(self._benign) and self._benign[index].startswith(start)


class VocabValue:
    """alt-profanity-check's probability of each vocabulary token's text alone, computed once per primary."""

    name = "vocab"

    def __init__(self, primary: LogitPrimary) -> None:
        self.table = vocab_table(primary)

    def values(self, response: ResponseView, candidates: np.ndarray) -> np.ndarray:
        return self.table[candidates]


_cache: dict[tuple[str, str, int], object] = {}
_cache_lock = threading.RLock()  # builds nest (benign words read the token pieces)


def _per_primary(what: str, primary: LogitPrimary, build: Callable[[], _T]) -> _T:
    """``build()`` once per primary model (by name and vocabulary size) and ``what``."""
    key = (what, primary.name, primary.vocab_size)
    with _cache_lock:
        if key not in _cache:
            _cache[key] = build()
        return _cache[key]  # type: ignore[return-value]


def token_pieces(primary: LogitPrimary) -> list[str]:
    """Every vocabulary token's text alone."""
    return _per_primary("pieces", primary, lambda: [primary.decode([t]) for t in range(primary.vocab_size)])


def word_continuations(primary: LogitPrimary) -> np.ndarray:
    """A mask over the vocabulary: tokens whose text starts with a letter or digit (they continue the word before)."""
    return _per_primary("continuations", primary,
                        lambda: np.array([piece[:1].isalnum() for piece in token_pieces(primary)], dtype=bool))


def vocab_table(primary: LogitPrimary) -> np.ndarray:
    """The per-token value table of ``primary``: alt-profanity-check on each token's text."""
    return _per_primary("table", primary, lambda: profanity_model().probabilities(token_pieces(primary)))


def benign_words(primary: LogitPrimary) -> list[str]:
    """Sorted lowercase benign words: the primary's whole-word tokens and, where the embedding extra is
    installed, the MiniLM vocabulary's whole words (a common-English list), each scoring below _BENIGN."""

    def build() -> list[str]:
        words = {p.strip().lower() for p in token_pieces(primary) if p[:1].isspace() and p.strip().isalpha()}
        try:
            from supervisor.scorers.embedding import encoder_path

            vocabulary = (encoder_path() / "vocab.txt").read_text(encoding="utf-8").split()
            words.update(w for w in vocabulary if w.isalpha())
        except (ImportError, OSError, MissingDependencyError):
            pass
        ordered = sorted(w for w in words if len(w) > 1)
        scores = profanity_model().probabilities(ordered)
        return [w for w, score in zip(ordered, scores) if score < _BENIGN]

    return _per_primary("benign", primary, build)


def candidate_value(kind: str, primary: LogitPrimary) -> CandidateValue | None:
    """The value a policy's ``steering`` names (None for 'off')."""
    if kind == "off":
        return None
    if kind == "lexical":
        return _per_primary("lexical", primary, lambda: LexicalValue(primary))
    if kind == "vocab":
        return _per_primary("vocab", primary, lambda: VocabValue(primary))
    raise ValueError(f"unknown steering value {kind!r}; accepted: lexical, vocab, off")


def steer(logits: np.ndarray, response: ResponseView, value: CandidateValue, gain: float, top_k: int,
          report: SteeringReport, floor: float = 0.0) -> None:
    """Move the top ``top_k`` candidates of ``logits`` (in place) by ``gain`` times their value above the lowest;
    values below ``floor`` count as 0 (a dead zone: benign candidates are left exactly as the primary ranks them)."""
    k = min(top_k, len(logits))
    candidates = np.argpartition(-logits, k - 1)[:k]
    candidates = candidates[np.isfinite(logits[candidates])]
    if len(candidates) < 2:
        return
    started = time.perf_counter()
    raw = value.values(response, candidates)
    values = np.maximum(0.0, raw - floor)
    before = int(candidates[np.argmax(logits[candidates])])
    logits[candidates] -= gain * (values - values.min())
    after = int(candidates[np.argmax(logits[candidates])])
    report.add(gain, bool(values.max() > values.min()), before != after, float(raw.max()), time.perf_counter() - started)
