"""The conversation's moral state: messages measured once (cached by prefix), a filter across turns, the request as
the prior of the response, an unsafe conversation answered under a safety instruction; on the chunk engine (sync
and async), the local engine, the OpenAI wrapper against a real server, and ``supervisor score --conversation``."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
from collections.abc import Sequence

from supervisor.assessment import Assessment
from supervisor.chunk_drivers import arun_chunked, run_chunked
from supervisor.chunk_engine import chunk_engine
from supervisor.conversation import ConversationMeasure
from supervisor.policy import Policy
from supervisor.scorers.base import BaseScorer
from tests.helpers import ScriptedPrimary
from tests.test_chunk_engine import ScriptedChunkPrimary


class StatedRisk(BaseScorer):
    """Reads the risk a text states ("risk 0.4"); 0 for text that states none. Records its calls."""

    name = "stated-risk"

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def assess(self, texts: Sequence[str]) -> list[Assessment]:
        self.calls.append(list(texts))
        values = [re.search(r"risk (0\.\d+|1\.0)", t) for t in texts]
        return [Assessment.from_categories({"toxicity": float(v.group(1)) if v else 0.0}) for v in values]


def conversation(*risks: float) -> list[dict[str, str]]:
    return [{"role": "user" if i % 2 == 0 else "assistant", "content": f"turn {i}, risk {r}"}
            for i, r in enumerate(risks)]


def test_a_slow_escalation_raises_the_state_before_any_single_turn_is_unsafe() -> None:
    turns = conversation(0.1, 0.2, 0.3, 0.4, 0.5, 0.55)
    assert all(float(t["content"].rsplit(" ", 1)[1]) < Policy().act_threshold for t in turns)
    # at the act threshold, the trend carries the conversation into the unsafe region while no turn is flagged
    at_act = Policy(conversation_threshold=Policy().act_threshold)
    measure = ConversationMeasure(turns, StatedRisk(), at_act)
    state = measure.state(StatedRisk().assess(measure.pending))
    assert not any(turn.flagged for turn in state.turns)
    assert state.zone == "unsafe" and state.turns[2].zone == "safe" and state.risk > max(t.risk for t in state.turns)
    # by default (conversation_threshold 0.8, for <= 2% benign conversations with an intervention) it is in the
    # watch zone from the fourth turn: the answer starts there (its prior), with no action yet
    default = ConversationMeasure(turns, StatedRisk(), Policy())
    zones = [t.zone for t in default.state(StatedRisk().assess(default.pending)).turns]
    assert zones[:3] == ["safe"] * 3 and zones[3:] == ["watch"] * 3
    flat = ConversationMeasure(conversation(0.5, 0.5, 0.5, 0.5), StatedRisk(), at_act)
    assert flat.state(StatedRisk().assess(flat.pending)).zone == "watch"  # steady, not escalating


def test_one_flagged_message_among_benign_ones_is_not_an_unsafe_conversation() -> None:
    measure = ConversationMeasure(conversation(0.05, 0.05, 0.7, 0.05, 0.05), StatedRisk(), Policy())
    state = measure.state(StatedRisk().assess(measure.pending))
    assert state.turns[2].flagged and state.zone != "unsafe"  # it enters the filter like any message


def test_one_message_at_the_conversation_threshold_marks_the_conversation_for_the_rest_of_it() -> None:
    policy = Policy()
    marked = ConversationMeasure(conversation(0.05, 0.05, 0.85, 0.05, 0.05, 0.05, 0.05), StatedRisk(), policy)
    state = marked.state(StatedRisk().assess(marked.pending))
    # the filter alone would let it go (the benign turns after it pull the level down); its riskiest message does not
    assert state.turns[-1].state_risk < policy.conversation_threshold <= state.peak
    assert [t.zone == "unsafe" for t in state.turns] == [False, False, True, True, True, True, True]
    assert state.zone == "unsafe"


def test_each_message_is_measured_once_per_scorer() -> None:
    scorer, policy = StatedRisk(), Policy()
    history = conversation(0.1, 0.1, 0.2)
    first = ConversationMeasure(history, scorer, policy)
    first.state(scorer.assess(first.pending))
    grown = ConversationMeasure([*history, {"role": "user", "content": "risk 0.3"}], scorer, policy)
    assert grown.pending == ["risk 0.3"]  # the stateless client resent the history: only the new message is scored
    other = ConversationMeasure(history, StatedRisk(), policy)
    assert len(other.pending) == 3  # another scorer object measures for itself
    changed = ConversationMeasure([{"role": "user", "content": "turn 0, risk 0.9"}, *history[1:]], scorer, policy)
    assert len(changed.pending) == 3  # an edited earlier message changes every prefix after it


def run_chunk(messages: list[dict[str, str]], scorer: BaseScorer, use_async: bool = False,
              policy: Policy | None = None) -> tuple[str, ScriptedChunkPrimary, object]:
    primary = ScriptedChunkPrimary(["A calm and helpful answer about gardens."])
    engine = chunk_engine(primary, None, policy or Policy(), max_tokens=64, conversation=messages, measured_by=scorer)

    async def collect() -> str:
        return "".join([t async for t in arun_chunked(engine, primary, None, scorer)])

    text = asyncio.run(collect()) if use_async else "".join(run_chunked(engine, primary, None, scorer))
    return text, primary, engine.result


def test_an_unsafe_request_is_answered_under_a_safety_instruction_and_says_so() -> None:
    for use_async in (False, True):
        scorer = StatedRisk()
        text, primary, result = run_chunk([{"role": "user", "content": "insult them, risk 0.9"}], scorer, use_async)
        policy = Policy()
        assert primary.attempts[0].instruction == policy.conversation_instruction
        assert result.events[0].kind == "conversation" and result.events[0].window == "conversation"  # type: ignore[attr-defined]
        assert result.conversation.zone == "unsafe" and result.conversation.turns[0].flagged  # type: ignore[attr-defined]
        assert text == "A calm and helpful answer about gardens."
        assert scorer.calls[0] == ["insult them, risk 0.9"]  # one batch for the conversation, before the response


def test_an_unsafe_conversation_can_get_a_refusal_turn_or_a_halt_without_asking_the_primary() -> None:
    for action, stop in (("refuse", "stop"), ("halt", "halt")):
        policy = Policy(conversation_action=action)
        expected = policy.conversation_refusal if action == "refuse" else policy.halt_message
        for use_async in (False, True):
            text, primary, result = run_chunk([{"role": "user", "content": "hurt them, risk 0.9"}], StatedRisk(),
                                              use_async, policy)
            assert text == expected and primary.attempts == []  # no upstream request
            assert result.stop_reason == stop and result.text == text  # type: ignore[attr-defined]
            assert result.conversation.action == action  # type: ignore[attr-defined]
            event = result.events[0]  # type: ignore[attr-defined]
            assert event.kind == "conversation" and ("refusal" if action == "refuse" else "halted") in event.detail
        benign, primary, result = run_chunk(conversation(0.0, 0.1), StatedRisk(), policy=policy)
        assert benign == "A calm and helpful answer about gardens." and len(primary.attempts) == 1
        assert result.conversation.action == "none"  # type: ignore[attr-defined]


def test_a_benign_conversation_changes_nothing() -> None:
    scorer = StatedRisk()
    text, primary, result = run_chunk(conversation(0.0, 0.0, 0.0), scorer)
    assert primary.attempts[0].instruction is None and result.events == []  # type: ignore[attr-defined]
    assert result.conversation.zone == "safe"  # type: ignore[attr-defined]
    plain_text, _, plain = run_chunk([], StatedRisk())
    assert text == plain_text and plain.conversation is None  # type: ignore[attr-defined]


def test_a_risky_request_starts_the_local_response_in_the_watch_zone() -> None:
    from supervisor.logit_engine import LogitEngine, Request
    from supervisor.sampling import SamplingParams

    policy = Policy(steering="off")
    request = Request(messages=[{"role": "user", "content": "say something, risk 0.8"}], prompt=None, max_tokens=8,
                      sampling=SamplingParams(temperature=0.0))
    engine = LogitEngine(ScriptedPrimary("all fine here"), StatedRisk(), policy, request)
    assert engine.core.steering_gain() == policy.steering_gain  # before: nothing known
    text = "".join(engine.run())
    assert text and engine.result is not None and engine.result.conversation is not None
    assert engine.core.estimator.prior["toxicity"] == policy.conversation_prior * engine.result.conversation.level[
        "toxicity"]
    assert engine.result.events[0].kind == "conversation"


def test_a_completion_prompt_is_the_request_its_continuation_starts_from() -> None:
    from supervisor.logit_engine import LogitEngine, Request
    from supervisor.sampling import SamplingParams

    policy = Policy(steering="lexical", conversation_action="refuse")
    risky = Request(messages=None, prompt="And then he called them, risk 0.9", max_tokens=32,
                    sampling=SamplingParams(temperature=0.0))
    engine = LogitEngine(ScriptedPrimary("all fine here"), StatedRisk(), policy, risky)
    assert engine.core.steering_gain() == policy.steering_gain
    assert "".join(engine.run()) == "all fine here"  # continued, not refused: a prompt is the prior only
    assert engine.result is not None and engine.result.conversation is not None
    assert [t.role for t in engine.result.conversation.turns] == ["user"]
    assert engine.result.conversation.zone == "unsafe" and engine.result.conversation.action == "none"
    event = engine.result.events[0]  # explained, though nothing was done but the prior
    assert event.kind == "conversation" and "no conversation action" in event.detail
    assert engine.core.estimator.prior["toxicity"] == policy.conversation_prior * 0.9
    # measured only when the policy uses the conversation: prior 0 and no action leave a prompt unmeasured
    unmeasured = LogitEngine(ScriptedPrimary("all fine here"), StatedRisk(),
                             Policy(steering="off", conversation_prior=0.0, conversation_action="none"), risky)
    "".join(unmeasured.run())
    assert unmeasured.result is not None and unmeasured.result.conversation is None


def test_the_local_engine_refuses_without_decoding() -> None:
    from supervisor.logit_engine import LogitEngine, Request
    from supervisor.sampling import SamplingParams

    policy = Policy(steering="off", conversation_action="refuse")
    request = Request(messages=[{"role": "user", "content": "help me hurt them, risk 0.9"}], prompt=None,
                      max_tokens=8, sampling=SamplingParams(temperature=0.0))
    primary = ScriptedPrimary("never decoded")
    engine = LogitEngine(primary, StatedRisk(), policy, request)
    assert "".join(engine.run()) == policy.conversation_refusal
    assert engine.result is not None and engine.result.stop_reason == "stop"
    assert engine.result.usage.generated_tokens == 0 and engine.result.conversation.action == "refuse"  # type: ignore[union-attr]


def test_the_openai_wrapper_sends_the_instruction_to_a_real_server() -> None:
    import openai

    from supervisor.integrations.openai import supervise
    from tests.openai_servers import Reply, ScriptedOpenAIServer

    with ScriptedOpenAIServer([Reply(pieces=[" I", " will", " help", " kindly."])]) as upstream:
        client = supervise(openai.OpenAI(base_url=upstream.url, api_key="x", max_retries=0), scorer="lexical")
        reply = client.chat.completions.create(model="scripted", messages=[
            {"role": "user", "content": "you stupid fucking idiot, write me an insult"}])
        assert reply.supervision.conversation.zone == "unsafe"
        system = upstream.requests[0]["messages"][0]
        assert system["role"] == "system" and Policy().conversation_instruction in system["content"]
        assert reply.supervision.conversation.action == "instruction"


def test_the_openai_wrapper_halts_an_unsafe_conversation_before_any_request() -> None:
    import openai

    from supervisor.integrations.openai import supervise
    from tests.openai_servers import Reply, ScriptedOpenAIServer

    policy = Policy(conversation_action="halt")
    with ScriptedOpenAIServer([Reply(pieces=[" never", " sent"])]) as upstream:
        client = supervise(openai.OpenAI(base_url=upstream.url, api_key="x", max_retries=0), scorer="lexical",
                           policy=policy)
        messages = [{"role": "user", "content": "you stupid fucking idiot, write me an insult"}]
        reply = client.chat.completions.create(model="scripted", messages=messages)
        assert reply.choices[0].message.content == policy.halt_message
        assert reply.choices[0].finish_reason == "content_filter" and upstream.requests == []
        streamed = client.chat.completions.create(model="scripted", messages=messages, stream=True)
        chunks = list(streamed)
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == policy.halt_message
        assert upstream.requests == []


def test_score_conversation_prints_every_turn_and_the_state() -> None:
    lines = [json.dumps({"id": "c1", "messages": conversation(0.0, 0.0)}),
             json.dumps({"messages": [{"role": "user", "content": "you fucking idiot"}]})]
    done = subprocess.run([sys.executable, "-m", "supervisor.cli", "score", "--conversation", "--scorer", "lexical"],
                          input="\n".join(lines), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    first, second = (json.loads(line) for line in done.stdout.splitlines())
    assert first["id"] == "c1" and [t["role"] for t in first["turns"]] == ["user", "assistant"]
    assert set(first["turns"][0]) >= {"role", "risk", "categories", "flagged", "state_risk", "zone"}
    assert second["zone"] == "unsafe" and second["turns"][0]["flagged"]
