"""The logit engine on a scripted primary: what only it does (reranking, windows over a real scorer, KV reuse,
sampling). The policy's contract for both engines is in test_contract.py."""

from __future__ import annotations

import asyncio

import pytest
from helpers import ConstantScorer, FailingScorer, KeywordScorer, ScriptedPrimary

from supervisor import Policy, Supervisor

CHAT = [{"role": "user", "content": "tell me about your day"}]


def split_script(prefix: str, word_head: str, word_tail: str, rest: str, every: int) -> str:
    """Pad ``prefix`` so that a checkpoint boundary falls between ``word_head`` and ``word_tail``."""
    while (len(prefix) + len(word_head)) % every:
        prefix = " " + prefix
    return prefix + word_head + word_tail + rest


def run_stream(sup: Supervisor, primary: ScriptedPrimary, **kwargs: object):  # type: ignore[no-untyped-def]
    stream = sup.stream(primary, CHAT, max_tokens=200, temperature=0.0, **kwargs)  # type: ignore[arg-type]
    deltas = list(stream)
    assert stream.result is not None
    return deltas, stream.result


def test_phrase_split_across_a_checkpoint_is_caught_by_overlapping_windows() -> None:
    script = split_script("the sky is blue and she is a ", "bi", "tch", " and then we left", every=8)
    # steering off: on a one-character-per-token primary it would stop "bitc" + "h" itself (test_steering.py)
    overlapping = Policy(checkpoint_every=8, first_checkpoint_tokens=8, window_tokens=24, holdback_checkpoints=1,
                         steering="off")
    deltas, result = run_stream(Supervisor(scorer="lexical", policy=overlapping), ScriptedPrimary(script))
    assert "bitch" not in result.text
    assert result.count("rollback") >= 1
    assert "".join(deltas) == result.text
    assert [p.action for p in result.trace].count("rollback") == result.count("rollback")
    assert result.trace[-1].final and all(0 <= p.risk <= 1 for p in result.trace)

    # The same text with windows that do not overlap and no holdback: a window ends where the last whole word does
    # (the word in progress waits for the next one), so neither half of the word is scored alone and it never
    # reaches the user.
    disjoint = Policy(checkpoint_every=8, first_checkpoint_tokens=8, window_tokens=8, holdback_checkpoints=0,
                      full_window_every=1000, steering="off", short_window_words=0, release_whole_words=False)
    _, caught = run_stream(Supervisor(scorer="lexical", policy=disjoint), ScriptedPrimary(script))
    assert "bitch" not in caught.text and "bi" not in caught.text.split()


def test_harm_that_builds_up_is_caught_by_the_whole_response_window() -> None:
    script = "a bad day. " * 8
    policy = Policy(checkpoint_every=8, window_tokens=24, full_window_every=1000, watch_threshold=0.35, act_threshold=0.7)
    scorer = KeywordScorer(word="bad", step=0.2)  # no 24-char window holds more than 3: 0.6 < 0.7 (watch zone)
    _, result = run_stream(Supervisor(scorer=scorer, policy=policy), ScriptedPrimary(script))
    full_events = [e for e in result.events if e.window == "full"]
    assert full_events, result.events
    assert full_events[0].position < len(script)  # caught mid-stream, not only at the end
    assert result.text.count("bad") <= 3
    # the windows and the whole response are scored in one batched call (the whole response last)
    assert any(len(texts) >= 2 and len(texts[-1]) > max(len(t) for t in texts[:-1]) for texts in scorer.calls)


def test_reprompt_steers_from_the_safe_checkpoint() -> None:
    primary = ScriptedPrimary("you are such a bitch, really", fallback=" I hope you have a lovely day.")
    # checkpoints at 8, 16, 24: the default scorer flags the window "you are such a bitch, re" (0.68) but
    # not the whole sentence (0.57 < 0.6), a known weakness of the embedding probe (README)
    policy = Policy(max_rollbacks=0, max_reprompts=1, first_checkpoint_tokens=8, steering="off")
    _, result = run_stream(Supervisor(policy=policy), primary)
    assert [e.kind for e in result.events] == ["reprompt"]
    assert result.stop_reason == "stop"
    assert "bitch" not in result.text and "lovely day" in result.text
    assert "respectful" in primary.decode(primary.context_ids)  # the instruction is in the context


def test_scorer_timeout_fails_closed() -> None:
    primary = ScriptedPrimary("a perfectly pleasant sentence about the weather today.")
    sup = Supervisor(scorer=FailingScorer(fail_after=0, hang_s=1.0), policy=Policy(scorer_timeout_s=0.1))
    _, result = run_stream(sup, primary)
    assert result.stop_reason == "scorer_error"
    assert result.error and "did not answer within 0.1 s" in result.error


def test_watch_zone_reranks_candidates_in_one_batched_call() -> None:
    scorer = ConstantScorer(0.45)
    policy = Policy(watch_threshold=0.35, act_threshold=0.6, rerank_top_k=4)
    _, result = run_stream(Supervisor(scorer=scorer, policy=policy), ScriptedPrimary("hello there my friend."),
                           )
    assert result.count("bias") == 1
    batched = [texts for texts in scorer.calls if len(texts) >= 2 and texts[0][:-1] == texts[1][:-1]]
    assert batched, "no batched candidate call was made in the watch zone"


def test_unsupervised_mode_makes_no_scorer_calls() -> None:
    scorer = ConstantScorer(0.99)
    _, result = run_stream(Supervisor(scorer=scorer), ScriptedPrimary("you are such a bitch"), supervise=False)
    assert result.text == "you are such a bitch" and scorer.calls == [] and result.events == []


def test_closing_a_stream_early_keeps_what_was_released() -> None:
    primary = ScriptedPrimary("one two three four five six seven eight nine ten " * 3)
    stream = Supervisor().stream(primary, CHAT, max_tokens=150, temperature=0.0)
    first = next(stream)
    stream.close()
    assert stream.result is not None and stream.result.text == first
    assert stream.result.stop_reason == "cancelled"
    # the primary is free again
    assert Supervisor().generate(primary, CHAT, max_tokens=10, temperature=0.0).text


def test_prompt_mode_and_max_tokens_stop() -> None:
    primary = ScriptedPrimary("abcdefghijklmnopqrstuvwxyz")
    result = Supervisor().generate(primary, prompt="letters:", max_tokens=10, temperature=0.0)
    assert result.stop_reason == "length" and result.text == "abcdefghij"
    assert result.usage.completion_tokens == 10


@pytest.mark.parametrize("seed", range(3))
def test_sampling_is_reproducible_with_a_seed(tiny_primary, seed: int) -> None:  # type: ignore[no-untyped-def]
    sup = Supervisor()
    a = sup.generate(tiny_primary, CHAT, max_tokens=20, temperature=1.0, seed=seed)
    b = sup.generate(tiny_primary, CHAT, max_tokens=20, temperature=1.0, seed=seed)
    assert a.text == b.text
    assert [(e.kind, e.position) for e in a.events] == [(e.kind, e.position) for e in b.events]


def test_concurrent_async_generations_do_not_mix() -> None:
    sup = Supervisor()
    scripts = [f"conversation number {i} says hello {i}." for i in range(6)]

    async def run_all() -> list[str]:
        results = await asyncio.gather(*[
            sup.agenerate(ScriptedPrimary(script), CHAT, max_tokens=80, temperature=0.0) for script in scripts
        ])
        return [r.text for r in results]

    assert asyncio.run(run_all()) == scripts
