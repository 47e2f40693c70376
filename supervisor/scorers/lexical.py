"""Lexical scorer: alt-profanity-check, a linear model over word n-grams. Fast, offline, weak on
implicit hate (it sees slurs and insults, not meaning)."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from supervisor.assessment import Assessment
from supervisor.errors import MissingDependencyError
from supervisor.scorers.base import BaseScorer


class LexicalScorer(BaseScorer):
    """Probability of offensive language from alt-profanity-check, reported as ``toxicity``."""

    name = "lexical"

    def __init__(self) -> None:
        self._predict_prob: Any = None
        self._lock = threading.Lock()

    def _load(self) -> Any:
        with self._lock:
            if self._predict_prob is None:
                try:
                    from profanity_check import predict_prob
                except ImportError as exc:
                    raise MissingDependencyError("the lexical scorer", "alt-profanity-check", "lexical") from exc
                self._predict_prob = predict_prob
        return self._predict_prob

    def assess(self, texts: Sequence[str]) -> list[Assessment]:
        if not texts:
            return []
        probabilities = self._load()([text if text.strip() else "." for text in texts])
        return [Assessment.from_categories({"toxicity": float(p)}) for p in probabilities]
