"""Transformers primary: step-by-step decoding with the KV cache, exact rollback by cropping it."""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from supervisor.errors import InputError, MissingDependencyError, ModelNotFoundError
from supervisor.messages import Message
from supervisor.primaries.base import LogitPrimary, plan_prefill, stable_text

MAX_CONTEXT = 8192


def _import_torch() -> Any:
    try:
        import torch
        import transformers  # noqa: F401
    except ImportError as exc:
        raise MissingDependencyError("the transformers primary", "transformers and torch", "transformers") from exc
    return torch


class TransformersPrimary(LogitPrimary):
    """Any Hugging Face causal LM (by name, directory, or a GGUF file inside a directory)."""

    def __init__(self, model: Any, tokenizer: Any, *, name: str | None = None) -> None:
        super().__init__()
        self._torch = _import_torch()
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.name = name or getattr(model.config, "name_or_path", "") or type(model).__name__
        positions = getattr(model.config, "max_position_embeddings", None) or MAX_CONTEXT
        self.context_length = int(min(positions, MAX_CONTEXT))
        parameters = inspect.signature(model.forward).parameters
        self._cache_kwarg = "cache" if "cache" in parameters else "past_key_values"
        self._ids: list[int] = []
        self._cache: Any = None
        self._logits: np.ndarray | None = None
        #: When set (by a state probe), the hidden state of this layer is kept for every context token.
        self.probe_layer: int | None = None
        self._hidden: list[np.ndarray] = []
        self._evaluated: list[int] = []  # the prompt body the cache holds (see plan_prefill)
        eos: set[int] = set()
        for source in (tokenizer.eos_token_id, getattr(model.generation_config, "eos_token_id", None)):
            if isinstance(source, int):
                eos.add(source)
            elif isinstance(source, (list, tuple)):
                eos.update(int(t) for t in source)
        self._eos = frozenset(eos)
        self.device = next(model.parameters()).device

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | Path,
        *,
        gguf_file: str | None = None,
        device: str = "cpu",
        dtype: str = "float32",
        name: str | None = None,
        **model_kwargs: Any,
    ) -> TransformersPrimary:
        """Load model and tokenizer; ``gguf_file`` names a GGUF inside ``name_or_path`` (dequantized)."""
        torch = _import_torch()
        from transformers import AutoModelForCausalLM, AutoTokenizer

        torch_dtype = getattr(torch, dtype, None)
        if not isinstance(torch_dtype, torch.dtype):
            raise InputError(f"dtype {dtype!r} is not a torch dtype; accepted: float32, bfloat16, float16")
        extra: dict[str, Any] = {"gguf_file": gguf_file} if gguf_file else {}
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(name_or_path), **extra)
            model = AutoModelForCausalLM.from_pretrained(str(name_or_path), dtype=torch_dtype, **extra, **model_kwargs)
        except (OSError, ValueError) as exc:
            raise ModelNotFoundError(
                f"could not load a causal LM from {str(name_or_path)!r}"
                + (f" (gguf_file={gguf_file!r})" if gguf_file else "")
                + f": {exc}"
            ) from exc
        model.to(device)  # type: ignore[arg-type]
        return cls(model, tokenizer, name=name or str(name_or_path))

    # -- prompts and text ---------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return int(self.model.config.vocab_size)

    @property
    def eos_token_ids(self) -> frozenset[int]:
        return self._eos

    def chat_prompt(self, messages: Sequence[Message]) -> list[int]:
        if not getattr(self.tokenizer, "chat_template", None):
            raise InputError(
                f"primary {self.name!r} has no chat template; use completion mode (a prompt string) instead"
            )
        encoded = self.tokenizer.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=True)
        if isinstance(encoded, dict) or hasattr(encoded, "keys"):
            encoded = encoded["input_ids"]
        return [int(t) for t in encoded]

    def completion_prompt(self, text: str) -> list[int]:
        return [int(t) for t in self.tokenizer(text)["input_ids"]]

    def encode(self, text: str) -> list[int]:
        return [int(t) for t in self.tokenizer(text, add_special_tokens=False)["input_ids"]]

    def decode(self, ids: Sequence[int]) -> str:
        text = self.tokenizer.decode(list(ids), skip_special_tokens=True, clean_up_tokenization_spaces=False)
        return stable_text(text)

    # -- decoding state -----------------------------------------------------------------------
    @property
    def context_ids(self) -> list[int]:
        return list(self._ids)

    def _forward(self, ids: Sequence[int]) -> np.ndarray:
        torch = self._torch
        if self._cache is None:
            from transformers import DynamicCache

            self._cache = DynamicCache(config=self.model.config)
        with torch.inference_mode():
            out = self.model(
                input_ids=torch.tensor([list(ids)], device=self.device),
                use_cache=True,
                output_hidden_states=self.probe_layer is not None,
                **{self._cache_kwarg: self._cache},
            )
        if self.probe_layer is not None:
            self._hidden.extend(out.hidden_states[self.probe_layer][0].float().cpu().numpy())
        self._ids.extend(int(t) for t in ids)
        self._logits = out.logits[0, -1].float().cpu().numpy()
        return self._logits

    def _drop_cache(self) -> None:
        self._cache = None
        self._ids = []
        self._hidden = []
        self._logits = None
        self._evaluated = []

    def enable_probe(self, layer: int) -> None:
        """Keep ``layer``'s hidden state for every token from now on (the next reset re-runs the prompt)."""
        layers = int(self.model.config.num_hidden_layers)
        if not 0 <= layer <= layers:
            raise InputError(f"probe layer {layer} does not exist; accepted: 0 to {layers}")
        self.probe_layer = layer
        self._drop_cache()

    def hidden_states(self, start: int, end: int) -> np.ndarray:
        """Hidden states of ``probe_layer`` for context positions ``start:end`` (one row per token)."""
        if self.probe_layer is None or len(self._hidden) != len(self._ids):
            raise InputError("hidden states are kept only while probe_layer is set, from the next reset on")
        return np.stack(self._hidden[start:end]) if end > start else np.zeros((0, self.model.config.hidden_size))

    def text_hidden_states(self, texts: Sequence[str], layer: int, batch_size: int = 16) -> np.ndarray:
        """Mean hidden state of ``layer`` over each text's tokens, from a separate forward pass
        (the decoding cache is not touched)."""
        return self.pooled_hidden_states(texts, [layer], batch_size)[0]

    def pooled_hidden_states(self, texts: Sequence[str], layers: Sequence[int], batch_size: int = 16) -> list[np.ndarray]:
        """Like :meth:`text_hidden_states` for several layers at once (one forward pass per batch)."""
        torch = self._torch
        pad = self.tokenizer.pad_token_id
        if pad is None:
            pad = self.tokenizer.eos_token_id or 0
        rows: list[list[np.ndarray]] = [[] for _ in layers]
        for begin in range(0, len(texts), batch_size):
            encoded = [self.completion_prompt(t if t.strip() else ".")[:256] for t in texts[begin : begin + batch_size]]
            width = max(len(e) for e in encoded)
            ids = torch.tensor([e + [pad] * (width - len(e)) for e in encoded], device=self.device)
            mask = torch.tensor([[1] * len(e) + [0] * (width - len(e)) for e in encoded], device=self.device)
            with torch.inference_mode():
                hidden = self.model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
            weights = mask.unsqueeze(-1).float()
            for slot, layer in enumerate(layers):
                pooled = (hidden[layer].float() * weights).sum(1) / weights.sum(1)
                rows[slot].append(pooled.cpu().numpy())
        return [np.concatenate(r) for r in rows]

    def reset(self, ids: Sequence[int]) -> np.ndarray:
        ids = [int(t) for t in ids]
        if not ids:
            raise InputError("the prompt encodes to no tokens")
        keep, batches = plan_prefill(self._ids, self._evaluated, ids)
        if not self._crop(keep):
            self._drop_cache()
            keep, batches = plan_prefill([], [], ids)
        self._evaluated = []
        for batch in batches:
            logits = self._forward(batch)
        self._evaluated = ids[:-1]
        return logits

    def step(self, token_id: int) -> np.ndarray:
        return self._forward([token_id])

    def truncate(self, length: int) -> np.ndarray:
        if not 1 <= length <= len(self._ids):
            raise InputError(f"cannot truncate a context of {len(self._ids)} tokens to {length}")
        if length == len(self._ids) and self._logits is not None:
            return self._logits
        ids = self._ids[:length]
        # Keep the cache one token short and feed the last kept token again: that yields the exact
        # logits after the prefix without storing a vocabulary-sized row per position.
        if not self._crop(length - 1):
            self._drop_cache()
            return self._forward(ids)
        return self._forward(ids[-1:])

    def _crop(self, keep: int) -> bool:
        """Keep the first ``keep`` tokens of the cache; False when it cannot be cropped there (nothing to
        keep, or a sliding-window / linear-attention cache: the caller re-runs the prefix)."""
        if keep == 0 or self._cache is None:
            return False
        if keep < len(self._ids):
            try:
                self._cache.crop(-(self._cache.get_seq_length() - keep))
            except (RuntimeError, ValueError, AttributeError):
                return False
        self._ids = self._ids[:keep]
        self._hidden = self._hidden[:keep]
        return True
