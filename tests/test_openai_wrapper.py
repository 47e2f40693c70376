"""The OpenAI client wrapper: the real ``openai`` client against the real llama.cpp server (embedded
SmolLM2), and a scripted server for the faults a real server cannot be made to show."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

openai = pytest.importorskip("openai")

from openai.types.chat import ChatCompletion, ChatCompletionChunk  # noqa: E402

from supervisor import Policy  # noqa: E402
from supervisor.errors import InputError, UpstreamError  # noqa: E402
from supervisor.integrations.openai import supervise  # noqa: E402
from supervisor.primaries.chat_templates import chat_template_from_gguf  # noqa: E402
from supervisor.primaries.continuation import CONTINUE_INSTRUCTION  # noqa: E402
from supervisor.primaries.embedded import smollm2_path  # noqa: E402
from supervisor.primaries.tokenizers import LlamaServerTokenizer  # noqa: E402
from tests.helpers import KeywordScorer  # noqa: E402
from tests.openai_servers import MODEL_ALIAS, Reply, ScriptedOpenAIServer  # noqa: E402

pytestmark = pytest.mark.integration

RAINBOW = [{"role": "user", "content": "List the seven colors of the rainbow, separated by commas."}]
GREEDY: dict[str, Any] = {"model": MODEL_ALIAS, "temperature": 0.0, "seed": 1, "max_tokens": 40}
# first_checkpoint_tokens=4: checkpoints every 4 tokens from the start, where the scripted retries resume
FAST = Policy(upstream_backoff_s=0.0, checkpoint_every=4, first_checkpoint_tokens=4, window_tokens=8)


def client(url: str) -> Any:
    return openai.OpenAI(base_url=url, api_key="not-needed", max_retries=0)


def async_client(url: str) -> Any:
    return openai.AsyncOpenAI(base_url=url, api_key="not-needed", max_retries=0)


def raw_answer(url: str, messages: list[dict[str, str]], **kwargs: Any) -> str:
    reply = client(url).chat.completions.create(messages=messages, **{**GREEDY, **kwargs})
    return str(reply.choices[0].message.content)


def test_streaming_yields_real_chunks_of_released_text_and_passes_the_rest_through(llama_server_url: str) -> None:
    events: list[Any] = []
    wrapped = supervise(client(llama_server_url), scorer="lexical", on_event=events.append)
    assert [m.id for m in wrapped.models.list().data] == [MODEL_ALIAS]  # untouched passthrough
    stream = wrapped.chat.completions.create(messages=RAINBOW, stream=True,
                                             stream_options={"include_usage": True}, **GREEDY)
    chunks = list(stream)
    assert all(isinstance(chunk, ChatCompletionChunk) for chunk in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert chunks[0].choices[0].delta.role == "assistant"
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finish in (["stop"], ["length"])
    # llama.cpp's server sends no usage when streaming: completion tokens are counted, prompt tokens unknown (0)
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0 and not chunks[-1].choices
    report = chunks[-1].supervision
    assert report is stream.supervision and report.text == text and not report.events and not events
    assert text == raw_answer(llama_server_url, RAINBOW)  # safe text passes unchanged
    assert "supervision" not in chunks[-1].model_dump()  # the OpenAI type's JSON is unchanged


def test_non_streaming_returns_a_chat_completion_with_summed_usage(llama_server_url: str) -> None:
    wrapped = supervise(client(llama_server_url), scorer=KeywordScorer(word="Orange", step=1.0), policy=FAST,
                        continuation="completions", chat_template=chat_template_from_gguf(smollm2_path()))
    plain = raw_answer(llama_server_url, RAINBOW)
    assert "Orange" in plain  # the model's real answer has the word the scorer flags
    completion = wrapped.chat.completions.create(messages=RAINBOW, **GREEDY)
    assert isinstance(completion, ChatCompletion)
    text = completion.choices[0].message.content
    report = completion.supervision
    assert report.text == text and "Orange" not in text
    assert report.count("rollback") >= 1
    attempts = report.attempts
    assert len(attempts) >= 2 and attempts[1].logit_bias_entries > 0
    assert completion.usage.prompt_tokens == sum(a.prompt_tokens or 0 for a in attempts)
    assert completion.usage.completion_tokens == sum(a.completion_tokens for a in attempts) > 0


def test_logit_bias_changes_the_retry_on_the_real_server(llama_server_url: str) -> None:
    """The ban reaches the server: the same greedy request with the retry's logit_bias differs."""
    seen: list[Any] = []
    wrapped = supervise(client(llama_server_url), scorer=KeywordScorer(word="Orange", step=1.0), policy=FAST,
                        continuation="completions", chat_template=chat_template_from_gguf(smollm2_path()),
                        on_event=seen.append)
    stream = wrapped.chat.completions.create(messages=RAINBOW, stream=True, **GREEDY)
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    report = stream.supervision
    rollback = next(e for e in report.events if e.kind == "rollback")
    assert "Orange" in rollback.removed_text and rollback in seen
    assert "Orange" not in text
    retry = report.attempts[1]
    assert retry.reason == "rollback" and retry.logit_bias_entries > 0
    # The same greedy continuation of the same checked prefix, without and with the ban: the ban decides.
    prefix = text[: retry.prefix_chars]
    prompt = chat_template_from_gguf(smollm2_path())(RAINBOW) + prefix
    tokenize = LlamaServerTokenizer(llama_server_url)
    ban = {str(ids[0]): -100 for ids in (tokenize("Orange"), tokenize(" Orange"))}
    raw = client(llama_server_url).completions
    unbanned = raw.create(model=MODEL_ALIAS, prompt=prompt, max_tokens=6, temperature=0.0).choices[0].text
    banned = raw.create(model=MODEL_ALIAS, prompt=prompt, max_tokens=6, temperature=0.0, logit_bias=ban).choices[0].text
    assert "Orange" in unbanned and "Orange" not in banned


