"""Supervisor models behind one protocol. ``get_scorer(name)`` builds one by name."""

from __future__ import annotations

from collections.abc import Callable

from supervisor.errors import ModelNotFoundError
from supervisor.scorers.base import BaseScorer, Scorer, assess_checked

DEFAULT_SCORER = "lexical"


def _lexical() -> Scorer:
    from supervisor.scorers.lexical import LexicalScorer

    return LexicalScorer()


def _embedding() -> Scorer:
    from supervisor.scorers.embedding import EmbeddingProbeScorer

    return EmbeddingProbeScorer()


SCORERS: dict[str, Callable[[], Scorer]] = {"lexical": _lexical, "embedding": _embedding}


def get_scorer(name: str | Scorer | None = None) -> Scorer:
    """A scorer by name (``None`` gives the default); a Scorer instance is returned as it is."""
    if name is None:
        name = DEFAULT_SCORER
    if not isinstance(name, str):
        if isinstance(name, Scorer):
            return name
        raise ModelNotFoundError(f"scorer must be a name or a Scorer, got {type(name).__name__}")
    if name not in SCORERS:
        raise ModelNotFoundError(f"unknown scorer {name!r}; available: {', '.join(sorted(SCORERS))}")
    return SCORERS[name]()


__all__ = ["BaseScorer", "DEFAULT_SCORER", "SCORERS", "Scorer", "assess_checked", "get_scorer"]
