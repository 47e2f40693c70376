"""A streaming check for any text stream: an application with its own streaming loop (any SDK, any web framework)
feeds it each text delta as it arrives and sends on only what comes back.

    check = StreamCheck(scorer="lexical")
    for delta in upstream_stream:                 # any SDK's stream of text deltas
        checked = check.feed(delta)
        send_to_user(checked.text)                # checked text only, never retracted
        if checked.stopped:                       # unsafe: the rest is not shown
            upstream_stream.close()
            break
    else:
        send_to_user(check.end().text)            # the held-back tail, once checked
    report = check.result                         # events, trace, usage (a GenerationResult)

It cannot regenerate (it does not own the model): an unsafe state stops the stream, and what is sent last is the
policy's halt message. Given the ``conversation`` the stream answers (chat messages), it measures it first (on the
first call, or :meth:`StreamCheck.start`): a risky request starts the stream in the watch zone; an unsafe
conversation under ``conversation_action`` ``refuse`` or ``halt`` stops it before any of its text is shown (the
refusal or the halt message is what is sent). An ``instruction`` cannot be given to a stream already under way:
it is measured only. The same measurement as every engine (windows of a few words and with context, the
estimator, the controller, fail-closed scorer errors), with an async twin of each call (``afeed``, ``aend``). The
LangChain callback handlers, stream filter and agent middleware are built on it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from supervisor.chunk_drivers import aanswer_checks, answer_checks, aopen_conversation, open_conversation
from supervisor.chunk_engine import UNLIMITED_TOKENS, ChunkEngine, Directive
from supervisor.events import EventObserver, GenerationResult, InterventionEvent
from supervisor.policy import Policy, as_policy
from supervisor.primaries.chunk import UpstreamDelta
from supervisor.scorers import Scorer, get_scorer

#: Why a check stopped a stream (the rest is not shown).
HALTED = ("halt", "scorer_error")


def observe_only(policy: Policy) -> Policy:
    """The policy for a stream that cannot be regenerated: an unsafe state goes straight to a halt (and an unsafe
    conversation cannot get an instruction: the stream is already under way)."""
    update: dict[str, Any] = {"max_rollbacks": 0, "max_reprompts": 0, "holdback_checkpoints": 0}
    if policy.conversation_action == "instruction":
        update["conversation_action"] = "none"
    return policy.model_copy(update=update)


@dataclass(frozen=True)
class Checked:
    """What one call let through. ``text``: checked text to send now (may be empty: held back until checked).
    ``stopped``: the check is over (the stream was unsafe, or it ended); ``halted``: it was unsafe (or the scorer
    failed, failing closed), and ``text`` ends with the halt message."""

    text: str
    stopped: bool
    halted: bool


class StreamCheck:
    """Checks one text stream as it arrives (see the module docstring). Not thread-safe: one stream, one check."""

    def __init__(self, scorer: str | Scorer | None = None,
                 policy: Policy | str | Path | dict[str, Any] | None = None, *,
                 on_event: EventObserver | None = None,
                 conversation: Sequence[Mapping[str, Any]] | None = None) -> None:
        self.scorer = get_scorer(scorer)
        self.policy = observe_only(as_policy(policy))
        self._session = ChunkEngine(self.policy, max_tokens=UNLIMITED_TOKENS,
                                     observers=[on_event] if on_event is not None else [],
                                     conversation=conversation, measured_by=self.scorer)
        self._opening: Directive | None = None

    # -- starting -----------------------------------------------------------------------------------
    def start(self) -> Checked:
        """Measure the conversation (once; the first :meth:`feed` or :meth:`end` does it otherwise). ``stopped``:
        the stream must not be shown (``text`` is the refusal or the halt message to send instead)."""
        if self._opening is None:
            self._begin(open_conversation(self._session, self.scorer))
        return self._started()

    async def astart(self) -> Checked:
        """Async twin of :meth:`start`."""
        if self._opening is None:
            self._begin(await aopen_conversation(self._session, self.scorer))
        return self._started()

    def _begin(self, opening: Directive) -> None:
        self._opening = opening
        if not opening.done:
            self._session.begin()

    def _started(self) -> Checked:
        assert self._opening is not None
        return self._checked(self._opening) if self._opening.done else Checked(text="", stopped=False, halted=False)

    # -- feeding ------------------------------------------------------------------------------------
    def feed(self, text: str) -> Checked:
        """The next delta of the stream; returns what may be shown now."""
        opening = self.start() if self._opening is None else None
        if (over := self._over(opening)) is not None:
            return over
        return self._checked(answer_checks(self._session, self._session.feed(UpstreamDelta(text=text)), self.scorer))

    async def afeed(self, text: str) -> Checked:
        """Async twin of :meth:`feed` (the scorer's ``aassess``)."""
        opening = await self.astart() if self._opening is None else None
        if (over := self._over(opening)) is not None:
            return over
        return self._checked(await aanswer_checks(self._session, self._session.feed(UpstreamDelta(text=text)), self.scorer))

    def end(self) -> Checked:
        """The stream ended: the held-back tail, once checked (the final check of the whole text runs now)."""
        opening = self.start() if self._opening is None else None
        if (over := self._over(opening)) is not None:
            return over
        return self._checked(answer_checks(self._session, self._session.end(), self.scorer))

    async def aend(self) -> Checked:
        """Async twin of :meth:`end`."""
        opening = await self.astart() if self._opening is None else None
        if (over := self._over(opening)) is not None:
            return over
        return self._checked(await aanswer_checks(self._session, self._session.end(), self.scorer))

    def _over(self, opening: Checked | None) -> Checked | None:
        """What a feed or end answers once the check is over: the opening that just ended it (a refusal or halt of
        the conversation), else nothing more; ``None`` while it goes on."""
        if not self.stopped:
            return None
        return opening if opening is not None else self._checked(Directive(done=True))

    def cancel(self) -> None:
        """The stream was abandoned: the report is finished as cancelled (nothing more is released)."""
        self._session.cancel()

    def _checked(self, step: Directive) -> Checked:
        halted = self.result is not None and self.result.stop_reason in HALTED
        return Checked(text=step.released, stopped=step.done or self.result is not None, halted=halted)

    @property
    def refused(self) -> bool:
        """The conversation was answered with a refusal instead of this stream."""
        return self.result is not None and self.result.conversation is not None and \
            self.result.conversation.action == "refuse"

    # -- what it saw ----------------------------------------------------------------------------------
    @property
    def stopped(self) -> bool:
        return self._session.result is not None

    @property
    def result(self) -> GenerationResult | None:
        """The report, once the check is over (stopped, ended or cancelled)."""
        return self._session.result

    @property
    def events(self) -> list[InterventionEvent]:
        """The interventions so far."""
        return list(self._session.events)

    @property
    def released_text(self) -> str:
        """Everything let through so far."""
        return self._session.released_text

    @property
    def fed(self) -> bool:
        """Whether any text was fed."""
        return self._session.streamed_chars > 0
