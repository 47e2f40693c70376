"""LangChain: the callback handlers, the supervised chat model and the stream filter, with the real
``ChatOpenAI`` against the real llama.cpp server (embedded SmolLM2); fake chat models only where a
behaviour needs exact control."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

pytest.importorskip("langchain_core")
langchain_openai = pytest.importorskip("langchain_openai")

from langchain_core.language_models.fake_chat_models import GenericFakeChatModel  # noqa: E402
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage  # noqa: E402
from langchain_core.prompts import ChatPromptTemplate  # noqa: E402
from langchain_core.tools import tool  # noqa: E402

from supervisor import Policy  # noqa: E402
from supervisor.integrations.langchain import (  # noqa: E402
    AsyncSupervisorCallbackHandler,
    SupervisedChatModel,
    SupervisorCallbackHandler,
    SupervisorHalt,
    supervised_stream_filter,
)
from tests.helpers import KeywordScorer, ScriptedPrimary  # noqa: E402
from tests.openai_servers import MODEL_ALIAS, Reply, ScriptedOpenAIServer  # noqa: E402

pytestmark = pytest.mark.integration

RAINBOW = "List the seven colors of the rainbow, separated by commas."
FAST = Policy(upstream_backoff_s=0.0, checkpoint_every=4, window_tokens=8)


def chat_openai(url: str, **kwargs: Any) -> Any:
    settings: dict[str, Any] = {"temperature": 0.0, "max_tokens": 40, "seed": 1, "max_retries": 0, **kwargs}
    return langchain_openai.ChatOpenAI(base_url=url, api_key="not-needed", model=MODEL_ALIAS, **settings)


# -- the callback ---------------------------------------------------------------------------------
def test_callback_halts_a_real_stream_mid_way_and_keeps_runs_apart(llama_server_url: str) -> None:
    handler = SupervisorCallbackHandler(scorer=KeywordScorer(word="Orange", step=1.0), policy=FAST)
    model = chat_openai(llama_server_url)
    received = ""
    with pytest.raises(SupervisorHalt) as caught:
        for chunk in model.stream(RAINBOW, config={"callbacks": [handler]}):
            received += chunk.text
    assert "Orange" not in received or received.index("Orange") >= 0  # delivered before the check: a callback observes
    assert caught.value.result is not None and caught.value.result.stop_reason == "halt"
    assert [e.kind for e in caught.value.result.events] == ["halt"]
    assert handler.results[caught.value.run_id].stop_reason == "halt"
    # benign runs with the same handler are not affected by the halted one
    streaming = chat_openai(llama_server_url, streaming=True)
    assert streaming.invoke("Name two planets.", config={"callbacks": [handler]}).content
    assert sorted(r.stop_reason for r in handler.results.values()) == ["halt", "stop"]
    # invoke without streaming fires no tokens: the whole answer is checked before invoke() returns it
    with pytest.raises(SupervisorHalt):
        model.invoke(RAINBOW, config={"callbacks": [handler]})
    assert model.invoke("Name two planets.", config={"callbacks": [handler]}).content


def test_callback_in_a_chain_and_in_batch(llama_server_url: str) -> None:
    handler = SupervisorCallbackHandler(scorer="lexical")
    chain = ChatPromptTemplate.from_messages([("user", "{question}")]) | chat_openai(llama_server_url, streaming=True)
    answers = chain.batch([{"question": "Name three fruits."}, {"question": "Name two planets."}],
                          config={"callbacks": [handler]})
    assert all(a.content for a in answers)
    assert len(handler.results) == 2 and all(r.stop_reason == "stop" for r in handler.results.values())


def test_async_callback_halts_astream(llama_server_url: str) -> None:
    handler = AsyncSupervisorCallbackHandler(scorer=KeywordScorer(word="Orange", step=1.0), policy=FAST)

    async def main() -> None:
        async for _ in chat_openai(llama_server_url).astream(RAINBOW, config={"callbacks": [handler]}):
            pass

    with pytest.raises(SupervisorHalt):
        asyncio.run(main())
    assert [r.stop_reason for r in handler.results.values()] == ["halt"]


def test_callback_stops_an_unsafe_conversation_before_the_model_is_called() -> None:
    for handler in (SupervisorCallbackHandler(scorer="lexical", policy=Policy(conversation_action="halt")),
                    AsyncSupervisorCallbackHandler(scorer="lexical", policy=Policy(conversation_action="refuse"))):
        with ScriptedOpenAIServer([Reply(pieces=[" never", " sent"])]) as upstream:
            model = chat_openai(upstream.url, streaming=True)  # (the scripted server always streams)
            hostile = [HumanMessage("you stupid fucking idiot, write me an insult")]
            with pytest.raises(SupervisorHalt) as stopped:
                if isinstance(handler, SupervisorCallbackHandler):
                    model.invoke(hostile, config={"callbacks": [handler]})
                else:
                    asyncio.run(model.ainvoke(hostile, config={"callbacks": [handler]}))
            assert upstream.requests == []  # stopped in on_chat_model_start
            assert stopped.value.result is not None and stopped.value.result.conversation is not None
            assert stopped.value.result.conversation.zone == "unsafe"
            assert model.invoke("Name two planets.", config={"callbacks": [handler]}) is not None


# -- the supervised chat model --------------------------------------------------------------------
def test_supervised_model_rolls_back_real_output_with_logit_bias(llama_server_url: str) -> None:
    events: list[Any] = []
    model = SupervisedChatModel(inner=chat_openai(llama_server_url), scorer=KeywordScorer(word="Orange", step=1.0),
                                policy=FAST, on_event=events.append)
    plain = chat_openai(llama_server_url).invoke(RAINBOW).content
    assert "Orange" in plain
    answer = model.invoke(RAINBOW)
    assert isinstance(answer, AIMessage) and "Orange" not in answer.content
    report = answer.response_metadata["supervision"]
    assert [e["kind"] for e in report["events"]][:1] == ["rollback"] and events[0].kind == "rollback"
    assert report["attempts"][1]["logit_bias_entries"] > 0
    assert answer.usage_metadata is not None and answer.usage_metadata["output_tokens"] > 0
    chunks = list(model.stream(RAINBOW))
    assert all(isinstance(c, AIMessageChunk) for c in chunks)
    assert "".join(c.text for c in chunks) == answer.content


def test_ten_parallel_conversations_do_not_mix(llama_server_url: str) -> None:
    questions = [f"Write the number {n} in words, nothing else." for n in range(10)]
    model = SupervisedChatModel(inner=chat_openai(llama_server_url, max_tokens=12), scorer="lexical")
    expected = [chat_openai(llama_server_url, max_tokens=12).invoke(q).content for q in questions]
    answers = asyncio.run(model.abatch(questions))
    assert [a.content for a in answers] == expected
    assert all(a.response_metadata["supervision"]["stop_reason"] in ("stop", "length") for a in answers)


def test_tool_binding_passes_through_and_tool_calls_come_back() -> None:
    @tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        return "sunny"

    replies = [Reply(pieces=["Let", " me", " look."], tool_call=("get_weather", '{"city": "Paris"}'))]
    with ScriptedOpenAIServer(replies) as server:
        inner = langchain_openai.ChatOpenAI(base_url=server.url, api_key="x", model="scripted", max_retries=0)
        bound = SupervisedChatModel(inner=inner, scorer="lexical").bind_tools([get_weather])
        answer = bound.invoke("What is the weather in Paris?")
    assert server.requests[0]["tools"][0]["function"]["name"] == "get_weather"
    assert answer.content == "Let me look."
    assert answer.tool_calls == [{"name": "get_weather", "args": {"city": "Paris"}, "id": "call_1",
                                  "type": "tool_call"}]
    assert answer.response_metadata["finish_reason"] == "tool_calls"


def test_structured_output_through_the_supervised_model() -> None:
    schema = {"title": "Answer", "description": "The answer.", "type": "object", "properties": {"name": {}}}
    with ScriptedOpenAIServer([Reply(tool_call=("Answer", '{"name": "Jupiter"}'))]) as server:
        inner = langchain_openai.ChatOpenAI(base_url=server.url, api_key="x", model="scripted", max_retries=0)
        structured = SupervisedChatModel(inner=inner, scorer="lexical").with_structured_output(schema, include_raw=True)
        answer = structured.invoke("The largest planet, as JSON with the key name.")
    assert server.requests[0]["tools"][0]["function"]["name"] == "Answer"  # through bind_tools, as in LangChain
    assert answer["parsed"] == {"name": "Jupiter"}
    assert answer["raw"].response_metadata["supervision"]["stop_reason"] == "stop"


def test_chain_composition_and_local_primary_with_full_logit_control() -> None:
    model = SupervisedChatModel(inner=ScriptedPrimary("one two bad bad bad bad bad bad", fallback=" calm words here."),
                                scorer=KeywordScorer(step=1.0), policy=Policy(checkpoint_every=2, window_tokens=4),
                                max_tokens=12, temperature=0.0)
    chain = ChatPromptTemplate.from_messages([("user", "{q}")]) | model
    answer = chain.invoke({"q": "hello"})
    assert "bad" not in answer.content
    assert answer.response_metadata["supervision"]["events"]


def test_stream_filter_holds_back_and_halts_in_a_chain() -> None:
    fake = GenericFakeChatModel(messages=iter([AIMessage(content="the sky is blue and bad bad bad things happen")]))
    chain = fake | supervised_stream_filter(scorer=KeywordScorer(step=1.0),
                                            policy={"checkpoint_every": 2, "halt_message": "[stopped]"})
    parts = list(chain.stream([HumanMessage(content="hi")]))
    text = "".join(parts)
    assert text.endswith("[stopped]") and "bad" not in text

    clean = GenericFakeChatModel(messages=iter([AIMessage(content="the sky is blue today")]))
    assert "".join((clean | supervised_stream_filter(scorer="lexical")).stream("hi")) == "the sky is blue today"
