"""Any transformers sequence-classification toxicity model (unitary/toxic-bert,
s-nlp/roberta_toxicity_classifier, ibm-granite guardian HAP, ...), labels mapped to our categories."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from supervisor.assessment import CATEGORIES, Assessment
from supervisor.errors import ConfigError, MissingDependencyError, ModelNotFoundError
from supervisor.scorers.base import BaseScorer

#: Label names seen in public toxicity classifiers, lower-cased, and the category each measures.
#: Labels that mean "safe" (neutral, non-toxic, LABEL_0 of a binary model) map to None.
DEFAULT_LABELS: dict[str, str | None] = {
    "toxic": "toxicity", "toxicity": "toxicity", "severe_toxic": "toxicity", "severe_toxicity": "toxicity",
    "obscene": "toxicity", "offensive": "toxicity", "profanity": "toxicity", "hap": "toxicity",
    "insult": "harassment", "harassment": "harassment", "identity_hate": "hate", "identity_attack": "hate",
    "hate": "hate", "threat": "violence", "violence": "violence", "sexual_explicit": "sexual",
    "sexual": "sexual", "self_harm": "self_harm", "self-harm": "self_harm",
    "neutral": None, "non-toxic": None, "non_toxic": None, "not_toxic": None, "safe": None, "none": None,
}


class HFClassifierScorer(BaseScorer):
    """Sigmoid per label for multi-label models, softmax for single-label ones."""

    def __init__(
        self,
        name_or_path: str | Path,
        *,
        label_map: Mapping[str, str | None] | None = None,
        device: str = "cpu",
        max_length: int = 256,
        batch_size: int = 32,
    ) -> None:
        try:
            import torch  # noqa: F401
            from transformers import AutoConfig
        except ImportError as exc:
            raise MissingDependencyError("the hf-classifier scorer", "transformers and torch", "transformers") from exc
        try:
            config = AutoConfig.from_pretrained(str(name_or_path))
        except (OSError, ValueError) as exc:
            raise ModelNotFoundError(f"could not load a sequence classifier from {str(name_or_path)!r}: {exc}") from exc
        self.path = str(name_or_path)
        self.name = f"hf-classifier:{name_or_path}"
        self.device, self.max_length, self.batch_size = device, max_length, batch_size
        self.multi_label = getattr(config, "problem_type", None) == "multi_label_classification"
        # labels are checked now, so that a bad mapping fails at construction; weights load on first use
        self.label_categories = self._map_labels(dict(config.id2label), label_map or {})
        self.model: Any = None
        self.tokenizer: Any = None
        self._lock = threading.Lock()

    def _load(self) -> None:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(self.path)
        self.model = AutoModelForSequenceClassification.from_pretrained(self.path).eval().to(self.device)
        if self.tokenizer.pad_token is None:
            if self.tokenizer.eos_token is not None:
                self.tokenizer.pad_token = self.tokenizer.eos_token
                if getattr(self.model.config, "pad_token_id", None) is None:
                    self.model.config.pad_token_id = self.tokenizer.eos_token_id
            else:
                self.batch_size = 1  # nothing to pad with: score one text at a time

    @staticmethod
    def _map_labels(id2label: dict[int, str], overrides: Mapping[str, str | None]) -> dict[int, str]:
        for label, category in overrides.items():
            if category is not None and category not in CATEGORIES:
                raise ConfigError(f"label_map[{label!r}] = {category!r} is not a category; known: {CATEGORIES}")
        mapped: dict[int, str] = {}
        names = {i: str(label) for i, label in id2label.items()}
        binary_generic = set(names.values()) == {"LABEL_0", "LABEL_1"}
        for index, label in names.items():
            if label in overrides:
                category = overrides[label]
            elif binary_generic:
                category = "toxicity" if label == "LABEL_1" else None
            elif label.lower() in DEFAULT_LABELS:
                category = DEFAULT_LABELS[label.lower()]
            else:
                raise ConfigError(
                    f"label {label!r} of the classifier has no category; pass label_map={{{label!r}: "
                    f"<one of {', '.join(CATEGORIES)}> or None}}"
                )
            if category is not None:
                mapped[int(index)] = category
        if not mapped:
            raise ConfigError(f"no label of the classifier maps to a category (labels: {sorted(names.values())})")
        return mapped

    def assess(self, texts: Sequence[str]) -> list[Assessment]:
        import torch

        results: list[Assessment] = []
        with self._lock:
            if self.model is None:
                self._load()
            for start in range(0, len(texts), self.batch_size):
                batch = [t if t.strip() else "." for t in texts[start : start + self.batch_size]]
                encoded: Any = self.tokenizer(batch, padding=True, truncation=True, max_length=self.max_length,
                                              return_tensors="pt").to(self.device)
                with torch.inference_mode():
                    logits = self.model(**encoded).logits.float()
                probs = (torch.sigmoid(logits) if self.multi_label else torch.softmax(logits, dim=-1)).cpu().numpy()
                for row in probs:
                    categories: dict[str, float] = {}
                    for index, category in self.label_categories.items():
                        categories[category] = max(categories.get(category, 0.0), float(np.clip(row[index], 0, 1)))
                    results.append(Assessment.from_categories(categories))
        return results
