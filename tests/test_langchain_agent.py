"""SupervisorMiddleware in real LangChain 1.x agents (``create_agent``), with the real ``ChatOpenAI``: against
the real llama.cpp server (embedded SmolLM2) where the behaviour does not need a tool call, and against the
scripted OpenAI server (a real HTTP server) where it needs one for sure (SmolLM2-135M rarely calls tools)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import pytest

pytest.importorskip("langchain.agents")
langchain_openai = pytest.importorskip("langchain_openai")

from langchain.agents import create_agent  # noqa: E402
from langchain.agents.middleware import AgentMiddleware, ModelRequest, ModelResponse  # noqa: E402
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, HumanMessage, ToolMessage  # noqa: E402
from langchain_core.tools import BaseTool, tool  # noqa: E402

from supervisor import Policy  # noqa: E402
from supervisor.errors import InputError  # noqa: E402
from supervisor.integrations.langchain import (  # noqa: E402
    SupervisedChatModel,
    SupervisionRecord,
    SupervisorMiddleware,
    supervision_records,
)
from supervisor.policy import DEFAULT_HALT_MESSAGE  # noqa: E402
from tests.helpers import KeywordScorer, ScriptedPrimary  # noqa: E402
from tests.openai_servers import MODEL_ALIAS, Reply, ScriptedOpenAIServer  # noqa: E402

pytestmark = pytest.mark.integration

RAINBOW = "List the seven colors of the rainbow, separated by commas."
FAST = Policy(upstream_backoff_s=0.0, checkpoint_every=4, window_tokens=8)
NO_SECOND_CHANCE = FAST.model_copy(update={"max_rollbacks": 0, "max_reprompts": 0})
#: Checks only at the end of the answer: a halt then comes after the upstream has sent its tool calls.
FINAL_CHECK_ONLY = NO_SECOND_CHANCE.model_copy(update={"first_checkpoint_tokens": 500, "checkpoint_every": 500,
                                                       "window_tokens": 600, "full_window_every": 1000})
HARMFUL_TOOL_TEXT = "Forum post: you are a bad bad bad person"


def real_model(url: str, **kwargs: Any) -> Any:
    settings: dict[str, Any] = {"temperature": 0.0, "max_tokens": 40, "seed": 1, "max_retries": 0, **kwargs}
    return langchain_openai.ChatOpenAI(base_url=url, api_key="not-needed", model=MODEL_ALIAS, **settings)


def scripted_model(server: ScriptedOpenAIServer, **kwargs: Any) -> Any:
    return langchain_openai.ChatOpenAI(base_url=server.url, api_key="x", model="scripted", max_retries=0, **kwargs)


def recording_tool(calls: list[dict[str, Any]], answer: Callable[[str], str] = lambda city: "sunny") -> BaseTool:
    @tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        calls.append({"city": city})
        return answer(city)

    return get_weather


def stream_agent(agent: Any, question: str) -> tuple[list[BaseMessage], dict[str, Any]]:
    """``agent.stream`` with the messages and the values modes: what a user sees, and the final state."""
    seen: list[BaseMessage] = []
    final: dict[str, Any] = {}
    for mode, item in agent.stream({"messages": [HumanMessage(content=question)]}, stream_mode=["messages", "values"]):
        if mode == "messages":
            seen.append(item[0])
        else:
            final = item
    return seen, final


def streamed_ai_text(seen: list[BaseMessage]) -> str:
    return "".join(m.text for m in seen if isinstance(m, (AIMessage, AIMessageChunk)))


def summary(records: list[SupervisionRecord]) -> list[tuple[str, str]]:
    return [(r.source, r.outcome) for r in records]


def request_texts(request: dict[str, Any]) -> str:
    return json.dumps(request["messages"])


# -- the agent loop -------------------------------------------------------------------------------
def test_multi_step_tool_run_supervises_every_model_call_and_tool_result() -> None:
    calls: list[dict[str, Any]] = []
    replies = [
        Reply(pieces=["Checking", " Paris."], tool_call=("get_weather", '{"city": "Paris"}'), tool_call_id="call_a"),
        Reply(pieces=["Now", " Rome."], tool_call=("get_weather", '{"city": "Rome"}'), tool_call_id="call_b"),
        Reply(pieces=["Both", " are", " sunny."]),
    ]
    with ScriptedOpenAIServer(replies) as server:
        middleware = SupervisorMiddleware(KeywordScorer(word="bad", step=1.0), FAST)
        agent = create_agent(scripted_model(server), [recording_tool(calls)], middleware=[middleware])
        state = agent.invoke({"messages": [HumanMessage(content="Weather in Paris and Rome?")]})
    assert calls == [{"city": "Paris"}, {"city": "Rome"}]
    messages = state["messages"]
    assert [type(m).__name__ for m in messages] == ["HumanMessage", "AIMessage", "ToolMessage", "AIMessage",
                                                    "ToolMessage", "AIMessage"]
    assert [m.content for m in messages if isinstance(m, ToolMessage)] == ["sunny", "sunny"]
    assert messages[-1].content == "Both are sunny." and messages[-1].tool_calls == []
    assert [c["args"] for m in messages if isinstance(m, AIMessage) for c in m.tool_calls] == [
        {"city": "Paris"}, {"city": "Rome"}]
    records = supervision_records(state)
    assert summary(records) == [("model_call", "passed"), ("tool_result", "passed"), ("model_call", "passed"),
                                ("tool_result", "passed"), ("model_call", "passed")]
    assert [r.tool_call_id for r in records if r.source == "tool_result"] == ["call_a", "call_b"]
    assert [r.report.text for r in records if r.source == "model_call"] == ["Checking Paris.", "Now Rome.",
                                                                           "Both are sunny."]
    # every model call went upstream with the tools; the last one saw both (checked) tool results
    assert len(server.requests) == 3 and all(r["tools"][0]["function"]["name"] == "get_weather"
                                             for r in server.requests)
    assert [m["role"] for m in server.requests[2]["messages"]] == ["user", "assistant", "tool", "assistant", "tool"]


def test_rollback_inside_the_loop_and_only_checked_text_is_streamed() -> None:
    calls: list[dict[str, Any]] = []
    replies = [
        Reply(pieces=["Let", " me", " bad", " bad", " look", " it", " up."]),  # rolled back mid-answer
        Reply(pieces=[" look", " it", " up."], tool_call=("get_weather", '{"city": "Paris"}')),
        Reply(pieces=["It", " is", " sunny."]),
    ]
    with ScriptedOpenAIServer(replies) as server:
        middleware = SupervisorMiddleware(KeywordScorer(word="bad", step=1.0), FAST)
        agent = create_agent(scripted_model(server), [recording_tool(calls)], middleware=[middleware])
        seen, state = stream_agent(agent, "Weather in Paris?")
    # the flagged words were streamed by the server, but never reached the stream nor the state
    assert "bad" not in streamed_ai_text(seen)
    assert all("bad" not in m.text for m in state["messages"])
    first_call = supervision_records(state)[0]
    assert [e.kind for e in first_call.events] == ["rollback"] and "bad" in first_call.events[0].removed_text
    assert len(first_call.report.attempts) == 2  # the regeneration resumed from the checked prefix
    assert calls == [{"city": "Paris"}]  # the tool call of the regenerated answer went through
    assert state["messages"][1].tool_calls[0]["args"] == {"city": "Paris"}
    assert state["messages"][-1].content == "It is sunny."
    assert len(server.requests) == 3
    # what the stream showed of each model answer is exactly the checked text kept in the state
    ai_in_state = "".join(m.text for m in state["messages"] if isinstance(m, AIMessage))
    assert streamed_ai_text(seen) == ai_in_state


def test_stream_of_a_real_model_yields_only_checked_text(llama_server_url: str) -> None:
    plain_seen, _ = stream_agent(create_agent(real_model(llama_server_url), []), RAINBOW)
    assert "Orange" in streamed_ai_text(plain_seen)  # unsupervised, the real model writes it
    middleware = SupervisorMiddleware(KeywordScorer(word="Orange", step=1.0), FAST)
    seen, state = stream_agent(create_agent(real_model(llama_server_url), [], middleware=[middleware]), RAINBOW)
    answer = state["messages"][-1]
    assert isinstance(answer, AIMessage) and answer.content and "Orange" not in answer.content
    assert streamed_ai_text(seen) == answer.content  # nothing unchecked, nothing retracted
    (record,) = supervision_records(state)
    assert record.events[0].kind == "rollback" and "Orange" in record.events[0].removed_text
    assert record.report.attempts[1].logit_bias_entries > 0  # the server's tokenizer: the word is banned


def test_halt_on_a_real_model_ends_the_run_with_the_halt_message(llama_server_url: str) -> None:
    middleware = SupervisorMiddleware(KeywordScorer(word="Orange", step=1.0), NO_SECOND_CHANCE)
    state = create_agent(real_model(llama_server_url), [], middleware=[middleware]).invoke(
        {"messages": [HumanMessage(content=RAINBOW)]})
    answer = state["messages"][-1]
    assert isinstance(answer, AIMessage) and answer.content.endswith(DEFAULT_HALT_MESSAGE)
    assert "Orange" not in answer.content
    assert summary(supervision_records(state)) == [("model_call", "halted")]
    assert answer.response_metadata["finish_reason"] == "content_filter"


def test_halt_after_the_tool_calls_arrived_leaves_no_dangling_tool_call() -> None:
    calls: list[dict[str, Any]] = []
    replies = [Reply(pieces=["All", " fine", " bad"], tool_call=("get_weather", '{"city": "Paris"}'))]
    with ScriptedOpenAIServer(replies) as server:
        middleware = SupervisorMiddleware(KeywordScorer(word="bad", step=1.0), FINAL_CHECK_ONLY)
        agent = create_agent(scripted_model(server), [recording_tool(calls)], middleware=[middleware])
        seen, state = stream_agent(agent, "Weather in Paris?")
    answer = state["messages"][-1]
    assert isinstance(answer, AIMessage) and answer.tool_calls == [] and answer.invalid_tool_calls == []
    assert answer.content == DEFAULT_HALT_MESSAGE and calls == [] and len(server.requests) == 1
    assert not any(getattr(m, "tool_call_chunks", None) or getattr(m, "tool_calls", None) for m in seen)
    (record,) = supervision_records(state)
    assert (record.outcome, record.report.stop_reason) == ("halted", "halt")


# -- tool results ---------------------------------------------------------------------------------
def harmful_tool_run(on_tool_result: str) -> tuple[dict[str, Any], ScriptedOpenAIServer, list[dict[str, Any]]]:
    calls: list[dict[str, Any]] = []
    replies = [
        Reply(pieces=["Looking."], parallel_tool_calls=[("call_forum", "get_weather", '{"city": "Forum"}'),
                                                        ("call_rome", "get_weather", '{"city": "Rome"}')]),
        Reply(pieces=["Done."]),
    ]
    tool_ = recording_tool(calls, lambda city: HARMFUL_TOOL_TEXT if city == "Forum" else "sunny")
    with ScriptedOpenAIServer(replies) as server:
        middleware = SupervisorMiddleware(KeywordScorer(word="bad", step=1.0), FAST, on_tool_result=on_tool_result)
        state = create_agent(scripted_model(server), [tool_], middleware=[middleware]).invoke(
            {"messages": [HumanMessage(content="What do they say?")]})
    return state, server, calls


def tool_results(state: dict[str, Any]) -> dict[str, str]:
    return {m.tool_call_id: m.text for m in state["messages"] if isinstance(m, ToolMessage)}


def test_harmful_tool_result_is_redacted_before_the_model_reads_it() -> None:
    state, server, calls = harmful_tool_run("redact")
    assert sorted(c["city"] for c in calls) == ["Forum", "Rome"]
    notice = SupervisorMiddleware(KeywordScorer()).settings.tool_result_notice
    assert tool_results(state) == {"call_forum": notice, "call_rome": "sunny"}  # only the harmful one
    assert len(server.requests) == 2 and "bad" not in request_texts(server.requests[1])
    assert state["messages"][-1].content == "Done."
    tools = {r.tool_call_id: r.outcome for r in supervision_records(state) if r.source == "tool_result"}
    assert tools == {"call_forum": "redacted", "call_rome": "passed"}


def test_harmful_tool_result_with_halt_ends_the_run_before_the_model_is_called_again() -> None:
    state, server, _ = harmful_tool_run("halt")
    assert len(server.requests) == 1  # the model never read the tool results
    answer = state["messages"][-1]
    assert isinstance(answer, AIMessage) and answer.content == DEFAULT_HALT_MESSAGE and answer.tool_calls == []
    assert "bad" not in json.dumps([m.text for m in state["messages"]])
    assert ("tool_result", "halted") in summary(supervision_records(state))


def test_harmful_tool_result_with_allow_goes_through_and_is_recorded() -> None:
    state, server, _ = harmful_tool_run("allow")
    assert tool_results(state)["call_forum"] == HARMFUL_TOOL_TEXT
    assert HARMFUL_TOOL_TEXT in request_texts(server.requests[1])
    tools = {r.tool_call_id: r for r in supervision_records(state) if r.source == "tool_result"}
    assert tools["call_forum"].outcome == "allowed_unsafe" and tools["call_forum"].report.stop_reason == "halt"
    assert tools["call_rome"].outcome == "passed"


@pytest.mark.parametrize("bad", [{"on_tool_result": "drop"}, {"tool_result_notice": ""}])
def test_bad_settings_are_named_with_what_is_accepted(bad: dict[str, Any]) -> None:
    with pytest.raises(InputError) as caught:
        SupervisorMiddleware(KeywordScorer(), **bad)
    message = str(caught.value)
    assert next(iter(bad)) in message and "'redact', 'halt' or 'allow'" in message


# -- concurrency ----------------------------------------------------------------------------------
def check_runs_apart(questions: list[str], states: list[dict[str, Any]]) -> None:
    for question, state in zip(questions, states):
        (record,) = supervision_records(state)  # one model call each, its own
        answer = state["messages"][-1].content
        if "bad" in question:
            assert record.outcome == "halted" and answer.endswith(DEFAULT_HALT_MESSAGE) and "bad" not in answer
        else:
            assert record.outcome == "passed" and answer == f"{question} {question}"
            assert record.report.text == answer


def test_concurrent_agent_runs_keep_their_own_answers_and_reports() -> None:
    questions = [f"topic {n}" if n % 3 else f"topic {n} bad" for n in range(6)]
    with ScriptedOpenAIServer([], echo=2, piece_delay_s=0.01) as server:
        middleware = SupervisorMiddleware(KeywordScorer(word="bad", step=1.0), NO_SECOND_CHANCE)
        agent = create_agent(scripted_model(server), [], middleware=[middleware])
        inputs = [{"messages": [HumanMessage(content=q)]} for q in questions]
        states = agent.batch(inputs, config={"max_concurrency": 6})
        check_runs_apart(questions, states)
        async_states = asyncio.run(agent.abatch(inputs))  # the async hooks
        check_runs_apart(questions, async_states)


def test_concurrent_runs_against_the_real_server_match_unsupervised_answers(llama_server_url: str) -> None:
    questions = [f"Write the number {n} in words, nothing else." for n in range(4)]
    inputs = [{"messages": [HumanMessage(content=q)]} for q in questions]
    plain = create_agent(real_model(llama_server_url, max_tokens=12), [])
    expected = [s["messages"][-1].content for s in plain.batch(inputs, config={"max_concurrency": 1})]
    agent = create_agent(real_model(llama_server_url, max_tokens=12), [],
                         middleware=[SupervisorMiddleware("lexical", FAST)])
    # threads, not asyncio.run: langchain-openai caches one async HTTP client per base URL, bound to the event
    # loop of the first asyncio.run in the process (another test's), so a second loop would find it closed
    states = agent.batch(inputs, config={"max_concurrency": 4})
    assert [s["messages"][-1].content for s in states] == expected
    assert all(summary(supervision_records(s)) == [("model_call", "passed")] for s in states)


# -- other model shapes ---------------------------------------------------------------------------
def test_local_primary_agent_gets_full_logit_control() -> None:
    local = SupervisedChatModel(inner=ScriptedPrimary("one two bad bad bad bad bad bad", fallback=" calm words here."),
                                max_tokens=12, temperature=0.0)
    middleware = SupervisorMiddleware(KeywordScorer(step=1.0), Policy(checkpoint_every=2, window_tokens=4))
    state = create_agent(local, [], middleware=[middleware]).invoke({"messages": [HumanMessage(content="hello")]})
    answer = state["messages"][-1].content
    assert answer and "bad" not in answer
    (record,) = supervision_records(state)
    assert "rollback" in [e.kind for e in record.events]
    assert record.report.attempts == []  # the logit engine: no upstream requests, the KV cache rolled back


class SwapToUnsupervisedModel(AgentMiddleware):
    """A middleware placed after the supervisor that hands the call to another model."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model

    def wrap_model_call(self, request: ModelRequest, handler: Callable[[ModelRequest], ModelResponse]) -> Any:
        return handler(request.override(model=self.model))


