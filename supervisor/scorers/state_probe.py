"""State probe: a linear probe on the primary's own hidden state ("the LLM as its own compass").

Attached to the transformers primary that is generating, it measures each checkpoint's window
from the hidden states the decoding already computed: no extra forward pass, no second model.
Given plain texts (candidate reranking, ``supervisor score``), it runs one forward pass of the
primary's model over them, apart from the decoding cache.

Train it with ``python -m supervisor.lab.train --state-probe --primary smollm2:transformers``.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

import numpy as np

from supervisor.assessment import CATEGORIES, Assessment
from supervisor.errors import ConfigError
from supervisor.primaries.transformers import TransformersPrimary
from supervisor.scorers.base import in_own_thread

SMOLLM2_PROBE = "data/state_probe_smollm2.json"


class StateProbeScorer:
    """Logistic heads over the mean hidden state of a layer of ``primary``."""

    def __init__(self, primary: TransformersPrimary, head_path: str | Path | None = None) -> None:
        if not isinstance(primary, TransformersPrimary):
            raise ConfigError("the state probe reads hidden states: it needs a transformers primary "
                              "(load_primary('smollm2:transformers') or 'hf:NAME')")
        if head_path is None:
            text = resources.files("supervisor").joinpath(SMOLLM2_PROBE).read_text(encoding="utf-8")
        else:
            text = Path(head_path).read_text(encoding="utf-8")
        payload = json.loads(text)
        hidden_size = int(primary.model.config.hidden_size)
        if int(payload["hidden_size"]) != hidden_size:
            raise ConfigError(f"this probe was trained on {payload['primary']!r} (hidden size {payload['hidden_size']}), "
                              f"not on {primary.name!r} (hidden size {hidden_size}); train one for it")
        heads = payload["heads"]
        unknown = set(heads) - set(CATEGORIES)
        if unknown:
            raise ConfigError(f"state probe heads {sorted(unknown)} are not categories; known: {CATEGORIES}")
        self.primary, self.layer = primary, int(payload["layer"])
        self.categories = list(heads)
        self._mean = np.array(payload["mean"], dtype=np.float32)
        self._scale = np.array(payload["scale"], dtype=np.float32)
        self._weights = np.array([heads[c]["weights"] for c in self.categories], dtype=np.float32)
        self._bias = np.array([heads[c]["bias"] for c in self.categories], dtype=np.float32)
        self.name = f"state-probe:{primary.name}:layer{self.layer}"
        self._lock = threading.Lock()
        primary.enable_probe(self.layer)

    def _assess_vectors(self, vectors: np.ndarray) -> list[Assessment]:
        logits = ((vectors - self._mean) / self._scale) @ self._weights.T + self._bias
        probabilities = 1.0 / (1.0 + np.exp(-logits))
        return [Assessment.from_categories({c: float(p) for c, p in zip(self.categories, row)})
                for row in probabilities]

    def assess_hidden(self, windows: Sequence[np.ndarray]) -> list[Assessment]:
        """One assessment per window of per-token hidden states (rows), mean-pooled."""
        return self._assess_vectors(np.stack([w.mean(axis=0) for w in windows]))

    def reads(self, primary: object) -> bool:
        return primary is self.primary and self.primary.probe_layer == self.layer

    def assess_context(self, spans: Sequence[tuple[int, int]]) -> list[Assessment]:
        """The state probe as a :class:`~supervisor.scorers.base.HiddenStateScorer`: spans of the decoding
        context, measured from the hidden states the decoding already computed."""
        return self.assess_hidden([self.primary.hidden_states(start, end) for start, end in spans])

    def assess(self, texts: Sequence[str]) -> list[Assessment]:
        if not texts:
            return []
        with self._lock:
            vectors = self.primary.text_hidden_states(list(texts), self.layer)
        return self._assess_vectors(vectors)

    async def aassess(self, texts: Sequence[str]) -> list[Assessment]:
        return await asyncio.wrap_future(in_own_thread(self.assess, list(texts)))
