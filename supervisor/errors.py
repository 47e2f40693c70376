"""Exceptions raised by llm-supervisor. Every message names what was wrong and what is accepted."""

from __future__ import annotations


class SupervisorError(Exception):
    """Base class of every error this library raises on purpose."""


class ConfigError(SupervisorError, ValueError):
    """A policy, argument or file that cannot be accepted."""


class InputError(SupervisorError, ValueError):
    """Messages, prompts or generation arguments that cannot be accepted."""


class ModelNotFoundError(SupervisorError, LookupError):
    """A primary or scorer name that is not known and is not a usable path."""


class MissingDependencyError(SupervisorError, ImportError):
    """An optional dependency is needed for the requested component."""

    def __init__(self, component: str, package: str, extra: str) -> None:
        super().__init__(
            f"{component} needs the package {package!r}, which is not installed. "
            f"Install it with: pip install 'llm-supervisor[{extra}]'"
        )
        self.package = package
        self.extra = extra


class ScorerError(SupervisorError, RuntimeError):
    """The supervisor model failed (raised, returned malformed output, or timed out)."""


class PrimaryBusyError(SupervisorError, RuntimeError):
    """A local primary holds one decoding state; two generations cannot share it at once."""


class UpstreamFault(SupervisorError, RuntimeError):
    """A hosted primary's request failed in a way worth retrying (dropped connection, timeout, 429, 5xx).

    Raised by chunk primaries; the session retries from the last checked text within the policy's budget.
    """

    def __init__(self, message: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class UpstreamError(SupervisorError, RuntimeError):
    """A hosted primary kept failing after the policy's retries. Nothing unchecked was released.

    ``released_text`` is what the caller already received; ``result`` holds the events and the attempts;
    ``failures`` counts the failed requests and ``last_fault`` is the last one's message.
    """

    def __init__(self, message: str, *, released_text: str, result: object = None, failures: int = 0,
                 last_fault: str = "") -> None:
        super().__init__(message)
        self.released_text = released_text
        self.result = result
        self.failures = failures
        self.last_fault = last_fault
