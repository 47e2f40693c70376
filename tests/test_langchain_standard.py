"""LangChain's own standard test suites (``langchain-tests``) on ``SupervisedChatModel``: the unit suite and
the integration suite, with the real ``ChatOpenAI`` against the real llama.cpp server (embedded SmolLM2)
and the lexical scorer."""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("langchain_core")
langchain_openai = pytest.importorskip("langchain_openai")
pytest.importorskip("langchain_tests")

from langchain_tests.integration_tests import ChatModelIntegrationTests  # noqa: E402
from langchain_tests.unit_tests import ChatModelUnitTests  # noqa: E402

from supervisor.integrations.langchain import SupervisedChatModel  # noqa: E402
from tests.openai_servers import MODEL_ALIAS  # noqa: E402

pytestmark = pytest.mark.integration

UNUSED_URL = "http://127.0.0.1:9/v1"  # the unit suite builds models and never sends a request


def supervised(url: str) -> dict[str, Any]:
    import httpx

    # Its own async HTTP client per model: ChatOpenAI's default one is shared by the process, and a connection it
    # pooled in an earlier test's (closed) event loop fails the next test with "Event loop is closed".
    inner = langchain_openai.ChatOpenAI(base_url=url, api_key="not-needed", model=MODEL_ALIAS, temperature=0.0,
                                        max_tokens=100, seed=1, max_retries=0, http_async_client=httpx.AsyncClient())
    return {"inner": inner, "scorer": "lexical"}


class TestSupervisedChatModelUnit(ChatModelUnitTests):
    @property
    def chat_model_class(self) -> type[SupervisedChatModel]:
        return SupervisedChatModel

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return supervised(UNUSED_URL)


class TestSupervisedChatModelIntegration(ChatModelIntegrationTests):
    url: str = UNUSED_URL

    @pytest.fixture(autouse=True)
    def _server(self, llama_server_url: str) -> None:
        self.url = llama_server_url

    @property
    def chat_model_class(self) -> type[SupervisedChatModel]:
        return SupervisedChatModel

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return supervised(self.url)

    # What the inner model and its runtime cannot do, as the suite's own switches (the plain ChatOpenAI on
    # the same server fails the same tests). The unit suite above keeps the defaults: bind_tools and
    # with_structured_output do pass through the wrapper (tests/test_langchain.py checks tool calls end to
    # end against a scripted server).
    @property
    def has_tool_calling(self) -> bool:
        # llama.cpp's server answers SmolLM2 with its chat template, which has no tool-call format: no
        # tool_calls ever come back (and so no structured output, which the wrapper gets by tool calling).
        return False

    @property
    def supports_model_override(self) -> bool:
        # The server serves one model and answers any model name with it: an override cannot show.
        return False
