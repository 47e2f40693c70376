"""Callback handlers that watch a LangChain run's streamed tokens and stop it on an unsafe state."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

from langchain_core.callbacks import AsyncCallbackHandler, BaseCallbackHandler
from langchain_core.messages import BaseMessage

from supervisor.errors import SupervisorError
from supervisor.events import EventObserver, GenerationResult, InterventionEvent
from supervisor.flows import Flow, Handlers, Need, afinish, finish
from supervisor.integrations.langchain.primary import thread_conversation
from supervisor.policy import Policy, as_policy
from supervisor.scorers import Scorer, get_scorer
from supervisor.stream_check import Checked, StreamCheck, observe_only


class SupervisorHalt(SupervisorError):
    """Raised by the callback handlers to stop a stream whose trajectory became unsafe.

    ``result`` is the supervision report of that run (events, trace); ``run_id`` the LangChain run.
    """

    def __init__(self, message: str, *, result: GenerationResult | None, run_id: UUID | None) -> None:
        super().__init__(message)
        self.result = result
        self.run_id = run_id


def _text_of(token: Any) -> str:
    """Token text from ``on_llm_new_token`` (a string, or content blocks with output_version='v1')."""
    if isinstance(token, str):
        return token
    if isinstance(token, list):
        return "".join(b.get("text", "") if isinstance(b, dict) else str(b) for b in token)
    return str(token or "")


@dataclass(frozen=True)
class _Feed(Need):
    check: StreamCheck
    text: str


@dataclass(frozen=True)
class _End(Need):
    check: StreamCheck


@dataclass(frozen=True)
class _Start(Need):
    check: StreamCheck


_CHECKS: Handlers = {_Feed: lambda need: need.check.feed(need.text), _End: lambda need: need.check.end(),
                     _Start: lambda need: need.check.start()}
_ACHECKS: Handlers = {_Feed: lambda need: need.check.afeed(need.text), _End: lambda need: need.check.aend(),
                      _Start: lambda need: need.check.astart()}


class _RunWatcher:
    """Shared bookkeeping of the sync and async handlers: one :class:`StreamCheck` per LangChain run."""

    def __init__(self, scorer: str | Scorer | None, policy: Policy | str | Path | dict[str, Any] | None,
                 on_event: EventObserver | None) -> None:
        self.scorer = get_scorer(scorer)
        self.policy = observe_only(as_policy(policy))
        self.on_event = on_event
        self.results: dict[UUID, GenerationResult] = {}
        self.events: list[InterventionEvent] = []
        self._checks: dict[UUID, StreamCheck] = {}
        self._lock = threading.Lock()

    def start(self, run_id: UUID, conversation: list[dict[str, Any]] | None = None) -> StreamCheck:
        def record(event: InterventionEvent) -> None:
            with self._lock:
                self.events.append(event)
            if self.on_event is not None:
                self.on_event(event)

        check = StreamCheck(self.scorer, self.policy, on_event=record, conversation=conversation)
        with self._lock:
            self._checks[run_id] = check
        return check

    def check(self, run_id: UUID) -> StreamCheck | None:
        """The run's check; None once the run is finished (halted runs get no more checks)."""
        with self._lock:
            check = self._checks.get(run_id)
            finished = run_id in self.results
        if check is None and not finished:  # a model that did not announce its start
            self.start(run_id)
            return self.check(run_id)
        return check

    def finish(self, run_id: UUID) -> None:
        with self._lock:
            check = self._checks.pop(run_id, None)
        if check is not None:
            check.cancel()
            assert check.result is not None
            self.results[run_id] = check.result

    @staticmethod
    def unstreamed_text(check: StreamCheck, response: Any) -> str:
        """The answer's text when no token was streamed (``invoke`` without streaming)."""
        if check.fed:
            return ""
        generations = getattr(response, "generations", None) or []
        return "".join(g.text for batch in generations for g in batch if isinstance(getattr(g, "text", None), str))

    # What the start, a token and the end of a run do, written once for both handlers (supervisor.flows)
    def start_flow(self, run_id: UUID, messages: list[list[BaseMessage]]) -> Flow[None]:
        """A chat model's run: the thread's messages are measured before any token (an unsafe conversation under
        conversation_action 'refuse' or 'halt' stops the run before the model is called)."""
        check = self.start(run_id, thread_conversation(messages[0]) if len(messages) == 1 else None)
        self.after(run_id, check, (yield _Start(check)))

    def token_flow(self, run_id: UUID, text: str) -> Flow[None]:
        if (check := self.check(run_id)) is not None:
            self.after(run_id, check, (yield _Feed(check, text)))

    def end_flow(self, run_id: UUID, response: Any) -> Flow[None]:
        if (check := self.check(run_id)) is not None:
            if unseen := self.unstreamed_text(check, response):  # not streamed: checked before invoke returns
                self.after(run_id, check, (yield _Feed(check, unseen)))
            if not check.stopped:
                self.after(run_id, check, (yield _End(check)))
        self.finish(run_id)

    def after(self, run_id: UUID, check: StreamCheck, checked: Checked) -> None:
        if not checked.stopped:
            return
        self.finish(run_id)
        result = check.result
        if (checked.halted or check.refused) and result is not None:
            reason = result.events[-1].detail if result.events else result.stop_reason
            raise SupervisorHalt(f"supervisor halted the stream: {reason}", result=result, run_id=run_id)


