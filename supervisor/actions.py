"""What the controller tells the session to do next, mildest first."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Continue:
    """The state is safe: keep decoding as the primary likes."""


@dataclass(frozen=True)
class Bias:
    """Watch zone: steer the next tokens away from risky candidates with this strength."""

    strength: float


@dataclass(frozen=True)
class Rollback:
    """Discard everything after this token position (a safe checkpoint) and regenerate."""

    to_position: int


@dataclass(frozen=True)
class Reprompt:
    """Add a steering instruction to the context and regenerate from this safe position."""

    instruction: str
    to_position: int


@dataclass(frozen=True)
class Halt:
    """Stop: release nothing more of the generation and end with this message."""

    message: str
    to_position: int


Action = Continue | Bias | Rollback | Reprompt | Halt