def test_instruction_continuation_sends_the_prefix_and_the_documented_instruction() -> None:
    replies = [Reply(pieces=["The", " sky", " is", " blue", " and", " bad", " bad", " bad"]),
               Reply(pieces=["The", " sky", " is", " blue", " green", " too."], resume=True)]
    with ScriptedOpenAIServer(replies) as server:
        wrapped = supervise(client(server.url), scorer=KeywordScorer(step=1.0), policy=FAST, tokenizer=None)
        completion = wrapped.chat.completions.create(model="scripted", messages=RAINBOW)
    retry = server.requests[1]
    # the checked prefix: up to the last whole word a passed checkpoint measured ("and", which ended a delta
    # when its checkpoint came, was measured only with "bad" after it)
    prefix = retry["messages"][-2]
    assert prefix["role"] == "assistant" and prefix["content"] in ("The sky is blue", "The sky is")
    assert retry["messages"][-1] == {"role": "user", "content": CONTINUE_INSTRUCTION}
    assert completion.choices[0].message.content == "The sky is blue green too."
    assert "logit_bias" not in retry  # tokenizer=None: no token ids to ban


def test_async_streaming_and_non_streaming(llama_server_url: str) -> None:
    async def main() -> tuple[str, str, Any]:
        wrapped = supervise(async_client(llama_server_url), scorer="lexical")
        stream = await wrapped.chat.completions.create(messages=RAINBOW, stream=True, **GREEDY)
        async with stream:
            parts = [c.choices[0].delta.content or "" async for c in stream if c.choices]
        completion = await wrapped.chat.completions.create(messages=RAINBOW, **GREEDY)
        return "".join(parts), completion.choices[0].message.content, completion

    streamed, whole, completion = asyncio.run(main())
    assert streamed == whole == raw_answer(llama_server_url, RAINBOW)
    assert completion.supervision.stop_reason in ("stop", "length")


def test_closing_early_closes_the_upstream_and_keeps_the_released_text(llama_server_url: str) -> None:
    wrapped = supervise(client(llama_server_url), policy=Policy(checkpoint_every=2, holdback_checkpoints=0))
    with wrapped.chat.completions.create(messages=RAINBOW, stream=True, **{**GREEDY, "max_tokens": 100}) as stream:
        first = next(iter(stream))
    assert stream.supervision is not None and stream.supervision.stop_reason == "cancelled"
    assert stream.supervision.text == (first.choices[0].delta.content or "")
    assert raw_answer(llama_server_url, RAINBOW)  # the server is free again


