"""What a scorer measures about a piece of text: a probability per category and an overall risk."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final

from pydantic import BaseModel, ConfigDict, Field, field_validator

#: The fixed taxonomy, aligned with OpenAI's moderation categories plus generic toxicity.
CATEGORIES: Final[tuple[str, ...]] = (
    "toxicity",
    "harassment",
    "hate",
    "violence",
    "sexual",
    "self_harm",
    "illicit",
)


def check_category_values(values: Mapping[str, float], what: str) -> dict[str, float]:
    """Every key a known category, every value in [0, 1]; ``what`` names the values in errors."""
    for name, value in values.items():
        if name not in CATEGORIES:
            raise ValueError(f"unknown category {name!r}; known: {', '.join(CATEGORIES)}")
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{what} of {name!r} is {value}, outside [0, 1]")
    return dict(values)


class Assessment(BaseModel):
    """One measurement of one text. ``risk`` is the probability that the text is unsafe."""

    model_config = ConfigDict(frozen=True)

    risk: float = Field(ge=0.0, le=1.0)
    categories: dict[str, float] = Field(default_factory=dict)

    @field_validator("categories")
    @classmethod
    def _known_categories(cls, value: dict[str, float]) -> dict[str, float]:
        return check_category_values(value, "probability")

    @classmethod
    def from_categories(cls, categories: Mapping[str, float]) -> Assessment:
        """Build an assessment whose overall risk is the largest category probability."""
        clean = {name: float(p) for name, p in categories.items()}
        return cls(risk=max(clean.values(), default=0.0), categories=clean)

    @classmethod
    def worst(cls, assessments: Sequence[Assessment]) -> Assessment:
        """One assessment for several texts judged together: the highest risk and, per category, the highest
        probability (one flagged window flags them all)."""
        if len(assessments) == 1:
            return assessments[0]
        categories: dict[str, float] = {}
        for assessment in assessments:
            for name, value in assessment.categories.items():
                categories[name] = max(value, categories.get(name, 0.0))
        return cls(risk=max((a.risk for a in assessments), default=0.0), categories=categories)

    def top_category(self) -> str | None:
        if not self.categories:
            return None
        return max(self.categories, key=lambda name: self.categories[name])
