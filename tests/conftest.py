from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

CORPUS = [
    "the cat sat on the mat and looked at the sky",
    "you are a kind and thoughtful person, thank you",
    "we went to the market to buy apples and bread",
    "hello there, how are you doing today?",
    "she is a bitch and he is an idiot",
] * 20

CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>{{ message['content'] }}</s>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def build_tiny_tokenizer():  # type: ignore[no-untyped-def]
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=["</s>", "<|user|>", "<|assistant|>", "<|system|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(CORPUS, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="</s>")
    fast.chat_template = CHAT_TEMPLATE
    return fast


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-weight Llama with a BPE tokenizer trained here, saved like any HF model."""
    torch = pytest.importorskip("torch")
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = build_tiny_tokenizer()
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        eos_token_id=tokenizer.eos_token_id, bos_token_id=None, pad_token_id=None,
    )
    model = LlamaForCausalLM(config)
    path = tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_primary(tiny_model_dir: Path):  # type: ignore[no-untyped-def]
    from supervisor import load_primary

    return load_primary(str(tiny_model_dir))


@pytest.fixture(scope="session")
def smollm2_llama():  # type: ignore[no-untyped-def]
    pytest.importorskip("llama_cpp")
    from supervisor import load_primary

    return load_primary("smollm2:llama-cpp")


@pytest.fixture(scope="session")
def llama_server_url() -> Iterator[str]:
    """A real OpenAI-compatible server (llama_cpp.server) serving the embedded SmolLM2 as 'smollm2'."""
    from tests.openai_servers import llama_server_env_url, llama_server_unless

    url = llama_server_env_url()
    if not url:
        pytest.importorskip("llama_cpp.server", reason="needs llama-cpp-python[server]")
    with llama_server_unless(url) as served:
        yield served
