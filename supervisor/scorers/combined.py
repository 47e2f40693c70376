"""Scorers built from scorers: a cascade (cheap first, expensive only when unsure) and an ensemble."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from supervisor.assessment import CATEGORIES, Assessment
from supervisor.errors import ConfigError
from supervisor.scorers.base import BaseScorer, Scorer


class CascadeScorer(BaseScorer):
    """Ask ``cheap`` first; texts it scores inside ``(low, high)`` go to ``expensive``, whose answer wins."""

    def __init__(self, cheap: Scorer, expensive: Scorer, *, low: float = 0.05, high: float = 0.95) -> None:
        if not 0.0 <= low < high <= 1.0:
            raise ConfigError(f"cascade bounds must satisfy 0 <= low < high <= 1, got low={low}, high={high}")
        self.cheap, self.expensive, self.low, self.high = cheap, expensive, low, high
        self.name = f"cascade({cheap.name}->{expensive.name})"
        self.escalated = 0

    def assess(self, texts: Sequence[str]) -> list[Assessment]:
        results = self.cheap.assess(texts)
        unsure = [i for i, a in enumerate(results) if self.low < a.risk < self.high]
        if unsure:
            self.escalated += len(unsure)
            for i, answer in zip(unsure, self.expensive.assess([texts[i] for i in unsure])):
                results[i] = answer
        return results


class EnsembleScorer(BaseScorer):
    """Combine several scorers per category: ``max`` (flag if any flags) or ``mean``."""

    def __init__(self, scorers: Sequence[Scorer], *, combine: Literal["max", "mean"] = "max") -> None:
        if not scorers:
            raise ConfigError("an ensemble needs at least one scorer")
        if combine not in ("max", "mean"):
            raise ConfigError(f"combine is {combine!r}; accepted: max, mean")
        self.scorers, self.combine = list(scorers), combine
        self.name = f"ensemble-{combine}({','.join(s.name for s in scorers)})"

    def assess(self, texts: Sequence[str]) -> list[Assessment]:
        answers = [scorer.assess(texts) for scorer in self.scorers]
        combined = []
        for per_text in zip(*answers):
            categories: dict[str, float] = {}
            for name in CATEGORIES:
                values = [a.categories[name] for a in per_text if name in a.categories]
                if values:
                    categories[name] = max(values) if self.combine == "max" else sum(values) / len(values)
            risks = [a.risk for a in per_text]
            risk = max(risks) if self.combine == "max" else sum(risks) / len(risks)
            combined.append(Assessment(risk=min(1.0, risk), categories=categories))
        return combined
