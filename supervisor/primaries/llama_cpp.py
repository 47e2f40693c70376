"""llama.cpp primary (llama-cpp-python): token-by-token decoding, rollback by n_past.

Rolling back sets the context length (``n_tokens``) back; the next ``eval`` removes the KV
entries beyond it (``kv_cache_seq_rm``) before decoding, so the prompt is never re-run.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from supervisor.errors import InputError, MissingDependencyError, ModelNotFoundError
from supervisor.messages import Message
from supervisor.primaries.base import LogitPrimary, plan_prefill, stable_text


def _import_llama_cpp() -> Any:
    try:
        import llama_cpp
    except ImportError as exc:
        raise MissingDependencyError("the llama.cpp primary", "llama-cpp-python", "llama-cpp") from exc
    return llama_cpp


class LlamaCppPrimary(LogitPrimary):
    """Any GGUF model on llama.cpp, with the chat template from its metadata."""

    def __init__(self, llama: Any, *, name: str | None = None) -> None:
        super().__init__()
        self.llama = llama
        self.name = name or Path(llama.model_path).name
        self.context_length = int(llama.n_ctx())
        self._n_vocab = int(llama.n_vocab())
        self._logits: np.ndarray | None = None
        self._evaluated: list[int] = []  # the prompt body the cache holds (see plan_prefill)
        self._formatter: Any = None
        metadata = getattr(llama, "metadata", {}) or {}
        self._template = metadata.get("tokenizer.chat_template")
        eos = {int(llama.token_eos())}
        eot = metadata.get("tokenizer.ggml.eot_token_id")
        if eot is not None:
            eos.add(int(eot))
        self._eos = frozenset(t for t in eos if t >= 0)

    @classmethod
    def from_file(
        cls,
        path: str | Path,
        *,
        n_ctx: int = 2048,
        n_threads: int | None = None,
        name: str | None = None,
        **llama_kwargs: Any,
    ) -> LlamaCppPrimary:
        llama_cpp = _import_llama_cpp()
        path = Path(path)
        if not path.is_file():
            raise ModelNotFoundError(f"GGUF file {str(path)!r} does not exist")
        try:
            llama = llama_cpp.Llama(
                model_path=str(path), n_ctx=n_ctx, n_threads=n_threads or os.cpu_count(), verbose=False,
                **llama_kwargs,
            )
        except (ValueError, RuntimeError) as exc:
            raise ModelNotFoundError(f"llama.cpp could not load {str(path)!r}: {exc}") from exc
        return cls(llama, name=name)

    # -- prompts and text ---------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return self._n_vocab

    @property
    def eos_token_ids(self) -> frozenset[int]:
        return self._eos

    def _special_text(self, token_id: int) -> str:
        if token_id < 0:
            return ""
        return bytes(self.llama.detokenize([token_id], special=True)).decode("utf-8", errors="replace")

    def chat_prompt(self, messages: Sequence[Message]) -> list[int]:
        if not self._template:
            raise InputError(
                f"primary {self.name!r} has no chat template in its GGUF metadata; use completion mode instead"
            )
        if self._formatter is None:
            from llama_cpp.llama_chat_format import Jinja2ChatFormatter

            self._formatter = Jinja2ChatFormatter(
                template=self._template,
                eos_token=self._special_text(self.llama.token_eos()),
                bos_token=self._special_text(self.llama.token_bos()),
            )
        prompt = self._formatter(messages=list(messages)).prompt
        return list(self.llama.tokenize(prompt.encode("utf-8"), add_bos=False, special=True))

    def completion_prompt(self, text: str) -> list[int]:
        return list(self.llama.tokenize(text.encode("utf-8"), add_bos=True, special=False))

    def encode(self, text: str) -> list[int]:
        return list(self.llama.tokenize(text.encode("utf-8"), add_bos=False, special=False)) if text else []

    def decode(self, ids: Sequence[int]) -> str:
        if not ids:
            return ""
        data = bytes(self.llama.detokenize(list(ids)))
        return stable_text(data.decode("utf-8", errors="replace"))

    # -- decoding state -----------------------------------------------------------------------
    @property
    def context_ids(self) -> list[int]:
        return [int(t) for t in self.llama.input_ids[: self.llama.n_tokens]]

    def _eval(self, ids: Sequence[int]) -> np.ndarray:
        llama = self.llama
        if llama.n_tokens + len(ids) > self.context_length:
            raise InputError(f"context of {self.name!r} is full ({self.context_length} tokens)")
        llama.eval(list(ids))
        row = np.ctypeslib.as_array(llama._ctx.get_logits(), shape=(self._n_vocab,))
        self._logits = np.array(row, dtype=np.float32, copy=True)
        return self._logits

    def reset(self, ids: Sequence[int]) -> np.ndarray:
        ids = [int(t) for t in ids]
        if not ids:
            raise InputError("the prompt encodes to no tokens")
        keep, batches = plan_prefill(self.context_ids, self._evaluated, ids)
        self.llama.n_tokens = keep  # the next eval drops the KV entries beyond it
        self._evaluated = []
        for batch in batches:
            logits = self._eval(batch)
        self._evaluated = ids[:-1]
        return logits

    def step(self, token_id: int) -> np.ndarray:
        return self._eval([token_id])

    def truncate(self, length: int) -> np.ndarray:
        current = self.llama.n_tokens
        if not 1 <= length <= current:
            raise InputError(f"cannot truncate a context of {current} tokens to {length}")
        if length == current and self._logits is not None:
            return self._logits
        # The logits of a position are not kept: step back one more and decode the last kept
        # token again (eval drops the KV entries from n_tokens on before decoding).
        last = int(self.llama.input_ids[length - 1])
        self.llama.n_tokens = length - 1
        return self._eval([last])
