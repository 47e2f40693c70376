"""Logit-controlled primaries: rollback is exact and never re-runs the prompt."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import recorded_forward_shapes

from supervisor import InputError, PrimaryBusyError, Supervisor, load_primary
from supervisor.primaries.base import LogitPrimary

CHAT = [{"role": "user", "content": "hello there, how are you doing today?"}]


def fresh_stepwise(primary_factory, prompt: list[int], tokens: list[int]) -> np.ndarray:  # type: ignore[no-untyped-def]
    fresh: LogitPrimary = primary_factory()
    logits = fresh.reset(prompt)
    for token in tokens:
        logits = fresh.step(token)
    return logits.copy()


def check_rollback_exact(primary: LogitPrimary, factory, batched_atol: float) -> None:  # type: ignore[no-untyped-def]
    prompt = primary.chat_prompt(CHAT)
    rng = np.random.default_rng(0)
    tokens = [int(t) for t in rng.integers(10, min(primary.vocab_size, 250), size=12)]
    primary.reset(prompt)
    for token in tokens:
        primary.step(token)
    for keep in (9, 4, 1):
        rolled = primary.truncate(len(prompt) + keep).copy()
        assert primary.context_ids == prompt + tokens[:keep]
        # bit-exact against a fresh context decoding the same tokens the same way
        np.testing.assert_array_equal(rolled, fresh_stepwise(factory, prompt, tokens[:keep]))
        # and equal, up to batched-kernel rounding, to a fresh batched forward pass on the prefix
        batched = factory().reset(prompt + tokens[:keep]).copy()
        np.testing.assert_allclose(rolled, batched, atol=batched_atol, rtol=0)
        assert int(np.argmax(rolled)) == int(np.argmax(batched))
        for token in tokens[keep:]:
            primary.step(token)


def test_transformers_rollback_is_exact_and_crops_the_cache(tiny_model_dir: Path) -> None:
    primary = load_primary(str(tiny_model_dir))
    check_rollback_exact(primary, lambda: load_primary(str(tiny_model_dir)), batched_atol=1e-4)
    # Rollback feeds one token, never the prompt again.
    with recorded_forward_shapes(primary.model) as shapes:
        prompt = primary.chat_prompt(CHAT)
        primary.reset(prompt + [50, 60, 70, 80])
        shapes.clear()
        primary.step(90)
        primary.reset(prompt + [50, 60, 70, 80])  # the same prompt again: only its last token runs
        assert [length for _, length in shapes] == [1, 1]
        shapes.clear()
        primary.truncate(len(prompt) + 2)
        assert [length for _, length in shapes] == [1]


def test_prompt_evaluation_does_not_depend_on_what_ran_before(tiny_model_dir: Path) -> None:
    """Issue 10 (same seed, different text): the logits after a prompt are bit-identical whatever the cache
    held; a longer prompt reuses the aligned blocks it shares with the last one."""
    primary = load_primary(str(tiny_model_dir))
    fresh = load_primary(str(tiny_model_dir))
    prompt = primary.chat_prompt(CHAT)
    other = primary.chat_prompt([{"role": "user", "content": "the cat sat on the mat"}])
    expected = fresh.reset(prompt).copy()
    for before in (other, prompt + [50, 60, 70], prompt, prompt[:-1]):
        primary.reset(before)
        for token in (50, 51):
            primary.step(token)
        assert np.array_equal(primary.reset(prompt), expected), before
    long = [int(t) for t in (prompt * 40)[:150]]
    primary.reset(long)
    with recorded_forward_shapes(primary.model) as shapes:
        primary.reset(long[:140] + [50, 60, 70])  # shares two aligned blocks of 64 tokens
    assert [length for _, length in shapes] == [140 - 128 + 2, 1]

def test_transformers_loads_by_hf_prefix_and_decodes(tiny_model_dir: Path) -> None:
    primary = load_primary(f"hf:{tiny_model_dir}")
    ids = primary.completion_prompt("the cat sat")
    assert primary.decode(ids) == "the cat sat"
    assert primary.eos_token_ids == frozenset({primary.tokenizer.eos_token_id})
    with pytest.raises(InputError, match="cannot truncate"):
        primary.reset(ids)
        primary.truncate(len(ids) + 5)


def test_local_primary_refuses_two_generations_at_once(tiny_primary) -> None:  # type: ignore[no-untyped-def]
    sup = Supervisor()
    first = sup.stream(tiny_primary, CHAT, max_tokens=40, temperature=1.0, seed=1)
    try:
        next(iter(first), None)
        with pytest.raises(PrimaryBusyError, match="already generating"):
            sup.generate(tiny_primary, CHAT, max_tokens=5)
    finally:
        first.close()
    assert sup.generate(tiny_primary, CHAT, max_tokens=5, seed=1).usage.prompt_tokens > 0


@pytest.mark.llama_cpp
def test_llama_cpp_rollback_is_exact(smollm2_llama) -> None:  # type: ignore[no-untyped-def]
    # Q4_1 batched prefill and single-token decoding use different kernels: they agree to ~0.3 logits.
    check_rollback_exact(smollm2_llama, lambda: load_primary("smollm2:llama-cpp"), batched_atol=1.0)


@pytest.mark.llama_cpp
def test_llama_cpp_chat_prompt_matches_transformers_template(smollm2_llama) -> None:  # type: ignore[no-untyped-def]
    ids = smollm2_llama.chat_prompt(CHAT)
    text = bytes(smollm2_llama.llama.detokenize(ids, special=True)).decode()
    assert text.startswith("<|im_start|>system\n") and text.endswith("<|im_start|>assistant\n")
    assert "hello there, how are you doing today?" in text
