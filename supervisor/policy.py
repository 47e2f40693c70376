"""The policy: every knob of the supervision loop, with its default and the reason for it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from supervisor import _toml
from supervisor.assessment import check_category_values
from supervisor.errors import ConfigError

DEFAULT_REPROMPT_INSTRUCTION = (
    "Continue your answer in a respectful, non-toxic way. Do not use insults, slurs, threats, "
    "sexual content or demeaning language about anyone."
)
DEFAULT_HALT_MESSAGE = "[I can't continue this response.]"


class Policy(BaseModel):
    """How the supervisor measures and when it acts. Load from TOML/JSON with :meth:`from_file`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # -- measurement cadence ------------------------------------------------------------------
    checkpoint_every: int = Field(
        default=8, ge=1, le=512,
        description="Tokens between checkpoints. Smaller reacts sooner and costs more scorer calls.",
    )
    first_checkpoint_tokens: int = Field(
        default=1, ge=1, le=512,
        description=(
            "Tokens to the first checkpoint; the gap doubles at each passed checkpoint up to checkpoint_every "
            "(checkpoints at 1, 3, 7, 15, 23, ... by default). The first text is checked, and so released, after "
            "3 tokens instead of 16 (benchmarks/openai_wrapper.py); later checks keep their cadence."
        ),
    )
    window_tokens: int = Field(
        default=24, ge=1, le=4096,
        description=(
            "Tokens the scorer sees at each checkpoint, ending at the checkpoint. Larger than "
            "checkpoint_every so that windows overlap and a phrase split across a boundary is seen whole."
        ),
    )
    full_window_every: int = Field(
        default=4, ge=1, le=1000,
        description=(
            "Every N-th checkpoint, at every checkpoint while in the watch zone, and always before the final "
            "release, the whole response is scored, to catch harm that builds up over many chunks without any "
            "one window crossing the act threshold."
        ),
    )
    short_window_words: int = Field(
        default=4, ge=0, le=64,
        description=(
            "Besides the windows with context, every checked stretch is also measured in windows of this many whole "
            "words (overlapping by half), so one flagged word cannot hide in a long benign window: a profane word "
            "among 20-30 benign ones reached the caller in 24 of 40 chunkings with long windows alone, in 0 of 40 "
            "with them (benchmarks/steering.py, the lexical scorer). 0 turns them off."
        ),
    )
    release_whole_words: bool = Field(
        default=True,
        description=(
            "Release text only at word starts, so a word is never split between what was shown and what a rollback "
            "removes (a bare 'f' shown, then 'uck' rolled back). Text without spaces is released anyway once "
            "window_tokens (at least 32) of it waits. Rollbacks go back to the end of a whole word either way."
        ),
    )
    holdback_checkpoints: int = Field(
        default=1, ge=0, le=64,
        description=(
            "Passed checkpoints kept unreleased. With 1, text is shown only once the window after it was "
            "also checked, so a rollback never needs to touch what the user already saw."
        ),
    )

    # -- zones ----------------------------------------------------------------------------------
    watch_threshold: float = Field(
        default=0.35, ge=0.0, le=1.0,
        description="Risk (measured or forecast) from which decoding is steered by reranking candidates.",
    )
    act_threshold: float = Field(
        default=0.6, ge=0.0, le=1.0,
        description="Measured risk from which the last chunk is rejected (rollback, re-prompt, halt).",
    )
    category_thresholds: dict[str, float] = Field(
        default_factory=dict,
        description="Per-category act thresholds that override act_threshold, e.g. {'self_harm': 0.3}.",
    )

    # -- escalation budgets ------------------------------------------------------------------------
    max_rollbacks: int = Field(
        default=4, ge=0, le=100, description="Rollbacks allowed in one generation before re-prompting."
    )
    max_reprompts: int = Field(
        default=1, ge=0, le=20, description="Re-prompts allowed in one generation before halting."
    )
    reprompt_instruction: str = Field(
        default=DEFAULT_REPROMPT_INSTRUCTION, min_length=1,
        description="Steering instruction added to the context on a re-prompt.",
    )
    halt_message: str = Field(
        default=DEFAULT_HALT_MESSAGE, description="Text appended to the released answer when generation is halted."
    )

    # -- the conversation -----------------------------------------------------------------------------
    conversation_prior: float = Field(
        default=0.5, ge=0.0, le=1.0,
        description=(
            "The conversation's filtered risk (every message measured, a filter across the turns) times "
            "this is the floor of the response's initial level, per category: a risky request starts the response "
            "in the watch zone (steered harder from its first token); a benign one changes nothing. 0: off. It "
            "never rolls text back by itself (rollbacks need a measured window over act_threshold)."),
    )
    conversation_threshold: float = Field(
        default=0.8, ge=0.0, le=1.0,
        description=(
            "The conversation is in the unsafe region when its filtered risk (level and forecast across the turns) "
            "or its riskiest message so far reaches this (and stays there: one message this risky marks the "
            "conversation). Higher than act_threshold because its action comes before any of the answer is "
            "written, from the request alone, and a conversation has several messages to be wrong about. Chosen "
            "by benchmarks/conversation.py: the lowest threshold with at most 2% of benign multi-turn "
            "conversations (XSTest safe prompts with the primary's answers) with an intervention on one half of "
            "the prompts; 3.9% on the other half (0.9: 0.5%, catching half as many escalations early)."),
    )
    conversation_action: Literal["instruction", "refuse", "halt", "none"] = Field(
        default="instruction",
        description=(
            "What a conversation in the unsafe region gets (an event of kind 'conversation' and "
            "result.conversation.action say which): 'instruction' adds conversation_instruction to the system "
            "message of the answer; 'refuse' answers with conversation_refusal, a normal turn (stop reason 'stop': "
            "the conversation may go on), without asking the primary; 'halt' ends it with halt_message (stop "
            "reason 'halt', finish_reason content_filter; an agent's loop ends); 'none' only measures."),
    )
    conversation_refusal: str = Field(
        default=("I can't help with where this conversation is going. If there is something else you need, I'm "
                 "glad to help with that."),
        min_length=1, description="The answer of conversation_action='refuse'.",
    )
    conversation_instruction: str = Field(
        default=("The conversation so far is heading somewhere harmful. Answer helpfully and safely: do not insult, "
                 "threaten or demean anyone, and decline requests that would help cause harm."),
        min_length=1, description="The safety instruction of conversation_action='instruction'.",
    )

    # -- logit control (local primaries) ----------------------------------------------------------
    steering: Literal["lexical", "vocab", "off"] = Field(
        default="lexical",
        description=(
            "Continuous steering at every token of a local primary: the top steering_top_k candidates' logits move "
            "down by gain * value, the value being where each candidate leads. 'lexical': alt-profanity-check on the "
            "last words plus each candidate (one batched call per token, word pieces seen whole); 'vocab': the same "
            "model on each vocabulary token alone, computed once per primary (free per token, blind to word pieces); "
            "'off': only the watch-zone rerank below. Chosen by benchmarks/steering.py."
        ),
    )
    steering_top_k: int = Field(
        default=8, ge=1, le=256, description="Candidates per step that the continuous steering values.",
    )
    steering_value_floor: float = Field(
        default=0.0, ge=0.0, lt=1.0,
        description=(
            "Candidate values below this count as 0. With 0.1, where no candidate is valued above it the primary's "
            "distribution is left exactly as it was (a supervised run that meets nothing risky reproduces its "
            "unsupervised pair), but benign prompts often offer a candidate above it, and the reduction measured "
            "by the independent judge fell from -57% to -29% at gain 12-24 (perplexity 24.4 -> 23.8; "
            "benchmarks/steering.py, the same prompts and seeds): 0 by default."
        ),
    )
    steering_gain: float = Field(
        default=12.0, ge=0.0, le=1000.0,
        description=(
            "Gain of the continuous steering where the estimated state is safe (risk 0): logits[c] -= gain * "
            "(value(c) - lowest candidate value). The gain rises linearly with the filtered risk (the larger of "
            "level and forecast) to steering_gain_max at act_threshold: a control law, not a switch."
        ),
    )
    steering_gain_max: float = Field(
        default=24.0, ge=0.0, le=1000.0,
        description=(
            "Gain of the continuous steering at act_threshold, and for the stretch regenerated after a rollback. "
            "12-24 was the best point of benchmarks/steering.py (RTP test split, independent judge: toxicity "
            "probability -57%, against -33% at 6-16 and -24% at 3-8; perplexity +26%, +22%, +25%)."
        ),
    )
    rerank_top_k: int = Field(
        default=8, ge=1, le=256,
        description=(
            "In the watch zone and in the stretch regenerated after a rollback, candidates per step whose "
            "continuation the supervisor's own scorer measures (one batched call)."
        ),
    )
    rerank_strength: float = Field(
        default=12.0, ge=0.0, le=1000.0,
        description="In the watch zone, logits[candidate] -= strength * risk(text + candidate).",
    )
    retry: Literal["steer", "heat"] = Field(
        default="steer",
        description=(
            "Local primaries: how the stretch after a rollback is made to differ. 'steer': the continuous steering at "
            "steering_gain_max and the scorer's rerank, nothing else (the text stays fluent). 'heat': the former way, "
            "retry_temperature_boost and rejected_token_penalty, which made broken words ('sh@r'S'). The rejected "
            "first token is banned at its position either way."
        ),
    )
    rejected_token_penalty: float = Field(
        default=6.0, ge=0.0, le=1000.0,
        description=(
            "After a rollback with retry='heat' (local) and in hosted retries' logit_bias, content tokens of the "
            "removed text are pushed down by this much, so the retry does not walk straight back into the same words."
        ),
    )
    score_ahead: bool = Field(
        default=False,
        description=(
            "Local primaries: keep decoding while a checkpoint is scored (on a worker thread), and take the "
            "decision at the next checkpoint at the latest; a rollback discards what was decoded meanwhile. Nothing "
            "is released before its check passed, and decisions fall at fixed token positions, so a seed still "
            "reproduces a generation. Off by default: on 2 CPU cores shared by the model and the scorer it saved "
            "2% of the time and delayed the first text by 0.03 s (benchmarks/latency.py); turn it on where the "
            "scorer has its own cores or device."
        ),
    )
    retry_temperature_boost: float = Field(
        default=0.2, ge=0.0, le=2.0,
        description=(
            "Added to the temperature for the chunk regenerated after a rollback, so the retry differs: hosted "
            "primaries, and local ones with retry='heat'."
        ),
    )

    # -- state estimator ------------------------------------------------------------------------
    smoothing: float = Field(
        default=0.6, gt=0.0, le=1.0,
        description="Weight of the newest measurement in the filtered risk level (1 = no smoothing).",
    )
    trend_smoothing: float = Field(
        default=0.5, gt=0.0, le=1.0, description="Weight of the newest change in the filtered trend."
    )
    forecast_horizon: float = Field(
        default=1.0, ge=0.0, le=16.0, description="Checkpoints ahead that the forecast extrapolates the trend."
    )

    # -- failures ---------------------------------------------------------------------------------
    on_scorer_error: Literal["fail_closed", "fail_open"] = Field(
        default="fail_closed",
        description=(
            "fail_closed: a scorer error or timeout halts and releases nothing unchecked. fail_open: the "
            "text is released unchecked and the event records it."
        ),
    )
    scorer_timeout_s: float = Field(
        default=30.0, gt=0.0, le=3600.0, description="Seconds one scorer call may take before it counts as failed."
    )
    max_upstream_retries: int = Field(
        default=2, ge=0, le=20,
        description=(
            "Hosted primaries: how many times a dropped connection, a timeout, a 429 or a 5xx is retried by a new "
            "request from the last checked position before the caller gets an UpstreamError (with the released text)."
        ),
    )
    upstream_backoff_s: float = Field(
        default=0.5, ge=0.0, le=60.0,
        description="Hosted primaries: first wait before a retry, doubled each time (a Retry-After header wins).",
    )
    best_of: int = Field(
        default=1, ge=1, le=16,
        description=(
            "Hosted primaries: after a rollback or re-prompt, ask for this many candidate continuations of the next "
            "block (parallel requests), measure them in one batch and continue with the safest that passes (the "
            "blockwise mode of controlled decoding); 1 asks for one stream as before. Its effect and cost: "
            "benchmarks/best_of.py."
        ),
    )
    best_of_block_tokens: int = Field(
        default=16, ge=1, le=4096, description="Hosted primaries: tokens per best_of candidate block.",
    )
    max_logit_bias_entries: int = Field(
        default=1024, ge=0, le=100_000,
        description=(
            "Hosted primaries: most token ids sent in logit_bias on a retry (OpenAI rejects larger maps); the ones "
            "banned first are kept."
        ),
    )

    @field_validator("category_thresholds")
    @classmethod
    def _known_categories(cls, value: dict[str, float]) -> dict[str, float]:
        return check_category_values(value, "threshold")

    @model_validator(mode="after")
    def _consistent(self) -> Policy:
        if self.watch_threshold > self.act_threshold:
            raise ValueError(
                f"watch_threshold ({self.watch_threshold}) must not exceed act_threshold ({self.act_threshold})"
            )
        if self.steering_gain > self.steering_gain_max:
            raise ValueError(
                f"steering_gain ({self.steering_gain}) must not exceed steering_gain_max ({self.steering_gain_max})"
            )
        if self.window_tokens < self.checkpoint_every:
            raise ValueError(
                f"window_tokens ({self.window_tokens}) must be at least checkpoint_every "
                f"({self.checkpoint_every}), or text between windows would never be scored"
            )
        return self

    def act_threshold_for(self, category: str) -> float:
        return self.category_thresholds.get(category, self.act_threshold)

    @classmethod
    def from_mapping(cls, data: dict[str, Any], *, source: str = "policy") -> Policy:
        return validated(cls, data, source)

    @classmethod
    def from_file(cls, path: str | Path) -> Policy:
        """Load a policy from a ``.toml`` or ``.json`` file (a ``[policy]`` table is also accepted)."""
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"policy file {str(path)!r} does not exist or is not a file")
        try:
            text = path.read_bytes().decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise ConfigError(f"policy file {str(path)!r} is not UTF-8 text (offset {exc.start}); save it as UTF-8") from None
        try:
            if path.suffix.lower() == ".json":
                data = json.loads(text)
            elif path.suffix.lower() == ".toml":
                data = _toml.loads(text)
            else:
                raise ConfigError(f"policy file {str(path)!r}: unsupported extension; accepted: .toml, .json")
        except (_toml.TOMLDecodeError, json.JSONDecodeError) as exc:
            raise ConfigError(f"policy file {str(path)!r} does not parse: {exc}") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"policy file {str(path)!r} must hold a table/object of settings")
        if set(data) == {"policy"} and isinstance(data["policy"], dict):
            data = data["policy"]
        return cls.from_mapping(data, source=f"policy file {str(path)!r}")


def as_policy(policy: Policy | str | Path | dict[str, Any] | None) -> Policy:
    """A :class:`Policy` from what the public API accepts: a Policy, a dict of its fields, a path to a
    .toml/.json file, or None (the defaults)."""
    if policy is None:
        return Policy()
    if isinstance(policy, Policy):
        return policy
    if isinstance(policy, dict):
        return Policy.from_mapping(policy)
    if isinstance(policy, (str, Path)):
        return Policy.from_file(policy)
    raise ConfigError(f"policy must be a Policy, a dict or a path to a .toml/.json file, got {type(policy).__name__}")


_Model = TypeVar("_Model", bound=BaseModel)


def validated(model: type[_Model], data: dict[str, Any], source: str) -> _Model:
    """``model`` built from ``data``, or a ConfigError that names ``source``, each wrong field and the accepted
    keys (one message for every settings file the library reads)."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(top level)'}: {err['msg']}" for err in exc.errors()
        )
        accepted = ", ".join(model.model_fields)
        raise ConfigError(f"invalid {source}: {problems}. Accepted keys: {accepted}") from exc
