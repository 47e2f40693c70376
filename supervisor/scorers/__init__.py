"""Supervisor models behind one protocol. ``get_scorer(name)`` builds one by name.

Names:
- ``embedding``: MiniLM embeddings + trained, calibrated logistic heads (the default: the only offline
  scorer that meets the targets, AUROC >= 0.90 on each held-out set and <= 5% false positives on XSTest);
- ``lexical``: alt-profanity-check (fast, words only, no torch);
- ``cascade``: lexical first, embedding only where lexical is unsure;
- ``ensemble``: the larger of lexical and embedding, per category;
- ``hf-classifier:NAME_OR_PATH``: any transformers sequence-classification model;
- ``llm-judge[:self-check|llama-guard[:PRIMARY]]``: a local chat model's P(unsafe answer);
- ``openai-moderation[:MODEL]``: the OpenAI moderation endpoint;
- ``perspective-proxy``: the lab's evaluation judge (Perspective toxicity proxy) that shares no model and no
  training data with the scorers above (mpnet + n-grams, trained on RTP continuations only): registered by the
  lab through the ``supervisor.scorers`` entry point, as any installed package can add scorers;
- ``state-probe[:PRIMARY]``: a linear probe on a transformers primary's hidden states (scoring texts
  runs its model; attach ``StateProbeScorer(primary)`` to the generating primary to measure for free).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from supervisor.errors import MissingDependencyError, ModelNotFoundError
from supervisor.scorers.base import BaseScorer, Scorer, assess_checked

DEFAULT_SCORER = "embedding"


def _lexical(arg: str) -> Scorer:
    from supervisor.scorers.lexical import LexicalScorer

    return LexicalScorer()


def _embedding(arg: str) -> Scorer:
    from supervisor.scorers.embedding import EmbeddingProbeScorer

    return EmbeddingProbeScorer()


def _cascade(arg: str) -> Scorer:
    from supervisor.scorers.combined import CascadeScorer

    return CascadeScorer(_lexical(""), _embedding(""))


def _ensemble(arg: str) -> Scorer:
    from supervisor.scorers.combined import EnsembleScorer

    return EnsembleScorer([_lexical(""), _embedding("")], combine="max")


def _hf_classifier(arg: str) -> Scorer:
    from supervisor.scorers.hf_classifier import HFClassifierScorer

    if not arg:
        raise ModelNotFoundError("hf-classifier needs a model: 'hf-classifier:NAME_OR_PATH'")
    return HFClassifierScorer(arg)


def _llm_judge(arg: str) -> Scorer:
    from supervisor.primaries import load_primary
    from supervisor.scorers.llm_judge import LLMJudgeScorer

    style, _, primary = arg.partition(":")
    return LLMJudgeScorer(load_primary(primary or "smollm2"), style=style or "self-check")  # type: ignore[arg-type]


def _state_probe(arg: str) -> Scorer:
    from supervisor.primaries import load_primary
    from supervisor.primaries.transformers import TransformersPrimary
    from supervisor.scorers.state_probe import StateProbeScorer

    primary = load_primary(arg or "smollm2:transformers")
    if not isinstance(primary, TransformersPrimary):
        raise ModelNotFoundError(f"state-probe needs a transformers primary, not {arg!r} (try 'hf:NAME')")
    return StateProbeScorer(primary)


def _openai_moderation(arg: str) -> Scorer:
    from supervisor.scorers.openai_moderation import OpenAIModerationScorer

    return OpenAIModerationScorer(model=arg or "omni-moderation-latest")


SCORERS: dict[str, Callable[[str], Scorer]] = {
    "lexical": _lexical,
    "embedding": _embedding,
    "cascade": _cascade,
    "ensemble": _ensemble,
    "hf-classifier": _hf_classifier,
    "llm-judge": _llm_judge,
    "openai-moderation": _openai_moderation,
    "state-probe": _state_probe,
}


def get_scorer(name: str | Scorer | None = None) -> Scorer:
    """A scorer by name (``None`` gives the default); a Scorer instance is returned as it is."""
    if name is None:
        try:
            return get_scorer(DEFAULT_SCORER)
        except MissingDependencyError as exc:
            error = MissingDependencyError(f"the default scorer {DEFAULT_SCORER!r}", exc.package, exc.extra)
            error.msg = f"{error}, or pass scorer='lexical' (no torch needed)"  # ImportError prints .msg
            error.args = (error.msg,)
            raise error from exc
    if not isinstance(name, str):
        if isinstance(name, Scorer):
            return name
        raise ModelNotFoundError(f"scorer must be a name or a Scorer, got {type(name).__name__}")
    kind, _, arg = name.partition(":")
    factories = {**installed_scorers(), **SCORERS}
    if kind not in factories:
        raise ModelNotFoundError(
            f"unknown scorer {name!r}; available: {', '.join(sorted(factories))} "
            "(hf-classifier:NAME_OR_PATH, llm-judge:STYLE:PRIMARY, openai-moderation:MODEL take an argument)"
        )
    return factories[kind](arg)


def installed_scorers() -> dict[str, Callable[[str], Scorer]]:
    """Scorers that installed packages register under the ``supervisor.scorers`` entry point (name -> a factory
    taking the text after ``name:``), e.g. the lab's ``perspective-proxy`` judge. Loaded when asked for."""
    from importlib.metadata import entry_points

    def factory(entry: Any) -> Callable[[str], Scorer]:
        return lambda arg: entry.load()(arg)

    return {entry.name: factory(entry) for entry in entry_points(group="supervisor.scorers")}


__all__ = ["BaseScorer", "DEFAULT_SCORER", "SCORERS", "Scorer", "assess_checked", "get_scorer"]
