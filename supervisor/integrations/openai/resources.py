"""What the supervised OpenAI resources share: the client's settings and the pass-through of everything else."""

from __future__ import annotations

from typing import Any

from supervisor.errors import InputError
from supervisor.events import EventObserver
from supervisor.policy import Policy
from supervisor.scorers import Scorer


class Settings:
    def __init__(self, scorer: Scorer, policy: Policy, on_event: EventObserver | None) -> None:
        self.scorer = scorer
        self.policy = policy
        self.on_event = on_event


class Passthrough:
    """Every attribute not defined here comes from the wrapped object."""

    def __init__(self, target: Any) -> None:
        self._target = target

    def __getattr__(self, name: str) -> Any:
        return getattr(self._target, name)


UNSUPERVISED_GENERATION = ("parse", "stream", "with_raw_response", "with_streaming_response")


class GuardedResource(Passthrough):
    """A generating resource: its other ways to generate would bypass supervision, so they are refused."""

    def __getattr__(self, name: str) -> Any:
        if name in UNSUPERVISED_GENERATION:
            raise InputError(
                f"{name} is not supervised by llm-supervisor (it would return unchecked text); use create(...) "
                "(stream=True for streaming), or call it on client.unwrapped knowingly"
            )
        return getattr(self._target, name)
