"""LangChain (langchain-core 1.x): a callback that watches, a chat model that steers, a stream filter.

- :class:`SupervisorCallbackHandler` / :class:`AsyncSupervisorCallbackHandler`: add to ``callbacks=[...]``
  of any chat model or chain. They measure the streamed tokens per run and, on an unsafe state, stop the
  stream by raising :class:`SupervisorHalt`. A callback only observes: it cannot hold text back or roll
  it back, so the tokens before the halt have already reached your code. Use
  :class:`SupervisedChatModel` for that.
- :class:`SupervisedChatModel`: a real ``BaseChatModel`` around any chat model (chunk-level control:
  hold back, roll back, re-prompt, halt; ``logit_bias`` when the inner model is ``ChatOpenAI``) or around
  a local primary from :func:`supervisor.load_primary` (full logit control). Streams released text only;
  the supervision report is in ``response_metadata["supervision"]``.
- :func:`supervised_stream_filter`: a ``RunnableGenerator`` to put after a model in a chain; it holds
  text back until checked and ends the stream with the halt message on an unsafe state.
"""

from __future__ import annotations

from supervisor.integrations.langchain.callbacks import (
    AsyncSupervisorCallbackHandler,
    SupervisorCallbackHandler,
    SupervisorHalt,
)
from supervisor.integrations.langchain.chat_model import SupervisedChatModel
from supervisor.integrations.langchain.primary import LangChainPrimary, LangChainRequest
from supervisor.integrations.langchain.stream_filter import supervised_stream_filter

__all__ = [
    "AsyncSupervisorCallbackHandler",
    "LangChainPrimary",
    "LangChainRequest",
    "SupervisedChatModel",
    "SupervisorCallbackHandler",
    "SupervisorHalt",
    "supervised_stream_filter",
]
