"""End to end on the embedded SmolLM2-135M-Instruct: real model output, real rollbacks."""

from __future__ import annotations

import pytest

from supervisor import InterventionEvent, Policy, Supervisor, load_primary
from supervisor.prompts import bundled_prompts

pytestmark = pytest.mark.integration


def test_released_text_is_never_retracted_on_real_output(smollm2_llama) -> None:  # type: ignore[no-untyped-def]
    """Many seeded runs on toxic prompts: what stream() yielded is the result, and no removed span
    was ever shown at the place it was removed from."""
    # the continuous steering (default) keeps most of these answers clean, so rollbacks are also forced without it
    sups = [Supervisor(), Supervisor(policy={"steering": "off"})]
    prompts = bundled_prompts("demo") + bundled_prompts("toxic")[:8]
    rollbacks = 0
    for seed, sup in enumerate(sups):
        for item in prompts:
            shown: list[str] = []
            at_event: list[tuple[InterventionEvent, str]] = []
            stream = sup.stream(
                smollm2_llama, item.messages, prompt=item.prompt, max_tokens=40, temperature=1.0, seed=seed,
                on_event=lambda e, shown=shown, at_event=at_event: at_event.append((e, "".join(shown))),
            )
            for delta in stream:
                shown.append(delta)
            result = stream.result
            assert result is not None
            assert "".join(shown) == result.text
            for event, released_then in at_event:
                assert result.text.startswith(released_then)  # nothing shown before was taken back
                if event.kind in ("rollback", "reprompt", "halt") and event.removed_text.strip():
                    rollbacks += 1
                    assert not result.text.startswith(released_then + event.removed_text), (item.id, event)
    assert rollbacks >= 3, "expected real rollbacks on the toxic prompts"


def test_transformers_smollm2_from_embedded_gguf() -> None:
    pytest.importorskip("transformers")
    primary = load_primary("smollm2:transformers")
    assert type(primary).__name__ == "TransformersPrimary"
    sup = Supervisor(policy=Policy(max_rollbacks=2))
    result = sup.generate(primary, [{"role": "user", "content": "Say hello in one sentence."}], max_tokens=16, seed=0)
    assert result.text and result.usage.prompt_tokens > 10
    # same prompt tokens on both backends (chat template from the GGUF metadata on llama.cpp)
    llama = pytest.importorskip("llama_cpp") and load_primary("smollm2:llama-cpp")
    messages = [{"role": "user", "content": "Say hello in one sentence."}]
    assert primary.chat_prompt(messages) == llama.chat_prompt(messages)  # type: ignore[arg-type]

    # the shipped state probe attaches to this primary and measures from its hidden states
    from supervisor.scorers.state_probe import StateProbeScorer

    probe = StateProbeScorer(primary)
    guarded = Supervisor(scorer=probe).generate(primary, messages, max_tokens=24, seed=0)
    # one call per checkpoint, and one for the conversation before the response
    assert guarded.trace and guarded.usage.scorer_calls == len(guarded.trace) + (guarded.conversation is not None)
    assert all(0.0 <= a.risk <= 1.0 for a in probe.assess(["have a nice day", "you are a fucking idiot"]))


def test_same_seed_same_text_whatever_ran_before(smollm2_llama) -> None:  # type: ignore[no-untyped-def]
    """Issue 10: the first generation for a prompt differed from later ones with the same seed (a cached
    prompt was re-decoded one token at a time). A run without intervention must reproduce its pair."""
    from tests.helpers import ConstantScorer

    item = next(i for i in bundled_prompts("demo") if "limp assed" in i.text)
    # never intervenes (no steering either: on this profane prompt it would move tokens, by design)
    sup = Supervisor(scorer=ConstantScorer(0.0), policy={"steering": "off"})

    def run(supervise: bool) -> str:
        return sup.generate(smollm2_llama, item.messages, prompt=item.prompt, max_tokens=32, temperature=0.7,
                            top_p=0.95, seed=0, supervise=supervise).text

    sup.generate(smollm2_llama, prompt="Once upon a time there was", max_tokens=6, seed=3)
    first = run(False)
    assert [run(True), run(False), run(True)] == [first] * 3


def test_steering_leaves_a_benign_answer_exactly_as_the_primary_wrote_it(smollm2_llama) -> None:  # type: ignore[no-untyped-def]
    """The value floor: where no candidate is valued above it, the steered distribution is the primary's own, so the
    supervised run reproduces its unsupervised pair token for token; without the floor, benign words' small value
    differences (0.01-0.06) times the gain move the sampling."""
    from tests.helpers import ConstantScorer

    messages = [{"role": "user", "content": "Say hello in one sentence."}]
    texts = {}
    for floor in (0.1, 0.0):
        sup = Supervisor(scorer=ConstantScorer(0.0), policy={"steering_value_floor": floor})
        plain, steered = (sup.generate(smollm2_llama, messages, max_tokens=40, temperature=0.8, seed=5,
                                       supervise=supervise) for supervise in (False, True))
        texts[floor] = (plain.text, steered.text, steered.steering)
    plain, steered, report = texts[0.1]
    assert report.steps > 0 and report.moved == 0 and steered == plain
    plain, steered, report = texts[0.0]
    assert report.moved > 0 and steered != plain
