"""Primaries: the models being supervised. ``load_primary(name)`` builds one.

Accepted names:
- ``"smollm2"``: the embedded SmolLM2-135M-Instruct, on llama.cpp when installed, else transformers;
- ``"smollm2:llama-cpp"`` / ``"smollm2:transformers"``: the same on a chosen backend;
- ``"llama-cpp:PATH.gguf"`` or a path ending in ``.gguf``: any GGUF on llama.cpp;
- ``"hf:NAME_OR_PATH"`` or an existing directory: any Hugging Face causal LM on transformers;
- ``"openai:MODEL"`` (OpenAI, with the SDK's environment) or ``"openai:MODEL@http://host:port/v1"`` (any
  OpenAI-compatible server: vLLM, llama.cpp server, Ollama, LiteLLM): a hosted model under chunk-level
  control (see :mod:`supervisor.primaries.openai_compatible`).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from supervisor.errors import ModelNotFoundError
from supervisor.primaries.base import LogitPrimary, stable_text
from supervisor.primaries.chunk import ChunkPrimary
from supervisor.primaries.embedded import SMOLLM2_GGUF, smollm2_path

ACCEPTED = (
    "'smollm2', 'smollm2:llama-cpp', 'smollm2:transformers', 'llama-cpp:PATH.gguf', a path to a .gguf file, "
    "'hf:NAME_OR_PATH', a directory holding a Hugging Face causal LM, 'openai:MODEL' or "
    "'openai:MODEL@http://host:port/v1'"
)


def llama_cpp_available() -> bool:
    return importlib.util.find_spec("llama_cpp") is not None


def load_primary(name: str = "smollm2", **kwargs: Any) -> LogitPrimary | ChunkPrimary:
    """Load a primary by name; keyword arguments go to the backend's loader."""
    if not isinstance(name, str) or not name.strip():
        raise ModelNotFoundError(f"primary name must be a non-empty string; accepted: {ACCEPTED}")
    backend, _, rest = name.partition(":")
    if name == "smollm2":
        backend = "llama-cpp" if llama_cpp_available() else "transformers"
        rest = "smollm2"
    elif backend == "smollm2" and rest in ("llama-cpp", "transformers"):
        backend, rest = rest, "smollm2"

    if backend == "openai" and rest:
        from supervisor.primaries.openai_compatible import load_openai_primary

        return load_openai_primary(rest, **kwargs)
    if backend == "llama-cpp" and rest:
        from supervisor.primaries.llama_cpp import LlamaCppPrimary

        path = smollm2_path() if rest == "smollm2" else Path(rest)
        return LlamaCppPrimary.from_file(path, name=name if rest != "smollm2" else "smollm2", **kwargs)
    if backend in ("transformers", "hf") and rest:
        from supervisor.primaries.transformers import TransformersPrimary

        if rest == "smollm2":
            path = smollm2_path()
            return TransformersPrimary.from_pretrained(path.parent, gguf_file=path.name, name="smollm2", **kwargs)
        return TransformersPrimary.from_pretrained(rest, **kwargs)

    path = Path(name)
    if name.endswith(".gguf"):
        if not path.is_file():
            raise ModelNotFoundError(f"GGUF file {name!r} does not exist")
        from supervisor.primaries.llama_cpp import LlamaCppPrimary

        return LlamaCppPrimary.from_file(path, **kwargs)
    if path.is_dir():
        from supervisor.primaries.transformers import TransformersPrimary

        return TransformersPrimary.from_pretrained(path, **kwargs)
    raise ModelNotFoundError(f"unknown primary {name!r}; accepted: {ACCEPTED}")


__all__ = ["LogitPrimary", "SMOLLM2_GGUF", "load_primary", "llama_cpp_available", "smollm2_path", "stable_text"]