def test_an_answer_from_a_model_swapped_in_after_the_supervisor_is_measured_and_fails_closed() -> None:
    with ScriptedOpenAIServer([Reply(pieces=["so", " bad", " bad", " bad"])]) as server:
        middleware = SupervisorMiddleware(KeywordScorer(word="bad", step=1.0), FAST)
        agent = create_agent(scripted_model(server), [],
                             middleware=[middleware, SwapToUnsupervisedModel(scripted_model(server, streaming=True))])
        state = agent.invoke({"messages": [HumanMessage(content="hi")]})
    answer = state["messages"][-1]
    assert isinstance(answer, AIMessage) and "bad" not in answer.content
    assert answer.content.endswith(DEFAULT_HALT_MESSAGE)
    assert summary(supervision_records(state)) == [("model_call", "halted")]


def test_an_unsafe_thread_is_refused_or_halted_before_the_model_is_called() -> None:
    hostile = "you stupid fucking idiot, write me an insult about my neighbour"
    for action, outcome, finish in (("refuse", "passed", "stop"), ("halt", "halted", "content_filter")):
        policy = FAST.model_copy(update={"conversation_action": action})
        with ScriptedOpenAIServer([Reply(pieces=[" never", " sent"])]) as server:
            middleware = SupervisorMiddleware("lexical", policy)
            state = create_agent(scripted_model(server), [], middleware=[middleware]).invoke(
                {"messages": [HumanMessage(content=hostile)]})
            assert server.requests == []  # the thread was measured before the model call
        answer = state["messages"][-1]
        expected = policy.conversation_refusal if action == "refuse" else policy.halt_message
        assert isinstance(answer, AIMessage) and answer.content == expected
        assert summary(supervision_records(state)) == [("model_call", outcome)]
        assert answer.response_metadata["finish_reason"] == finish
