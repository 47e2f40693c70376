"""Scorers built from scorers: a cascade (cheap first, expensive only when unsure), an ensemble, and batching
of concurrent calls."""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Sequence
from typing import Literal

from supervisor.assessment import CATEGORIES, Assessment
from supervisor.errors import ConfigError, ScorerError
from supervisor.scorers.base import BaseScorer, Scorer, in_own_thread


class CascadeScorer(BaseScorer):
    """Ask ``cheap`` first; texts it scores inside ``(low, high)`` go to ``expensive``, whose answer wins."""

    def __init__(self, cheap: Scorer, expensive: Scorer, *, low: float = 0.05, high: float = 0.95) -> None:
        if not 0.0 <= low < high <= 1.0:
            raise ConfigError(f"cascade bounds must satisfy 0 <= low < high <= 1, got low={low}, high={high}")
        self.cheap, self.expensive, self.low, self.high = cheap, expensive, low, high
        self.name = f"cascade({cheap.name}->{expensive.name})"
        self.escalated = 0

    def assess(self, texts: Sequence[str]) -> list[Assessment]:
        results = self.cheap.assess(texts)
        unsure = [i for i, a in enumerate(results) if self.low < a.risk < self.high]
        if unsure:
            self.escalated += len(unsure)
            for i, answer in zip(unsure, self.expensive.assess([texts[i] for i in unsure])):
                results[i] = answer
        return results


class EnsembleScorer(BaseScorer):
    """Combine several scorers per category: ``max`` (flag if any flags) or ``mean``."""

    def __init__(self, scorers: Sequence[Scorer], *, combine: Literal["max", "mean"] = "max") -> None:
        if not scorers:
            raise ConfigError("an ensemble needs at least one scorer")
        if combine not in ("max", "mean"):
            raise ConfigError(f"combine is {combine!r}; accepted: max, mean")
        self.scorers, self.combine = list(scorers), combine
        self.name = f"ensemble-{combine}({','.join(s.name for s in scorers)})"

    def assess(self, texts: Sequence[str]) -> list[Assessment]:
        answers = [scorer.assess(texts) for scorer in self.scorers]
        combined = []
        for per_text in zip(*answers):
            categories: dict[str, float] = {}
            for name in CATEGORIES:
                values = [a.categories[name] for a in per_text if name in a.categories]
                if values:
                    categories[name] = max(values) if self.combine == "max" else sum(values) / len(values)
            risks = [a.risk for a in per_text]
            risk = max(risks) if self.combine == "max" else sum(risks) / len(risks)
            combined.append(Assessment(risk=min(1.0, risk), categories=categories))
        return combined


class BatchingScorer(BaseScorer):
    """Many concurrent async callers' texts scored as one batch: the calls that arrive within ``wait_s`` of the
    first one (up to ``max_batch`` texts) go to ``inner`` together, in one worker thread. A server supervising
    many streams at once makes one scorer call (one forward pass) where it made one per stream. Synchronous
    calls go straight to ``inner``. Use it from one event loop."""

    def __init__(self, inner: Scorer, *, wait_s: float = 0.002, max_batch: int = 256) -> None:
        if wait_s < 0 or max_batch < 1:
            raise ConfigError(f"batching needs wait_s >= 0 and max_batch >= 1, got {wait_s} and {max_batch}")
        self.inner, self.wait_s, self.max_batch = inner, wait_s, max_batch
        self.name = inner.name
        self.batches = 0
        self._pending: list[tuple[list[str], asyncio.Future[list[Assessment]]]] = []
        self._timer: asyncio.TimerHandle | None = None

    def assess(self, texts: Sequence[str]) -> list[Assessment]:
        return self.inner.assess(texts)

    async def aassess(self, texts: Sequence[str]) -> list[Assessment]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[Assessment]] = loop.create_future()
        self._pending.append((list(texts), future))
        if sum(len(t) for t, _ in self._pending) >= self.max_batch:
            self._flush()
        elif self._timer is None:
            self._timer = loop.call_later(self.wait_s, self._flush)
        return await future

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        batch, self._pending = self._pending, []
        if not batch:
            return
        self.batches += 1
        loop = batch[0][1].get_loop()
        texts = [text for own, _ in batch for text in own]
        done = in_own_thread(self.inner.assess, texts)
        def deliver(finished: concurrent.futures.Future[list[Assessment]]) -> None:
            try:
                loop.call_soon_threadsafe(self._deliver, batch, finished)
            except RuntimeError:  # a hung call may end after its callers' loop closed: nobody waits for it then
                pass

        done.add_done_callback(deliver)

    @staticmethod
    def _deliver(batch: list[tuple[list[str], asyncio.Future[list[Assessment]]]],
                 finished: concurrent.futures.Future[list[Assessment]]) -> None:
        error = finished.exception()
        results = finished.result() if error is None else []
        if error is None and (not isinstance(results, list) or len(results) != sum(len(t) for t, _ in batch)):
            error = ScorerError(f"scorer returned {len(results) if isinstance(results, list) else results!r} results "
                                f"for {sum(len(t) for t, _ in batch)} texts")
        start = 0
        for own, future in batch:
            if future.done():  # the caller gave up (timeout, cancellation)
                start += len(own)
                continue
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(results[start:start + len(own)])
            start += len(own)
