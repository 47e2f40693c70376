"""OpenAI moderation (``omni-moderation-latest``) through the official client, batched."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from supervisor.assessment import Assessment
from supervisor.errors import MissingDependencyError
from supervisor.scorers.base import BaseScorer

#: Moderation categories (as the API spells them) and ours.
MODERATION_CATEGORIES: dict[str, str] = {
    "harassment": "harassment", "harassment/threatening": "harassment",
    "hate": "hate", "hate/threatening": "hate",
    "violence": "violence", "violence/graphic": "violence",
    "sexual": "sexual", "sexual/minors": "sexual",
    "self-harm": "self_harm", "self-harm/intent": "self_harm", "self-harm/instructions": "self_harm",
    "illicit": "illicit", "illicit/violent": "illicit",
}
MAX_BATCH = 32


def _to_assessment(result: Any) -> Assessment:
    scores = result.category_scores.model_dump(by_alias=True)
    categories: dict[str, float] = {}
    for api_name, category in MODERATION_CATEGORIES.items():
        value = scores.get(api_name)
        if value is not None:
            categories[category] = max(categories.get(category, 0.0), min(1.0, max(0.0, float(value))))
    return Assessment.from_categories(categories)


class OpenAIModerationScorer(BaseScorer):
    """Pass ``client`` / ``async_client`` (openai.OpenAI / AsyncOpenAI), or let it build them from the
    environment (OPENAI_API_KEY, OPENAI_BASE_URL)."""

    def __init__(self, client: Any = None, *, async_client: Any = None, model: str = "omni-moderation-latest") -> None:
        try:
            import openai
        except ImportError as exc:
            raise MissingDependencyError("the openai-moderation scorer", "openai", "openai") from exc
        self._openai = openai
        self.client = client
        self.async_client = async_client
        self.model = model
        self.name = f"openai-moderation:{model}"

    def assess(self, texts: Sequence[str]) -> list[Assessment]:
        if self.client is None:
            self.client = self._openai.OpenAI()
        results: list[Assessment] = []
        for start in range(0, len(texts), MAX_BATCH):
            response = self.client.moderations.create(model=self.model, input=list(texts[start : start + MAX_BATCH]))
            results.extend(_to_assessment(r) for r in response.results)
        return results

    async def aassess(self, texts: Sequence[str]) -> list[Assessment]:
        if self.async_client is None:
            self.async_client = self._openai.AsyncOpenAI()
        results: list[Assessment] = []
        for start in range(0, len(texts), MAX_BATCH):
            response = await self.async_client.moderations.create(
                model=self.model, input=list(texts[start : start + MAX_BATCH])
            )
            results.extend(_to_assessment(r) for r in response.results)
        return results
