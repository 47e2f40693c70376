"""Next-token sampling over numpy logits, shared by every logit-controlled primary."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from supervisor.errors import InputError

# Tokens whose probability is below this fraction of the top token's are never nucleus members
# in practice; ignoring them avoids sorting the whole vocabulary at every step.
_NEGLIGIBLE = 1e-6


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 0.7
    top_p: float = 0.95
    top_k: int = 0
    seed: int | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.temperature <= 5.0:
            raise InputError(f"temperature is {self.temperature}; accepted: 0 (greedy) to 5")
        if not 0.0 < self.top_p <= 1.0:
            raise InputError(f"top_p is {self.top_p}; accepted: greater than 0, at most 1")
        if self.top_k < 0:
            raise InputError(f"top_k is {self.top_k}; accepted: 0 (off) or a positive integer")
        if self.seed is not None and (
            isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed < 2**63
        ):
            raise InputError(f"seed is {self.seed!r}; accepted: None or an integer from 0 to 2**63 - 1")


def nucleus(logits: np.ndarray, params: SamplingParams, temperature: float) -> tuple[np.ndarray, np.ndarray]:
    """Token ids that survive top-k / top-p, most likely first, with their normalised probabilities."""
    if temperature <= 0.0:
        best = int(np.argmax(logits))
        return np.array([best]), np.array([1.0])
    scaled = logits.astype(np.float64) / temperature
    top = scaled.max()
    if not np.isfinite(top):
        raise ValueError("every candidate token is banned (all logits are -inf)")
    probs = np.exp(scaled - top)
    total = probs.sum()
    ids = np.flatnonzero(probs >= _NEGLIGIBLE)
    ids = ids[np.argsort(-probs[ids], kind="stable")]
    if params.top_k:
        ids = ids[: params.top_k]
    kept = probs[ids] / total
    if params.top_p < 1.0:
        cut = int(np.searchsorted(np.cumsum(kept), params.top_p)) + 1
        ids, kept = ids[:cut], kept[:cut]
    return ids, kept / kept.sum()


def sample(logits: np.ndarray, params: SamplingParams, rng: np.random.Generator, temperature: float) -> int:
    """Greedy when temperature is 0, otherwise temperature + top-k + nucleus sampling."""
    ids, probs = nucleus(logits, params, temperature)
    if len(ids) == 1:
        return int(ids[0])
    return int(ids[rng.choice(len(ids), p=probs)])