def test_refused_arguments_say_why() -> None:
    wrapped = supervise(openai.OpenAI(base_url="http://127.0.0.1:9/v1", api_key="x"))
    with pytest.raises(InputError, match="n=2"):
        wrapped.chat.completions.create(model="m", messages=RAINBOW, n=2)
    with pytest.raises(InputError, match="openai.OpenAI or openai.AsyncOpenAI"):
        supervise(object())
    for bypass in ("parse", "stream", "with_raw_response"):  # would return unchecked text
        with pytest.raises(InputError, match="not supervised"):
            getattr(wrapped.chat.completions, bypass)
    with pytest.raises(InputError, match="not supervised"):
        wrapped.responses.stream  # noqa: B018
    assert wrapped.unwrapped.chat.completions.with_raw_response is not None  # knowingly unsupervised


def test_dropped_connection_and_429_are_retried_from_checked_text() -> None:
    pieces = ["One", " two", " three", " four", " five", " six", " seven", " eight", " nine", " ten"]
    replies = [Reply(pieces=pieces, cut_after=7), Reply(status=429, headers={"Retry-After": "0"}),
               Reply(pieces=pieces, resume=True)]
    events: list[Any] = []
    with ScriptedOpenAIServer(replies) as server:
        wrapped = supervise(client(server.url), scorer=KeywordScorer(), policy=FAST, tokenizer=None,
                            continuation="prefill", on_event=events.append)
        completion = wrapped.chat.completions.create(model="scripted", messages=RAINBOW)
    report = completion.supervision
    assert [e.kind for e in events] == ["upstream_retry", "upstream_retry"]
    assert completion.choices[0].message.content == "".join(pieces)
    resumed = server.requests[2]["messages"][-1]
    assert resumed["role"] == "assistant" and "".join(pieces).startswith(resumed["content"])
    assert [a.reason for a in report.attempts] == ["start", "retry", "retry"]
    assert "429" in (report.attempts[1].error or "")


def test_failures_beyond_the_budget_raise_with_the_released_text() -> None:
    pieces = ["Alpha", " beta", " gamma", " delta", " epsilon", " zeta", " eta", " theta", " iota"]
    replies = [Reply(pieces=pieces, cut_after=6)] + [Reply(status=503)] * 3
    policy = Policy(upstream_backoff_s=0.0, checkpoint_every=2, window_tokens=4, holdback_checkpoints=0,
                    max_upstream_retries=2)
    with ScriptedOpenAIServer(replies) as server:
        wrapped = supervise(client(server.url), scorer=KeywordScorer(), policy=policy, tokenizer=None)
        received = ""
        with pytest.raises(UpstreamError, match="failed 3 times") as caught:
            for chunk in wrapped.chat.completions.create(model="scripted", messages=RAINBOW, stream=True):
                received += chunk.choices[0].delta.content or "" if chunk.choices else ""
    assert received and caught.value.released_text == received
    assert "".join(pieces).startswith(received)


def test_tool_calls_pass_through_after_the_checked_text() -> None:
    replies = [Reply(pieces=["Let", " me", " check."], tool_call=("get_weather", '{"city": "Paris"}'))]
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    with ScriptedOpenAIServer(replies) as server:
        wrapped = supervise(client(server.url), scorer=KeywordScorer(), tokenizer=None)
        completion = wrapped.chat.completions.create(model="scripted", messages=RAINBOW, tools=tools)
    assert server.requests[0]["tools"] == tools
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content == "Let me check."
    assert choice.message.tool_calls[0].function.name == "get_weather"
    assert choice.message.tool_calls[0].function.arguments == '{"city": "Paris"}'


def test_responses_api_is_supervised_with_rollback() -> None:
    replies = [Reply(pieces=["Clouds", " are", " white", " and", " bad", " bad", " bad"]),
               Reply(pieces=["Clouds", " are", " white", " and", " soft."], resume=True)]
    with ScriptedOpenAIServer(replies) as server:
        wrapped = supervise(client(server.url), scorer=KeywordScorer(step=1.0), policy=FAST)
        events = list(wrapped.responses.create(model="scripted", input="Describe clouds.", stream=True))
    kinds = [e.type for e in events]
    assert kinds[:4] == ["response.created", "response.in_progress", "response.output_item.added",
                         "response.content_part.added"]
    assert kinds[-4:] == ["response.output_text.done", "response.content_part.done", "response.output_item.done",
                          "response.completed"]
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == "Clouds are white and soft." and "bad" not in text
    assert [e.sequence_number for e in events] == list(range(len(events)))
    completed = events[-1].response
    assert completed.output_text == text and completed.usage.input_tokens == 10
    assert events[-1].supervision.count("rollback") == 1
    retry = server.requests[1]
    assert retry["input"][-2]["role"] == "assistant" and retry["input"][-2]["content"] in ("Clouds are white and",
                                                                                       "Clouds are white")
    assert "logit_bias" not in retry

    async def non_streaming() -> Any:
        with ScriptedOpenAIServer([Reply(pieces=["Calm", " skies."])]) as quiet:
            return await supervise(async_client(quiet.url), scorer=KeywordScorer()).responses.create(
                model="scripted", input="Describe clouds.")

    response = asyncio.run(non_streaming())
    assert response.output_text == "Calm skies." and response.supervision.stop_reason == "stop"


