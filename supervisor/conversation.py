"""The conversation's moral state: the trajectory a response continues.

Every message of the conversation the supervisor is given (system, developer, user, tool and earlier assistant
turns) is measured once: measurements are cached by the conversation's prefix, so a stateless server that is sent
the whole history with each request scores only the new messages. The same filter as a response's (level and trend
per category, :class:`~supervisor.state.StateEstimator`) runs across the turns, so a slow escalation raises the
state before any single turn is unsafe. A response then starts from it: the filtered risk, times
``Policy.conversation_prior``, is the floor of the response's initial level (a risky request puts the response in
the watch zone from its first token; a benign one leaves it where it was). The conversation is in the unsafe region
when its filtered risk *or its riskiest message so far* reaches ``Policy.conversation_threshold``: either alone
catches fewer escalations at the same share of benign conversations (``benchmarks/conversation.py``, two-fold on
disjoint halves of the benign prompts). A conversation in the unsafe region gets ``Policy.conversation_action`` (a
safety instruction in the system message of the answer, a refusal turn, or a halt;
:meth:`supervisor.core.SupervisionCore.start_from`).
"""

from __future__ import annotations

import hashlib
import threading
import weakref
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

from supervisor.assessment import Assessment
from supervisor.controller import Controller
from supervisor.events import ConversationState, Turn, Zone
from supervisor.policy import Policy
from supervisor.state import StateEstimator, per_category

_CACHE_SIZE = 8192


def measures_conversation(policy: Policy) -> bool:
    """Whether the policy uses the conversation's state at all."""
    return policy.conversation_prior > 0 or policy.conversation_action != "none"


def message_texts(messages: Sequence[Mapping[str, Any]]) -> list[tuple[str, str]]:
    """(role, text) of every message with text (a string, or text content parts); others are skipped."""
    texts = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, list):
            content = " ".join(str(part.get("text", "")) for part in content
                               if isinstance(part, Mapping) and part.get("type") in ("text", "input_text"))
        if isinstance(content, str) and content.strip():
            texts.append((str(message.get("role", "user")), content))
    return texts


class _Measurements:
    """Assessments of conversation prefixes, per scorer object (two scorers, or two configurations of one, never
    share) and keyed by a hash of the prefix (content-addressed: two conversations never mix, and a replica needs no
    shared state). Bounded, thread-safe; a scorer that cannot be weakly referenced is not cached."""

    def __init__(self) -> None:
        self._per_scorer: weakref.WeakKeyDictionary[Any, OrderedDict[str, Assessment]] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    @staticmethod
    def keys(texts: list[tuple[str, str]]) -> list[str]:
        digest = hashlib.sha256()
        keys = []
        for role, text in texts:
            digest.update(b"\x00" + role.encode() + b"\x01" + text.encode("utf-8", "replace"))
            keys.append(digest.copy().hexdigest())
        return keys

    def _items(self, scorer: Any) -> OrderedDict[str, Assessment] | None:
        try:
            return self._per_scorer.setdefault(scorer, OrderedDict())
        except TypeError:
            return None

    def get(self, scorer: Any, key: str) -> Assessment | None:
        with self._lock:
            items = self._items(scorer)
            found = items.get(key) if items is not None else None
            if found is not None and items is not None:
                items.move_to_end(key)
            return found

    def put(self, scorer: Any, key: str, assessment: Assessment) -> None:
        with self._lock:
            items = self._items(scorer)
            if items is None:
                return
            items[key] = assessment
            items.move_to_end(key)
            while len(items) > _CACHE_SIZE:
                items.popitem(last=False)


MEASUREMENTS = _Measurements()


class ConversationMeasure:
    """One conversation to measure: :attr:`pending` are the texts the scorer has not seen (ask for them in one
    batch), :meth:`state` the conversation's state once they are answered."""

    def __init__(self, messages: Sequence[Mapping[str, Any]], scorer: Any, policy: Policy) -> None:
        self.policy, self.scorer = policy, scorer
        self.texts = message_texts(messages)
        self.keys = MEASUREMENTS.keys(self.texts)
        self.known = [MEASUREMENTS.get(scorer, key) for key in self.keys]
        self.pending = [text for (_, text), known in zip(self.texts, self.known) if known is None]

    def state(self, answers: Sequence[Assessment]) -> ConversationState:
        fresh = iter(answers)
        assessments = []
        for key, known in zip(self.keys, self.known):
            if known is None:
                known = next(fresh)
                MEASUREMENTS.put(self.scorer, key, known)
            assessments.append(known)
        return conversation_state(self.texts, assessments, self.policy)


def conversation_state(texts: list[tuple[str, str]], assessments: Sequence[Assessment],
                       policy: Policy) -> ConversationState:
    """The filter across the turns (one checkpoint per message)."""
    estimator, controller = StateEstimator(policy), Controller(policy)
    turns: list[Turn] = []
    state = None
    for index, ((role, _), assessment) in enumerate(zip(texts, assessments)):
        state = estimator.update(index + 1, assessment)
        filtered = estimator.filtered_risk()
        flagged = controller.flags(per_category(assessment))
        # unsafe: the filter (a rising or steady trajectory) or one message at the conversation's threshold (a
        # message over an act threshold but under it is flagged, and enters the filter like any other)
        zone: Zone = ("unsafe" if max(filtered, state.peak) >= policy.conversation_threshold
                      else "watch" if filtered >= policy.watch_threshold else "safe")
        turns.append(Turn(index=index, role=role, risk=round(assessment.risk, 4),
                          categories={k: round(v, 4) for k, v in per_category(assessment).items()},
                          flagged=flagged, state_risk=round(filtered, 4), zone=zone))
    if state is None:
        return ConversationState()
    category = max(state.level, key=lambda name: state.level[name]) if state.level else None
    return ConversationState(turns=turns, risk=turns[-1].state_risk, peak=round(state.peak, 4), category=category,
                             zone=turns[-1].zone, level={k: round(v, 4) for k, v in state.level.items()})
