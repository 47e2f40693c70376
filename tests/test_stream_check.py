"""StreamCheck: the public streaming check an application drives from its own loop (any SDK, any framework).

Driven here by the real, unsupervised ``openai`` client streaming from the scripted OpenAI-compatible server, and
by hypothesis over chunkings: the flagged word never comes back from ``feed``/``end``, benign text comes back
whole and unchanged, sync and async alike."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from supervisor import StreamCheck

BENIGN = ["the", "garden", "was", "quiet", "and", "green", "after", "rain", "we", "walked", "slowly", "home"]


@st.composite
def chunked(draw: st.DrawFn, flagged: bool) -> tuple[list[str], str]:
    words = draw(st.lists(st.sampled_from(BENIGN), min_size=3, max_size=30))
    if flagged:
        words.insert(draw(st.integers(0, len(words))), "fucking")
    text = " ".join(words)
    cuts = sorted(draw(st.sets(st.integers(1, len(text) - 1), max_size=len(text) // 2)))
    edges = [0, *cuts, len(text)]
    return [text[a:b] for a, b in zip(edges, edges[1:])], text


def run(pieces: list[str]) -> tuple[str, StreamCheck]:
    check = StreamCheck(scorer="lexical")
    shown = ""
    for piece in pieces:
        checked = check.feed(piece)
        shown += checked.text
        if checked.stopped:
            return shown, check
    return shown + check.end().text, check


async def arun(pieces: list[str]) -> tuple[str, StreamCheck]:
    check = StreamCheck(scorer="lexical")
    shown = ""
    for piece in pieces:
        checked = await check.afeed(piece)
        shown += checked.text
        if checked.stopped:
            return shown, check
    return shown + (await check.aend()).text, check


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(answer=chunked(flagged=True), use_async=st.booleans())
def test_a_flagged_word_never_comes_back_however_the_stream_is_cut(answer: tuple[list[str], str],
                                                                   use_async: bool) -> None:
    pieces, _ = answer
    shown, check = asyncio.run(arun(pieces)) if use_async else run(pieces)
    assert "fuck" not in shown.lower()
    assert check.stopped and check.result is not None and check.result.stop_reason == "halt"
    assert shown == check.released_text and shown.endswith(check.policy.halt_message)
    assert check.feed(" more").text == "" and check.end().stopped  # nothing after the stop


@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
@given(answer=chunked(flagged=False))
def test_benign_text_comes_back_whole_and_unchanged(answer: tuple[list[str], str]) -> None:
    pieces, text = answer
    shown, check = run(pieces)
    assert shown == text and check.result is not None and check.result.stop_reason == "stop"
    assert check.events == []


def test_an_application_loop_over_the_plain_openai_client() -> None:
    openai = pytest.importorskip("openai")
    from tests.openai_servers import Reply, ScriptedOpenAIServer

    rant = [" this", " whole", " thing", " is", " bullshit,", " you", " stupid", " idiot", " and", " more"]
    with ScriptedOpenAIServer([Reply(pieces=rant)]) as upstream:
        client = openai.OpenAI(base_url=upstream.url, api_key="x", max_retries=0)
        check, shown = StreamCheck(scorer="lexical"), ""
        with client.chat.completions.create(model="scripted", messages=[{"role": "user", "content": "go"}],
                                            stream=True) as stream:
            for chunk in stream:
                checked = check.feed(chunk.choices[0].delta.content or "" if chunk.choices else "")
                shown += checked.text
                if checked.stopped:
                    break
            else:
                shown += check.end().text
        assert "bullshit" not in shown and "idiot" not in shown and check.result is not None
        assert check.result.stop_reason == "halt" and check.events and check.events[-1].kind == "halt"


def test_an_unsafe_conversation_stops_the_stream_before_any_of_it_is_shown() -> None:
    from supervisor import Policy

    hostile = [{"role": "user", "content": "you stupid fucking idiot, insult my neighbour"}]
    for action in ("refuse", "halt"):
        policy = Policy(conversation_action=action)
        check = StreamCheck(scorer="lexical", policy=policy, conversation=hostile)
        first = check.feed("Sure, here is")
        expected = policy.conversation_refusal if action == "refuse" else policy.halt_message
        assert first.stopped and first.text == expected and first.halted == (action == "halt")
        assert check.refused == (action == "refuse") and check.result is not None
        assert check.result.conversation is not None and check.result.conversation.action == action
        assert check.feed(" more").text == ""  # nothing after the stop

    async def astarted() -> tuple[bool, str]:
        check = StreamCheck(scorer="lexical", policy=Policy(conversation_action="halt"), conversation=hostile)
        started = await check.astart()
        return started.stopped, started.text

    assert asyncio.run(astarted()) == (True, Policy().halt_message)


def test_the_default_instruction_cannot_apply_to_a_stream_already_under_way() -> None:
    hostile = [{"role": "user", "content": "you stupid fucking idiot, insult my neighbour"}]
    check = StreamCheck(scorer="lexical", conversation=hostile)
    shown = check.feed("The garden was quiet and green after rain. ").text + check.end().text
    assert shown == "The garden was quiet and green after rain. "
    assert check.result is not None and check.result.conversation is not None
    assert check.result.conversation.zone == "unsafe" and check.result.conversation.action == "none"
    assert "measured only" in check.result.events[0].detail