def test_openai_compatible_primary_runs_supervisor_and_the_cli(llama_server_url: str, tmp_path: Any) -> None:
    from supervisor import Supervisor, load_primary
    from supervisor.cli import main

    primary = load_primary(f"openai:{MODEL_ALIAS}@{llama_server_url}")
    sup = Supervisor(scorer=KeywordScorer(word="Orange", step=1.0), policy=FAST)
    result = sup.generate(primary, RAINBOW, max_tokens=40, temperature=0.0, seed=1)
    assert "Orange" not in result.text and result.count("rollback") >= 1
    assert result.attempts[0].reason == "start" and result.attempts[1].reason == "rollback"
    plain = sup.generate(primary, RAINBOW, max_tokens=40, temperature=0.0, seed=1, supervise=False)
    assert "Orange" in plain.text and not plain.events

    async def both() -> list[str]:
        async def one() -> str:
            return (await sup.agenerate(primary, RAINBOW, max_tokens=40, temperature=0.0, seed=1)).text
        return list(await asyncio.gather(one(), one()))

    assert asyncio.run(both()) == [result.text, result.text]
    with pytest.raises(InputError, match="pass messages, not prompt="):
        sup.generate(primary, prompt="Once upon a time")

    source, target = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    source.write_text('"Name two planets."\n', encoding="utf-8")
    code = main(["generate", "--primary", f"openai:{MODEL_ALIAS}@{llama_server_url}", "--input", str(source),
                 "--output", str(target), "--max-tokens", "20"])
    assert code == 0 and '"text"' in target.read_text(encoding="utf-8")


def test_a_server_that_hangs_mid_stream_times_out_and_is_resumed() -> None:
    pieces = ["Red", " green", " blue", " cyan", " magenta", " yellow", " black", " white"]
    replies = [Reply(pieces=pieces, stall_after=5, stall_s=3.0), Reply(pieces=pieces, resume=True)]
    with ScriptedOpenAIServer(replies) as server:
        timed = openai.OpenAI(base_url=server.url, api_key="x", max_retries=0, timeout=1.0)
        wrapped = supervise(timed, scorer=KeywordScorer(), policy=FAST, tokenizer=None, continuation="prefill")
        completion = wrapped.chat.completions.create(model="scripted", messages=RAINBOW)
    report = completion.supervision
    assert [e.kind for e in report.events] == ["upstream_retry"]
    assert "Timeout" in (report.attempts[0].error or "") or "timed out" in (report.attempts[0].error or "").lower()
    assert completion.choices[0].message.content == "".join(pieces)
    resumed = server.requests[1]["messages"][-1]
    # resumed from the checked text: a prefix of the answer that ends at a word (which words depends on where the
    # checkpoints fell: a word that ended a delta at its checkpoint waits for the next one)
    assert resumed["role"] == "assistant" and "".join(pieces).startswith(resumed["content"])
    content = resumed["content"]
    assert content.startswith("Red green") and (content.endswith(" ") or "".join(pieces)[len(content)] == " ")


