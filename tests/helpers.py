"""Test doubles with exact control, for behaviours the real model cannot be made to show on demand."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np

from supervisor.assessment import Assessment
from supervisor.messages import Message
from supervisor.primaries.base import LogitPrimary
from supervisor.scorers.base import BaseScorer

EOS = 128
START = 1  # marks where the response begins in the context


class ScriptedPrimary(LogitPrimary):
    """A character-level primary that writes ``script`` greedily. Once decoding deviates from the
    script (a rollback banned its next character), it writes ``fallback`` instead. When the context
    holds ``obey`` (the re-prompt instruction), it writes ``fallback`` from the start."""

    name = "scripted"
    context_length = 4096

    def __init__(self, script: str, fallback: str = " all good.", obey: str = "respectful") -> None:
        super().__init__()
        self.script, self.fallback, self.obey = script, fallback, obey
        self._ids: list[int] = []
        self.evaluated_tokens = 0  # every token run through the "model", prompt included

    @property
    def vocab_size(self) -> int:
        return 129

    @property
    def eos_token_ids(self) -> frozenset[int]:
        return frozenset({EOS})

    @staticmethod
    def _encode(text: str) -> list[int]:
        return [ord(c) if 2 <= ord(c) < 128 else ord("?") for c in text]

    def chat_prompt(self, messages: Sequence[Message]) -> list[int]:
        text = "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant:"
        return [*self._encode(text), START]

    def completion_prompt(self, text: str) -> list[int]:
        return [*self._encode(text), START]

    def encode(self, text: str) -> list[int]:
        return self._encode(text)

    def decode(self, ids: Sequence[int]) -> str:
        return "".join(chr(i) for i in ids if 2 <= i < 128)

    @property
    def context_ids(self) -> list[int]:
        return list(self._ids)

    def _logits(self) -> np.ndarray:
        start = len(self._ids) - self._ids[::-1].index(START)
        context, response = self.decode(self._ids[:start]), self.decode(self._ids[start:])
        target = self.fallback if self.obey in context else self.script
        if target.startswith(response):
            upcoming = target[len(response)] if len(response) < len(target) else None
        else:
            deviation = next(i for i, (a, b) in enumerate(zip(response, target + "\0" * len(response))) if a != b)
            tail = response[deviation + 1 :]
            upcoming = self.fallback[len(tail)] if len(tail) < len(self.fallback) else None
        logits = np.zeros(self.vocab_size, dtype=np.float32)
        best = EOS if upcoming is None else ord(upcoming)
        logits[best] = 10.0
        logits[ord("." if best != ord(".") else ",")] = 5.0
        return logits

    def reset(self, ids: Sequence[int]) -> np.ndarray:
        common = 0
        for a, b in zip(self._ids, ids):
            if a != b:
                break
            common += 1
        self._ids = list(self._ids[:common]) + list(ids[common:])
        self.evaluated_tokens += len(ids) - common
        return self._logits()

    def step(self, token_id: int) -> np.ndarray:
        self._ids.append(token_id)
        self.evaluated_tokens += 1
        return self._logits()

    def truncate(self, length: int) -> np.ndarray:
        self._ids = self._ids[:length]
        return self._logits()


class KeywordScorer(BaseScorer):
    """Risk grows by ``step`` per occurrence of ``word``: harm that only adds up over a long text."""

    name = "keyword"

    def __init__(self, word: str = "bad", step: float = 0.25) -> None:
        self.word, self.step = word, step
        self.calls: list[list[str]] = []
        self._lock = threading.Lock()

    def assess(self, texts: Sequence[str]) -> list[Assessment]:
        with self._lock:
            self.calls.append(list(texts))
        return [Assessment.from_categories({"toxicity": min(1.0, self.step * t.count(self.word))}) for t in texts]


class FailingScorer(BaseScorer):
    """Raises (or hangs) from the ``fail_after``-th call on."""

    name = "failing"

    def __init__(self, fail_after: int = 0, hang_s: float = 0.0) -> None:
        self.fail_after, self.hang_s, self.calls = fail_after, hang_s, 0

    def assess(self, texts: Sequence[str]) -> list[Assessment]:
        self.calls += 1
        if self.calls > self.fail_after:
            if self.hang_s:
                time.sleep(self.hang_s)
            else:
                raise RuntimeError("supervisor model crashed")
        return [Assessment(risk=0.0) for _ in texts]


class ConstantScorer(BaseScorer):
    """Always the same risk: puts the state in a chosen zone."""

    name = "constant"

    def __init__(self, risk: float) -> None:
        self.risk = risk
        self.calls: list[list[str]] = []

    def assess(self, texts: Sequence[str]) -> list[Assessment]:
        self.calls.append(list(texts))
        return [Assessment.from_categories({"toxicity": self.risk}) for _ in texts]


@contextmanager
def recorded_forward_shapes(model: Any) -> Iterator[list[tuple[int, int]]]:
    """Record the (batch, length) of ``input_ids`` of every forward call of a transformers model."""
    shapes: list[tuple[int, int]] = []
    forward = model.forward

    def spy(*args: Any, **kwargs: Any) -> Any:
        shapes.append(tuple(kwargs["input_ids"].shape))  # type: ignore[arg-type]
        return forward(*args, **kwargs)

    model.forward = spy
    try:
        yield shapes
    finally:
        model.forward = forward
