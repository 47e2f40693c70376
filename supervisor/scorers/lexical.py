"""Lexical scorer: alt-profanity-check, a linear model over word n-grams. Fast, offline, weak on
implicit hate (it sees slurs and insults, not meaning)."""

from __future__ import annotations

import functools
import re
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from supervisor.assessment import Assessment
from supervisor.errors import MissingDependencyError
from supervisor.scorers.base import BaseScorer
from supervisor.visible_text import obfuscation_variant, visible


class ProfanityModel:
    """alt-profanity-check's model (TF-IDF over words, five calibrated linear SVMs) evaluated with numpy, equal to
    its ``predict_prob`` to 1e-12 and about 40x faster on a few short texts: sklearn's per-call checks cost more
    than the model when the steering asks at every token (tests/test_steering.py compares them)."""

    def __init__(self) -> None:
        try:
            from profanity_check import profanity_check as fitted
        except ImportError as exc:
            raise MissingDependencyError("the lexical scorer", "alt-profanity-check", "lexical") from exc
        vectorizer, model = fitted.vectorizer, fitted.model
        params = vectorizer.get_params()
        expected = {"analyzer": "word", "ngram_range": (1, 1), "lowercase": True, "norm": "l2", "use_idf": True,
                    "sublinear_tf": False, "binary": False, "preprocessor": None, "tokenizer": None}
        if any(params.get(key) != value for key, value in expected.items()) or model.get_params()["method"] != "sigmoid":
            raise RuntimeError(f"alt-profanity-check's model changed shape ({params}); ProfanityModel needs updating")
        self._pattern = re.compile(params["token_pattern"])
        self._stop = frozenset(vectorizer.get_stop_words() or ())
        self._index: dict[str, int] = dict(vectorizer.vocabulary_)
        self._idf = np.asarray(vectorizer.idf_, dtype=np.float64)
        folds = model.calibrated_classifiers_
        self._weights = np.stack([f.estimator.coef_[0] for f in folds])  # (folds, vocabulary)
        self._intercepts = np.array([f.estimator.intercept_[0] for f in folds])
        self._a = np.array([f.calibrators[0].a_ for f in folds])
        self._b = np.array([f.calibrators[0].b_ for f in folds])

    def probabilities(self, texts: Sequence[str]) -> np.ndarray:
        out = np.empty(len(texts), dtype=np.float64)
        for row, text in enumerate(texts):
            counts: dict[int, int] = {}
            for word in self._pattern.findall(text.lower()):
                if word not in self._stop:
                    index = self._index.get(word)
                    if index is not None:
                        counts[index] = counts.get(index, 0) + 1
            if counts:
                ids = np.fromiter(counts, dtype=np.int64, count=len(counts))
                tfidf = np.fromiter(counts.values(), dtype=np.float64, count=len(counts)) * self._idf[ids]
                tfidf /= np.sqrt(tfidf @ tfidf)
                decision = self._weights[:, ids] @ tfidf + self._intercepts
            else:
                decision = self._intercepts
            out[row] = float(np.mean(1.0 / (1.0 + np.exp(self._a * decision + self._b))))
        return out


@functools.lru_cache(maxsize=1)
def profanity_model() -> ProfanityModel:
    """The process-wide :class:`ProfanityModel` (loaded once)."""
    return ProfanityModel()


class LexicalScorer(BaseScorer):
    """Probability of offensive language from alt-profanity-check, reported as ``toxicity``: of the visible
    text (:func:`~supervisor.visible_text.visible`; folding what ``assess_checked`` folded changes nothing),
    or of its leetspeak reading ("sh1t" as "shit") where that is higher."""

    name = "lexical"

    def __init__(self) -> None:
        self._model: ProfanityModel | None = None
        self._lock = threading.Lock()

    def _load(self) -> Any:
        with self._lock:
            if self._model is None:
                self._model = profanity_model()
        return self._model.probabilities

    def assess(self, texts: Sequence[str]) -> list[Assessment]:
        if not texts:
            return []
        readings = [self._readings(text) for text in texts]
        batch = [reading for per_text in readings for reading in per_text]
        probabilities = iter(self._load()([text if text.strip() else "." for text in batch]))
        return [
            Assessment.from_categories({"toxicity": float(max(next(probabilities) for _ in per_text))})
            for per_text in readings
        ]

    @staticmethod
    def _readings(text: str) -> list[str]:
        """The visible text, and its leetspeak reading when it has one."""
        seen = visible(text)
        variant = obfuscation_variant(seen)
        return [seen] if variant is None else [seen, variant]
