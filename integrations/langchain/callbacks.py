"""Callback handlers that watch a LangChain run's streamed tokens and stop it on an unsafe state."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any
from uuid import UUID

from langchain_core.callbacks import AsyncCallbackHandler, BaseCallbackHandler
from langchain_core.messages import BaseMessage

from supervisor.chunk_drivers import asettle, settle
from supervisor.chunk_session import UNLIMITED_TOKENS, ChunkSession, Step
from supervisor.errors import SupervisorError
from supervisor.events import EventObserver, GenerationResult, InterventionEvent
from supervisor.policy import Policy, as_policy
from supervisor.primaries.chunk import UpstreamDelta
from supervisor.scorers import Scorer, get_scorer


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


def observe_only(policy: Policy) -> Policy:
    """A callback cannot roll back or re-prompt: an unsafe state goes straight to a halt."""
    return policy.model_copy(update={"max_rollbacks": 0, "max_reprompts": 0, "holdback_checkpoints": 0})


class _RunWatcher:
    """Shared bookkeeping of the sync and async handlers: one ChunkSession per LangChain run."""

    def __init__(self, scorer: str | Scorer | None, policy: Policy | str | Path | dict[str, Any] | None,
                 on_event: EventObserver | None) -> None:
        self.scorer = get_scorer(scorer)
        self.policy = observe_only(as_policy(policy))
        self.on_event = on_event
        self.results: dict[UUID, GenerationResult] = {}
        self.events: list[InterventionEvent] = []
        self._sessions: dict[UUID, ChunkSession] = {}
        self._lock = threading.Lock()

    def start(self, run_id: UUID) -> None:
        def record(event: InterventionEvent) -> None:
            with self._lock:
                self.events.append(event)
            if self.on_event is not None:
                self.on_event(event)

        session = ChunkSession(self.policy, max_tokens=UNLIMITED_TOKENS, observers=[record])
        session.begin()
        with self._lock:
            self._sessions[run_id] = session

    def session(self, run_id: UUID) -> ChunkSession | None:
        """The run's session; None once the run is finished (halted runs get no more checks)."""
        with self._lock:
            session = self._sessions.get(run_id)
            finished = run_id in self.results
        if session is None and not finished:  # a model that did not announce its start
            self.start(run_id)
            return self.session(run_id)
        return session

    def finish(self, run_id: UUID) -> None:
        with self._lock:
            session = self._sessions.pop(run_id, None)
        if session is not None:
            session.cancel()
            assert session.result is not None
            self.results[run_id] = session.result

    @staticmethod
    def unstreamed_text(session: ChunkSession, response: Any) -> str:
        """The answer's text when no token was streamed (``invoke`` without streaming)."""
        if session.streamed_chars:
            return ""
        generations = getattr(response, "generations", None) or []
        return "".join(g.text for batch in generations for g in batch if isinstance(getattr(g, "text", None), str))

    def after(self, session: ChunkSession, step: Step, run_id: UUID) -> None:
        if not step.done:
            return
        self.finish(run_id)
        result = session.result
        if result is not None and result.stop_reason in ("halt", "scorer_error"):
            reason = result.events[-1].detail if result.events else result.stop_reason
            raise SupervisorHalt(f"supervisor halted the stream: {reason}", result=result, run_id=run_id)


class SupervisorCallbackHandler(BaseCallbackHandler):
    """Watches streamed tokens per run; raises :class:`SupervisorHalt` when the state becomes unsafe.

    ``results[run_id]`` holds each finished run's report and ``events`` every intervention. Tokens flow
    only when the model streams (``stream()``, or ``streaming=True`` for ``invoke``).
    """

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

    def on_chat_model_start(self, serialized: dict[str, Any], messages: list[list[BaseMessage]], *,
                            run_id: UUID, **kwargs: Any) -> None:
        self._watch.start(run_id)

    def on_llm_start(self, serialized: dict[str, Any], prompts: list[str], *, run_id: UUID, **kwargs: Any) -> None:
        self._watch.start(run_id)

    def on_llm_new_token(self, token: Any, *, run_id: UUID, **kwargs: Any) -> None:
        session = self._watch.session(run_id)
        if session is not None:
            step = settle(session, session.feed(UpstreamDelta(text=_text_of(token))), self._watch.scorer)
            self._watch.after(session, step, run_id)

    def on_llm_end(self, response: Any, *, run_id: UUID, **kwargs: Any) -> None:
        session = self._watch.session(run_id)
        if session is not None:
            unseen = self._watch.unstreamed_text(session, response)
            if unseen:  # not streamed: the whole answer is checked now, before invoke() returns it
                self._watch.after(session, settle(session, session.feed(UpstreamDelta(text=unseen)),
                                                  self._watch.scorer), run_id)
            if self._watch.session(run_id) is not None:
                self._watch.after(session, settle(session, session.end(), self._watch.scorer), run_id)
        self._watch.finish(run_id)

    def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self._watch.finish(run_id)


class AsyncSupervisorCallbackHandler(AsyncCallbackHandler):
    """Async twin of :class:`SupervisorCallbackHandler` (for ``ainvoke`` / ``astream`` / ``abatch``).

    LangChain does not propagate errors of async handlers called from sync ``stream()``: use the sync
    handler there.
    """

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

    async def on_chat_model_start(self, serialized: dict[str, Any], messages: list[list[BaseMessage]], *,
                                  run_id: UUID, **kwargs: Any) -> None:
        self._watch.start(run_id)

    async def on_llm_start(self, serialized: dict[str, Any], prompts: list[str], *, run_id: UUID,
                           **kwargs: Any) -> None:
        self._watch.start(run_id)

    async def on_llm_new_token(self, token: Any, *, run_id: UUID, **kwargs: Any) -> None:
        session = self._watch.session(run_id)
        if session is not None:
            step = await asettle(session, session.feed(UpstreamDelta(text=_text_of(token))), self._watch.scorer)
            self._watch.after(session, step, run_id)

    async def on_llm_end(self, response: Any, *, run_id: UUID, **kwargs: Any) -> None:
        session = self._watch.session(run_id)
        if session is not None:
            unseen = self._watch.unstreamed_text(session, response)
            if unseen:
                self._watch.after(session, await asettle(session, session.feed(UpstreamDelta(text=unseen)),
                                                         self._watch.scorer), run_id)
            if self._watch.session(run_id) is not None:
                self._watch.after(session, await asettle(session, session.end(), self._watch.scorer), run_id)
        self._watch.finish(run_id)

    async def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self._watch.finish(run_id)