class _Watching:
    """What both handlers hold: the runs' checks, their reports (``results[run_id]``) and every event."""

    raise_error = True

    def __init__(self, scorer: str | Scorer | None = None,
                 policy: Policy | str | Path | dict[str, Any] | None = None, *,
                 on_event: EventObserver | None = None) -> None:
        self._watch = _RunWatcher(scorer, policy, on_event)

    @property
    def results(self) -> dict[UUID, GenerationResult]:
        return self._watch.results

    @property
    def events(self) -> list[InterventionEvent]:
        return self._watch.events


class SupervisorCallbackHandler(_Watching, BaseCallbackHandler):
    """Watches streamed tokens per run; raises :class:`SupervisorHalt` when the state becomes unsafe.

    ``results[run_id]`` holds each finished run's report and ``events`` every intervention. Tokens flow
    only when the model streams (``stream()``, or ``streaming=True`` for ``invoke``).
    """

    def on_chat_model_start(self, serialized: dict[str, Any], messages: list[list[BaseMessage]], *,
                            run_id: UUID, **kwargs: Any) -> None:
        finish(self._watch.start_flow(run_id, messages), _CHECKS)

    def on_llm_start(self, serialized: dict[str, Any], prompts: list[str], *, run_id: UUID, **kwargs: Any) -> None:
        self._watch.start(run_id)

    def on_llm_new_token(self, token: Any, *, run_id: UUID, **kwargs: Any) -> None:
        finish(self._watch.token_flow(run_id, _text_of(token)), _CHECKS)

    def on_llm_end(self, response: Any, *, run_id: UUID, **kwargs: Any) -> None:
        finish(self._watch.end_flow(run_id, response), _CHECKS)

    def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self._watch.finish(run_id)


class AsyncSupervisorCallbackHandler(_Watching, AsyncCallbackHandler):
    """Async twin of :class:`SupervisorCallbackHandler` (for ``ainvoke`` / ``astream`` / ``abatch``).

    LangChain does not propagate errors of async handlers called from sync ``stream()``: use the sync
    handler there.
    """

    async def on_chat_model_start(self, serialized: dict[str, Any], messages: list[list[BaseMessage]], *,
                                  run_id: UUID, **kwargs: Any) -> None:
        await afinish(self._watch.start_flow(run_id, messages), _ACHECKS)

    async def on_llm_start(self, serialized: dict[str, Any], prompts: list[str], *, run_id: UUID,
                           **kwargs: Any) -> None:
        self._watch.start(run_id)

    async def on_llm_new_token(self, token: Any, *, run_id: UUID, **kwargs: Any) -> None:
        await afinish(self._watch.token_flow(run_id, _text_of(token)), _ACHECKS)

    async def on_llm_end(self, response: Any, *, run_id: UUID, **kwargs: Any) -> None:
        await afinish(self._watch.end_flow(run_id, response), _ACHECKS)

    async def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self._watch.finish(run_id)