def test_tiktoken_vocabularies_load_offline_from_the_wheel(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from supervisor.primaries.openai_compatible import OpenAICompatiblePrimary
    from supervisor.primaries.tokenizers import tiktoken_encoding

    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    tiktoken_encoding.cache_clear()
    try:
        assert tiktoken_encoding("o200k_base").encode_ordinary("hello world") == [24912, 2375]
        assert tiktoken_encoding("cl100k_base").encode_ordinary("hello world") == [15339, 1917]
        assert len(list(tmp_path.iterdir())) == 2  # placed where tiktoken looks, never downloaded
        primary = OpenAICompatiblePrimary(openai.OpenAI(api_key="x"), "gpt-4o-mini")
        assert primary.tokenizer({}) is not None and primary.tokenizer({})("hello world") == [24912, 2375]
        assert primary.tokenizer({"model": "gpt-4"})("hello world") == [15339, 1917]
        assert primary.tokenizer({"model": "some-unknown-model"}) is None  # no guessing: no logit_bias
    finally:
        tiktoken_encoding.cache_clear()


@pytest.mark.parametrize(
    "deltas",
    [
        [("get_weather", '{"city": '), ("get_weather", '"Paris"}')],  # llama.cpp's server: the name in every delta
        [("get_weather", ""), (None, '{"city": '), (None, '"Paris"}')],  # OpenAI: the name once
        [("get_", ""), ("weather", '{"city": '), (None, '"Paris"}')],  # the name itself in pieces
    ],
)
def test_non_streaming_tool_calls_are_merged_as_the_sdk_reports_them(deltas: list[tuple[str | None, str]]) -> None:
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    with ScriptedOpenAIServer([Reply(pieces=[], tool_call_deltas=deltas)]) as server:
        wrapped = supervise(client(server.url), scorer=KeywordScorer(), tokenizer=None)
        completion = wrapped.chat.completions.create(model="scripted", messages=RAINBOW, tools=tools)
    call = completion.choices[0].message.tool_calls[0]
    assert (call.id, call.function.name, call.function.arguments) == ("call_1", "get_weather", '{"city": "Paris"}')


def test_the_sdk_retries_and_ours_are_one_budget() -> None:
    """A 5xx is tried max_upstream_retries + 1 times in all, not that times the client's own max_retries."""
    policy = Policy(upstream_backoff_s=0.0, max_upstream_retries=2)
    with ScriptedOpenAIServer([Reply(status=503, headers={"Retry-After": "0"})] * 12) as server:
        sdk_client = openai.OpenAI(base_url=server.url, api_key="not-needed", max_retries=2)
        wrapped = supervise(sdk_client, scorer=KeywordScorer(), policy=policy, tokenizer=None)
        with pytest.raises(UpstreamError, match="failed 3 times"):
            wrapped.chat.completions.create(model="scripted", messages=RAINBOW)
    assert len(server.requests) == 3


def test_no_chunking_of_the_upstream_lets_a_flagged_word_through() -> None:
    """Issue 10's case through the real client: the same answer cut into 40 random chunkings (1 to 250
    characters); the flagged word at its start must never reach the caller."""
    import random

    answer = ("Fuck you are great and the weather is mild today and the park is open for everyone to enjoy a quiet "
              "walk with friends and family in the afternoon sun and we all had a very good time there today.")
    safe = Reply(pieces=["You", " are", " great", " and", " the", " park", " is", " open", "."])
    rng = random.Random(10)
    with ScriptedOpenAIServer([]) as server:
        wrapped = supervise(client(server.url), scorer="lexical", policy=FAST, tokenizer=None)
        for _ in range(40):
            pieces, offset = [], 0
            while offset < len(answer):
                size = rng.randint(1, 250) if rng.random() < 0.5 else rng.randint(1, 6)
                pieces.append(answer[offset:offset + size])
                offset += size
            server.replies[:] = [Reply(pieces=pieces)] + [safe] * 8
            stream = wrapped.chat.completions.create(model="scripted", messages=RAINBOW, stream=True)
            text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
            assert "fuck" not in text.lower(), pieces
            assert stream.supervision.events, pieces


def test_wrapped_tool_calls_match_the_plain_client_on_the_real_server(llama_server_url: str) -> None:
    """llama.cpp's server repeats the function name in every streamed delta; the wrapper (which always streams
    upstream) must report the name the plain non-streaming call reports."""
    tools = [{"type": "function", "function": {
        "name": "get_weather", "description": "weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
    call: dict[str, Any] = {**GREEDY, "messages": [{"role": "user", "content": "What is the weather in Paris?"}],
                            "tools": tools, "tool_choice": {"type": "function", "function": {"name": "get_weather"}}}
    plain = client(llama_server_url).chat.completions.create(**call).choices[0].message.tool_calls
    wrapped = supervise(client(llama_server_url), scorer="lexical").chat.completions.create(**call)
    calls = wrapped.choices[0].message.tool_calls
    assert [c.function.name for c in calls] == [c.function.name for c in plain] == ["get_weather"]
    assert [json.loads(c.function.arguments) for c in calls] == [json.loads(c.function.arguments) for c in plain]
    assert wrapped.choices[0].finish_reason == "tool_calls"
