"""Fitting and judging the probes' heads: embeddings cached per text, weighted logistic heads, AUROC, and operating
thresholds."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from supervisor.lab.datasets import HEADS, Example, split_of


class EmbeddingCache:
    """Sentence embeddings by text, kept on disk; only texts not seen before are encoded."""

    def __init__(self, folder: Path, name: str = "minilm", encode: Callable[[list[str]], np.ndarray] | None = None):
        self.folder, self.name = folder, name
        self._encode = encode
        self._texts: list[str] = []
        self._vectors: np.ndarray | None = None
        texts_file, vectors_file = folder / f"{name}-texts.json", folder / f"{name}-vectors.npy"
        if texts_file.is_file() and vectors_file.is_file():
            self._texts = json.loads(texts_file.read_text(encoding="utf-8"))
            self._vectors = np.load(vectors_file)
        self._index = {text: i for i, text in enumerate(self._texts)}

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        missing = sorted({t for t in texts if t not in self._index})
        if missing:
            if self._encode is None:
                from supervisor.scorers.embedding import SentenceEncoder

                self._encode = SentenceEncoder().encode
            fresh = self._encode(missing)
            self._vectors = fresh if self._vectors is None else np.vstack([self._vectors, fresh])
            for text in missing:
                self._index[text] = len(self._texts)
                self._texts.append(text)
            self.folder.mkdir(parents=True, exist_ok=True)
            np.save(self.folder / f"{self.name}-vectors.npy", self._vectors)
            (self.folder / f"{self.name}-texts.json").write_text(json.dumps(self._texts), encoding="utf-8")
        assert self._vectors is not None or not texts
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        assert self._vectors is not None
        return self._vectors[[self._index[t] for t in texts]]


def example_weights(examples: Sequence[Example], balance: bool) -> np.ndarray:
    """Every dataset the same total weight (mean 1), unless ``balance`` is off."""
    datasets = [e.dataset for e in examples]
    if not balance:
        return np.ones(len(datasets))
    counts = {name: datasets.count(name) for name in set(datasets)}
    return np.array([len(datasets) / (len(counts) * counts[name]) for name in datasets])


def fit_head(x: np.ndarray, examples: Sequence[Example], *, balance: bool = True, c: float = 4.0
             ) -> tuple[np.ndarray, float]:
    """Logistic regression on soft labels: each example once as positive (weight p) and once as negative
    (weight 1 - p), datasets balanced, then both classes the same total weight."""
    from sklearn.linear_model import LogisticRegression

    labels = np.array([e.label for e in examples])
    weights = example_weights(examples, balance)
    positive, negative = weights * labels, weights * (1 - labels)
    scale = negative.sum() / max(positive.sum(), 1e-9)
    model = LogisticRegression(C=c, max_iter=3000)
    model.fit(np.vstack([x, x]), np.r_[np.ones(len(x)), np.zeros(len(x))],
              sample_weight=np.r_[positive * scale, negative])
    return model.coef_[0].astype(np.float64), float(model.intercept_[0])


def sigmoid(z: np.ndarray) -> np.ndarray:
    return np.asarray(1.0 / (1.0 + np.exp(-z)))


def fit_heads(examples: Sequence[Example], features: Callable[[Sequence[str]], np.ndarray], *,
              keep: Callable[[Example], bool] = lambda e: split_of(e.text) == "train",
              balance: bool = True, heads_wanted: Sequence[str] = HEADS) -> dict[str, tuple[np.ndarray, float]]:
    """One head per category on the examples ``keep`` accepts (default: the train split)."""
    heads = {}
    for head in heads_wanted:
        chosen = [e for e in examples if e.head == head and keep(e)]
        if not any(e.label >= 0.5 for e in chosen):
            continue  # no positives left (e.g. the only source of this category was held out)
        heads[head] = fit_head(features([e.text for e in chosen]), chosen, balance=balance)
    return heads


def auroc(labels: Sequence[float], scores: np.ndarray) -> float | None:
    """AUROC with labels >= 0.5 positive; None when one class is missing."""
    from sklearn.metrics import roc_auc_score

    binary = np.asarray(labels) >= 0.5
    if binary.all() or not binary.any():
        return None
    return round(float(roc_auc_score(binary, scores)), 4)


def operating_thresholds(maxima: np.ndarray, budget: float, floor: float = 0.5) -> list[float]:
    """Per-head raw thresholds so that at most ``budget`` of the answers (rows of ``maxima``, the largest score
    each head gave any text of that answer) reach any head's threshold; never below ``floor``."""
    from supervisor.lab.operating_points import false_intervention_rate

    def thresholds_for(share: float) -> list[float]:
        return [max(floor, float(np.quantile(column, 1.0 - share)) + 1e-6) for column in maxima.T]

    low, high = 0.0, budget
    for _ in range(40):  # the largest per-head share whose union stays within the budget
        middle = (low + high) / 2
        if false_intervention_rate(maxima, thresholds_for(middle)) <= budget:
            low = middle
        else:
            high = middle
    return thresholds_for(low)


def best_threshold(scores: np.ndarray, labels: np.ndarray, benign: np.ndarray, max_fpr: float) -> float:
    """The probability threshold with the best F1 among those within the benign false-positive budget."""
    best, best_f1 = 0.5, -1.0
    for threshold in np.linspace(0.05, 0.99, 95):
        if (benign >= threshold).mean() > max_fpr:
            continue
        predicted = scores >= threshold
        tp = float((predicted & (labels == 1)).sum())
        f1 = 2 * tp / (predicted.sum() + (labels == 1).sum()) if tp else 0.0
        if f1 > best_f1:
            best, best_f1 = float(threshold), f1
    return best
