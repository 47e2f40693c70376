"""llm-supervisor: a supervisor model that watches a primary LLM's tokens as they stream,
estimates the trajectory's moral state, and steers it (bias, rollback, re-prompt, halt) before
harm reaches the user. Heavy dependencies load only when a component needs them."""

from __future__ import annotations

from supervisor.actions import Action, Bias, Continue, Halt, Reprompt, Rollback
from supervisor.api import AsyncSupervisedStream, GenerationOptions, SupervisedStream, Supervisor
from supervisor.assessment import CATEGORIES, Assessment
from supervisor.errors import (
    ConfigError,
    InputError,
    MissingDependencyError,
    ModelNotFoundError,
    PrimaryBusyError,
    ScorerError,
    SupervisorError,
    UpstreamError,
    UpstreamFault,
)
from supervisor.events import GenerationResult, InterventionEvent, Timings, TracePoint, UpstreamAttempt, Usage
from supervisor.policy import Policy
from supervisor.primaries import LogitPrimary, load_primary
from supervisor.primaries.chunk import ChunkPrimary
from supervisor.scorers import BaseScorer, Scorer, get_scorer
from supervisor.state import MoralState, StateEstimator
from supervisor.stream_check import Checked, StreamCheck

__version__ = "0.1.0"

__all__ = [
    "CATEGORIES",
    "Action",
    "Assessment",
    "AsyncSupervisedStream",
    "BaseScorer",
    "Bias",
    "Checked",
    "ChunkPrimary",
    "ConfigError",
    "Continue",
    "GenerationOptions",
    "GenerationResult",
    "Halt",
    "InputError",
    "InterventionEvent",
    "LogitPrimary",
    "MissingDependencyError",
    "ModelNotFoundError",
    "MoralState",
    "Policy",
    "PrimaryBusyError",
    "Reprompt",
    "Rollback",
    "Scorer",
    "ScorerError",
    "StateEstimator",
    "StreamCheck",
    "SupervisedStream",
    "Supervisor",
    "SupervisorError",
    "Timings",
    "TracePoint",
    "UpstreamAttempt",
    "UpstreamError",
    "UpstreamFault",
    "Usage",
    "get_scorer",
    "load_primary",
]
