"""The logit-controlled primary: what a local backend must offer the session.

The session drives decoding itself: it asks for the next-token logits, picks a token, and can
truncate the context to any earlier length (crop the KV cache, never re-run the prompt).
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Sequence

import numpy as np

from supervisor.errors import InputError, PrimaryBusyError
from supervisor.messages import Message


def stable_text(text: str) -> str:
    """Drop a trailing replacement character: the first bytes of a character split across tokens."""
    return text.rstrip("\ufffd")


#: Prompts are evaluated in batches aligned to multiples of this many positions (see :func:`plan_prefill`).
PREFILL_BLOCK = 64


def plan_prefill(context: Sequence[int], evaluated: Sequence[int], ids: Sequence[int],
                 block: int = PREFILL_BLOCK) -> tuple[int, list[list[int]]]:
    """How to make ``ids`` the context so that the next-token logits do not depend on what ran before.

    Batched and one-token decodes differ in their last bits, which flips near-ties when sampling: a
    generation that reused a cache filled another way would not reproduce a fresh one with the same seed.
    So a prompt is always evaluated the same way: all but its last token in batches aligned to ``block``
    positions, then the last token alone (as every generated token is). ``evaluated`` is the body (all but
    the last token) of the previous prompt evaluated this way; the cache is reused for the same body, or for
    whole aligned blocks that both bodies and ``context`` share. Returns (cached tokens to keep, batches).
    """
    body = list(ids[:-1])
    if list(evaluated) == body and list(context[: len(body)]) == body:
        keep = len(body)
    else:
        common = 0
        for cached, previous, wanted in zip(context, evaluated, body):
            if not cached == previous == wanted:
                break
            common += 1
        keep = common - common % block
    batches: list[list[int]] = []
    start = keep
    while start < len(body):
        end = min(len(body), (start // block + 1) * block)
        batches.append(body[start:end])
        start = end
    batches.append(list(ids[-1:]))
    return keep, batches


class LogitPrimary(ABC):
    """A local model whose next-token distribution and context the session controls."""

    name: str = "primary"
    #: Largest number of tokens (prompt + response) the context holds.
    context_length: int = 2048

    def __init__(self) -> None:
        self._lock = threading.Lock()

    # -- prompts and text ---------------------------------------------------------------------
    @property
    @abstractmethod
    def vocab_size(self) -> int: ...

    @property
    @abstractmethod
    def eos_token_ids(self) -> frozenset[int]: ...

    @abstractmethod
    def chat_prompt(self, messages: Sequence[Message]) -> list[int]:
        """Token ids of the conversation, ending where the assistant's answer begins."""

    @abstractmethod
    def completion_prompt(self, text: str) -> list[int]:
        """Token ids of a raw text to be continued (with BOS where the model expects one)."""

    @abstractmethod
    def encode(self, text: str) -> list[int]:
        """Token ids of plain text, with no special tokens (no BOS)."""

    @abstractmethod
    def decode(self, ids: Sequence[int]) -> str:
        """Text of response tokens, with a split trailing character dropped (see :func:`stable_text`)."""

    # -- decoding state -----------------------------------------------------------------------
    @abstractmethod
    def reset(self, ids: Sequence[int]) -> np.ndarray:
        """Make ``ids`` the whole context (reusing any cached common prefix); return next-token logits."""

    @abstractmethod
    def step(self, token_id: int) -> np.ndarray:
        """Append one token to the context; return the next-token logits."""

    @abstractmethod
    def truncate(self, length: int) -> np.ndarray:
        """Keep the first ``length`` tokens of the context; return the logits that follow them."""

    @property
    @abstractmethod
    def context_ids(self) -> list[int]:
        """The token ids currently in the context."""

    # -- concurrency --------------------------------------------------------------------------
    def claim(self) -> None:
        """Take the primary's one decoding state for a generation (PrimaryBusyError when another holds it)."""
        if not self._lock.acquire(blocking=False):
            raise PrimaryBusyError(
                f"primary {self.name!r} is already generating; local primaries hold one decoding state, "
                "so use one primary per concurrent generation (or wait for the other to finish)"
            )

    def free(self) -> None:
        """Give the decoding state back (the generation that claimed it ended)."""
        self._lock.release()

    def check_fits(self, prompt_tokens: int, max_tokens: int) -> None:
        if prompt_tokens + max_tokens > self.context_length:
            raise InputError(
                f"prompt ({prompt_tokens} tokens) + max_tokens ({max_tokens}) exceeds the context of "
                f"{self.name!r} ({self.context_length} tokens); lower max_tokens or shorten the messages"
            )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"
