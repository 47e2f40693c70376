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
- :class:`SupervisorMiddleware`: for LangChain 1.x agents (``create_agent(..., middleware=[...])``): every
  model call supervised as by :class:`SupervisedChatModel`, tool results measured (redact, halt or allow),
  a halt ends the loop cleanly; the run's reports are in the state (:func:`supervision_records`). Needs the
  ``langchain`` package (1.x), imported only when this class is used.
- :func:`supervised_stream_filter`: a ``RunnableGenerator`` to put after a model in a chain; it holds
  text back until checked and ends the stream with the halt message on an unsafe state.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from supervisor.integrations.langchain.callbacks import (
    AsyncSupervisorCallbackHandler,
    SupervisorCallbackHandler,
    SupervisorHalt,
)
from supervisor.integrations.langchain.chat_model import SupervisedChatModel
from supervisor.integrations.langchain.primary import LangChainPrimary, LangChainRequest
from supervisor.integrations.langchain.stream_filter import supervised_stream_filter

if TYPE_CHECKING:
    from supervisor.integrations.langchain.middleware import (
        AgentSupervisionSettings,
        SupervisionRecord,
        SupervisorMiddleware,
        supervision_records,
    )

_AGENT_NAMES = ("AgentSupervisionSettings", "SupervisionRecord", "SupervisorMiddleware", "supervision_records")


def __getattr__(name: str) -> object:
    """The agent middleware needs ``langchain`` (1.x, with langgraph): imported on first use only, so the
    rest of this integration works with langchain-core alone."""
    if name in _AGENT_NAMES:
        try:
            from supervisor.integrations.langchain import middleware
        except ImportError as exc:
            if exc.name not in ("langchain", "langgraph") and not str(exc.name).startswith(("langchain.", "langgraph.")):
                raise
            from supervisor.errors import MissingDependencyError

            raise MissingDependencyError(f"supervisor.integrations.langchain.{name}", "langchain>=1.0",
                                         "langchain") from exc
        return getattr(middleware, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "AgentSupervisionSettings",
    "AsyncSupervisorCallbackHandler",
    "LangChainPrimary",
    "LangChainRequest",
    "SupervisedChatModel",
    "SupervisionRecord",
    "SupervisorCallbackHandler",
    "SupervisorHalt",
    "SupervisorMiddleware",
    "supervised_stream_filter",
    "supervision_records",
]
