"""Against a real vLLM server (the CPU build serving the embedded SmolLM2 as 'smollm2'): the OpenAI wrapper,
``SupervisedChatModel`` and the gateway with ``continuation="vllm"``, exact continuation of a checked prefix,
``logit_bias`` with the served model's own tokenizer, and real rollbacks of real output.

The server is not started here (it needs its own venv and ~3.5 GB): ``scripts/vllm_server.sh start`` prints its
URL; set ``SUPERVISOR_TEST_VLLM_URL`` to it. Without it these tests are skipped, unless
``SUPERVISOR_REQUIRE_VLLM=1`` (set by ``.ci/run``, which starts the server), which turns the skip into a failure.

Greedy answers can differ between vLLM's compiled and eager runs on near-ties, so no test hard-codes an answer:
each compares the supervised output with what the same server answers unsupervised, or checks properties.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import urllib.request
from typing import Any

import pytest

openai = pytest.importorskip("openai")

from supervisor import Policy  # noqa: E402
from supervisor.integrations.openai import supervise  # noqa: E402
from supervisor.primaries.tokenizers import VLLMServerTokenizer, resolve_tokenizer  # noqa: E402
from tests.helpers import KeywordScorer  # noqa: E402
from tests.openai_servers import MODEL_ALIAS, free_port, wait_for  # noqa: E402

pytestmark = pytest.mark.integration

REQUIRED = os.environ.get("SUPERVISOR_REQUIRE_VLLM") == "1"
RAINBOW = [{"role": "user", "content": "List the seven colors of the rainbow, separated by commas."}]
GREEDY: dict[str, Any] = {"model": MODEL_ALIAS, "temperature": 0.0, "seed": 1, "max_tokens": 40}
FAST = Policy(upstream_backoff_s=0.0, checkpoint_every=4, first_checkpoint_tokens=4, window_tokens=8)
FLAGGED = "Orange"  # the word the deterministic scorer flags: SmolLM2 names it when listing the rainbow
CONTINUE = {"continue_final_message": True, "add_generation_prompt": False}


@pytest.fixture(scope="module")
def vllm_url() -> str:
    url = os.environ.get("SUPERVISOR_TEST_VLLM_URL")
    if not url:
        if REQUIRED:
            pytest.fail("SUPERVISOR_REQUIRE_VLLM=1 but SUPERVISOR_TEST_VLLM_URL is not set")
        pytest.skip("no vLLM server: run scripts/vllm_server.sh start and set SUPERVISOR_TEST_VLLM_URL to its URL")
    root = url.rstrip("/").removesuffix("/v1")
    try:
        with urllib.request.urlopen(f"{root}/health", timeout=10):
            pass
    except OSError as exc:
        message = f"SUPERVISOR_TEST_VLLM_URL={url} does not answer /health: {exc}"
        if REQUIRED:
            pytest.fail(message)
        pytest.skip(message)
    return url


def client(url: str) -> Any:
    return openai.OpenAI(base_url=url, api_key="not-needed", max_retries=0)


def raw_answer(url: str, messages: list[dict[str, str]], **kwargs: Any) -> Any:
    return client(url).chat.completions.create(messages=messages, **{**GREEDY, **kwargs})


def released_prefixes(chunks: list[Any]) -> list[str]:
    """The text the user had seen after each streamed chunk."""
    seen, out = "", []
    for chunk in chunks:
        if chunk.choices:
            seen += chunk.choices[0].delta.content or ""
            out.append(seen)
    return out


@pytest.fixture(scope="module")
def plain(vllm_url: str) -> str:
    """The unsupervised greedy answer; the rollback tests need it to name the flagged word."""
    text = str(raw_answer(vllm_url, RAINBOW).choices[0].message.content)
    assert FLAGGED in text, f"the model's unsupervised answer no longer names {FLAGGED!r}: {text!r}"
    return text


# -- the server's own features the supervisor relies on -------------------------------------------
def test_continue_final_message_resumes_exactly_after_the_prefix(vllm_url: str, plain: str) -> None:
    prefix = plain[: plain.index(FLAGGED)]  # the answer up to the flagged word, as a rollback keeps it
    assert prefix
    tokenize = VLLMServerTokenizer(vllm_url, model=MODEL_ALIAS)
    fresh = raw_answer(vllm_url, RAINBOW, max_tokens=1)
    resumed = raw_answer(vllm_url, [*RAINBOW, {"role": "assistant", "content": prefix}], max_tokens=12,
                         extra_body=CONTINUE)
    text = str(resumed.choices[0].message.content)
    # The prompt is the conversation plus exactly the prefix's tokens: the assistant turn is left open (no
    # end-of-turn, no new generation prompt), so the model writes the next tokens of the same answer ...
    assert resumed.usage.prompt_tokens == fresh.usage.prompt_tokens + len(tokenize(prefix))
    # ... and the server returns only those: the prefix is not repeated, no new answer starts.
    assert text and not text.lstrip().startswith(prefix.strip()[:12])
    # Without the flags the same messages make a new assistant turn after a closed one (more prompt tokens).
    closed = raw_answer(vllm_url, [*RAINBOW, {"role": "assistant", "content": prefix}], max_tokens=1)
    assert closed.usage.prompt_tokens > resumed.usage.prompt_tokens


def test_logit_bias_with_the_served_tokenizer_bans_the_token(vllm_url: str, plain: str) -> None:
    tokenizer = resolve_tokenizer("auto", base_url=vllm_url, api_key=None, model=MODEL_ALIAS)
    assert isinstance(tokenizer, VLLMServerTokenizer)  # "auto" finds vLLM's /tokenize
    assert len(tokenizer(" " + FLAGGED)) == 1  # the ids are the served model's (SmolLM2's BPE), not tiktoken's
    # The answer goes on with the flagged word after the prefix; ban the first token of each of its spellings.
    prefix = plain[: plain.index(FLAGGED)]
    messages = [*RAINBOW, {"role": "assistant", "content": prefix}]
    unbanned = raw_answer(vllm_url, messages, max_tokens=6, extra_body=CONTINUE, logprobs=True)
    ban = {tokenizer(spelling)[0]: -100 for spelling in (FLAGGED, " " + FLAGGED)}
    banned = raw_answer(vllm_url, messages, max_tokens=6, extra_body=CONTINUE, logprobs=True,
                        logit_bias={str(k): v for k, v in ban.items()})
    assert str(unbanned.choices[0].message.content).lstrip().startswith(FLAGGED)
    first_unbanned = unbanned.choices[0].logprobs.content[0].token
    first_banned = banned.choices[0].logprobs.content[0].token
    assert tokenizer(first_unbanned)[0] in ban  # without the bias the model picks a banned token ...
    assert tokenizer(first_banned)[0] not in ban  # ... with it, another one
    assert FLAGGED not in str(banned.choices[0].message.content)


def test_the_supervisor_logits_processor_bans_only_the_first_position(vllm_url: str, plain: str) -> None:
    """scripts/vllm_supervisor_logits.py, loaded by scripts/vllm_server.sh: token-level control inside vLLM.
    Unlike logit_bias (every position), the ban holds at the rollback position only, as in the logit engine."""
    tokenizer = VLLMServerTokenizer(vllm_url, model=MODEL_ALIAS)
    prefix = plain[: plain.index(FLAGGED)]
    messages = [*RAINBOW, {"role": "assistant", "content": prefix}]
    ban = [tokenizer(spelling)[0] for spelling in (FLAGGED, " " + FLAGGED)]  # as the supervisor's rollback bans
    reply = raw_answer(vllm_url, messages, max_tokens=24, logprobs=True,
                       extra_body={**CONTINUE, "vllm_xargs": {"supervisor_ban_first": ban}})
    tokens = [t.token for t in reply.choices[0].logprobs.content]
    assert tokenizer(tokens[0])[0] not in ban  # unbanned, the model starts with a banned token (test above)
    with pytest.raises(openai.BadRequestError, match="supervisor_ban_first"):
        raw_answer(vllm_url, messages, max_tokens=2, extra_body={**CONTINUE, "vllm_xargs": {"supervisor_ban_first": "x"}})


# -- the OpenAI wrapper ---------------------------------------------------------------------------
def test_wrapper_passes_safe_text_unchanged_with_usage(vllm_url: str, plain: str) -> None:
    wrapped = supervise(client(vllm_url), scorer="lexical", continuation="vllm")
    assert [m.id for m in wrapped.models.list().data] == [MODEL_ALIAS]
    stream = wrapped.chat.completions.create(messages=RAINBOW, stream=True,
                                             stream_options={"include_usage": True}, **GREEDY)
    chunks = list(stream)
    text = "".join(released_prefixes(chunks)[-1:])
    assert text == stream.supervision.text == plain and not stream.supervision.events
    usage = chunks[-1].usage  # vLLM reports usage when streaming: prompt tokens are real, not estimated
    assert usage is not None and usage.prompt_tokens > 0 and usage.completion_tokens > 0


def test_wrapper_rolls_back_real_output_and_resumes_from_the_checked_prefix(vllm_url: str, plain: str) -> None:
    events: list[Any] = []
    wrapped = supervise(client(vllm_url), scorer=KeywordScorer(word=FLAGGED, step=1.0), policy=FAST,
                        continuation="vllm", on_event=events.append)
    stream = wrapped.chat.completions.create(messages=RAINBOW, stream=True,
                                             stream_options={"include_usage": True}, **GREEDY)
    chunks = list(stream)
    seen = released_prefixes(chunks)
    report = stream.supervision
    # The guarantees: nothing flagged was ever shown, and what was shown is the final text (never retracted).
    assert all(FLAGGED not in s for s in seen)
    assert seen[-1] == report.text and FLAGGED not in report.text
    rollback = next(e for e in report.events if e.kind == "rollback")
    assert FLAGGED in rollback.removed_text and rollback in events
    retry = report.attempts[1]
    assert retry.reason == "rollback" and retry.logit_bias_entries > 0  # the served tokenizer gave the ids
    # Exact continuation: the final text starts with the checked prefix, which is also what the first attempt
    # said (vLLM continued it; no restated answer, no instruction).
    prefix = report.text[: retry.prefix_chars]
    assert plain.startswith(prefix) and report.text != plain
    usage = chunks[-1].usage
    assert usage is not None and usage.prompt_tokens == sum(a.prompt_tokens or 0 for a in report.attempts)


def test_wrapper_async_rollback_matches_streamed(vllm_url: str) -> None:
    async def main() -> tuple[str, Any]:
        wrapped = supervise(openai.AsyncOpenAI(base_url=vllm_url, api_key="x", max_retries=0),
                            scorer=KeywordScorer(word=FLAGGED, step=1.0), policy=FAST, continuation="vllm")
        stream = await wrapped.chat.completions.create(messages=RAINBOW, stream=True, **GREEDY)
        async with stream:
            parts = [c.choices[0].delta.content or "" async for c in stream if c.choices]
        return "".join(parts), stream.supervision

    text, report = asyncio.run(main())
    assert text == report.text and FLAGGED not in text and report.count("rollback") >= 1


# -- LangChain ------------------------------------------------------------------------------------
def test_supervised_chat_model_on_vllm_rolls_back_with_exact_continuation(vllm_url: str, plain: str) -> None:
    pytest.importorskip("langchain_core")
    langchain_openai = pytest.importorskip("langchain_openai")
    from langchain_core.messages import AIMessage

    from supervisor.integrations.langchain import SupervisedChatModel

    inner = langchain_openai.ChatOpenAI(base_url=vllm_url, api_key="not-needed", model=MODEL_ALIAS, temperature=0.0,
                                        max_tokens=40, seed=1, max_retries=0, stream_usage=True)
    events: list[Any] = []
    model = SupervisedChatModel(inner=inner, scorer=KeywordScorer(word=FLAGGED, step=1.0), policy=FAST,
                                continuation="vllm", on_event=events.append)
    question = RAINBOW[0]["content"]
    chunks = list(model.stream(question))
    seen, streamed = [], ""
    for chunk in chunks:
        streamed += chunk.text
        seen.append(streamed)
    assert all(FLAGGED not in s for s in seen)
    answer = model.invoke(question)
    assert isinstance(answer, AIMessage) and answer.content == streamed  # greedy: the same supervised answer
    report = answer.response_metadata["supervision"]
    assert report["text"] == streamed and events and events[0].kind == "rollback"
    retry = report["attempts"][1]
    assert retry["logit_bias_entries"] > 0
    assert plain.startswith(streamed[: retry["prefix_chars"]])  # resumed exactly after the checked prefix
    assert answer.usage_metadata is not None and answer.usage_metadata["input_tokens"] > 0


# -- the gateway ----------------------------------------------------------------------------------
def test_gateway_in_front_of_vllm_streams_a_real_rollback(vllm_url: str) -> None:
    pytest.importorskip("uvicorn")
    from supervisor.integrations.serve import GatewayConfig
    from tests.test_serve import RunningGateway

    config = GatewayConfig(upstream=vllm_url, continuation="vllm",
                           policy={"checkpoint_every": 4, "first_checkpoint_tokens": 4, "window_tokens": 8,
                                   "upstream_backoff_s": 0.0})
    with RunningGateway(config, scorer=KeywordScorer(word=FLAGGED, step=1.0)) as gateway:
        text, comments, raw = gateway.stream_chat({"messages": RAINBOW, "stream": True, **GREEDY})
    assert text and FLAGGED not in text
    assert [c["kind"] for c in comments][:1] == ["rollback"] and comments[0]["removed_chars"] > 0
    assert FLAGGED not in raw  # nor in any event: removed text stays with the operator
    assert raw.rstrip().endswith("data: [DONE]")


def test_supervisor_serve_command_with_upstream_vllm(vllm_url: str, plain: str) -> None:
    pytest.importorskip("uvicorn")
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "supervisor.cli", "serve", "--upstream", vllm_url, "--continuation", "vllm",
         "--scorer", "lexical", "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(f"http://127.0.0.1:{port}/health", timeout_s=60, process=process)  # type: ignore[arg-type]
        gateway = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0)
        stream = gateway.chat.completions.create(messages=RAINBOW, stream=True,
                                                 stream_options={"include_usage": True}, **GREEDY)
        chunks = list(stream)
        assert released_prefixes(chunks)[-1] == plain  # benign text passes through the gateway unchanged
        assert chunks[-1].usage is not None and chunks[-1].usage.prompt_tokens > 0
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=60)
    assert process.returncode in (0, -signal.SIGTERM), output
