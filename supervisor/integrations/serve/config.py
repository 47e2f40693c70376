"""The gateway's configuration: where answers come from, who may ask, with which policy, and the limits."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from supervisor import _toml
from supervisor.errors import ConfigError
from supervisor.messages import MAX_TOKENS_LIMIT
from supervisor.policy import validated

Continuation = Literal["instruction", "prefill", "vllm", "completions"]


class Route(BaseModel):
    """Where a tenant's requests go and how they are supervised."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    upstream: str | None = Field(
        default=None, description="Base URL of an OpenAI-compatible upstream (chunk-level control), e.g. http://vllm:8000/v1."
    )
    upstream_api_key_env: str | None = Field(
        default=None,
        description="Name of the environment variable that holds the upstream's API key (the key itself never "
                    "appears in the config, in responses or in logs).",
    )
    continuation: Continuation = Field(
        default="instruction", description="How the upstream continues a checked prefix (vllm: exact, on vLLM)."
    )
    primary: str | None = Field(
        default=None, description="A local primary with full logit control instead of an upstream, e.g. smollm2."
    )
    scorer: str | None = Field(default=None, description="Scorer name (default: the library's default).")
    policy: str | dict[str, Any] | None = Field(default=None, description="Policy file path or its fields.")
    models: list[str] = Field(
        default_factory=list,
        description="Model names clients may ask for on this route (others get 404 model_not_found). Empty: a local "
                    "primary answers to its own name (e.g. smollm2); an upstream to the models it lists itself.",
    )
    pass_through: list[str] = Field(
        default_factory=list,
        description="Request parameters outside OpenAI's API passed to the upstream as sent (e.g. vLLM's top_k, "
                    "repetition_penalty). Others get a 400, as OpenAI answers an unknown parameter.",
    )
    reveal_removed_text: bool = Field(
        default=False,
        description="Send the text a rollback removed to clients, in the events and the supervision report. Off: "
                    "it is what the supervisor judged unsafe, and an app that shows the raw stream would show it; "
                    "clients get its length, operators the text in the audit log. Demos may turn it on.",
    )
    max_concurrent: int | None = Field(
        default=None, ge=1,
        description="Most requests of this route's key in progress at once (429 above); None: no limit.",
    )


class Tenant(Route):
    """A client API key and what it gets; unset fields fall back to the gateway's defaults."""

    api_key: str = Field(min_length=8, description="The key a client sends as 'Authorization: Bearer KEY'.")
    name: str = Field(default="", description="Shown in metrics and logs instead of the key.")


class GatewayConfig(Route):
    """``supervisor serve`` settings (also loadable from a TOML or JSON file with :meth:`from_file`)."""

    tenants: list[Tenant] = Field(
        default_factory=list,
        description="Client API keys and their routes; when any is set, requests without a known key get 401.",
    )
    workers: int = Field(default=1, ge=1, le=64, description="Local primaries loaded (concurrent local generations).")
    max_body_bytes: int = Field(default=1_000_000, ge=1_024, description="Largest request body accepted (413 above).")
    max_messages: int = Field(default=256, ge=1, description="Most messages in one request (400 above).")
    max_tokens: int = Field(default=4_096, ge=1, le=MAX_TOKENS_LIMIT, description="Largest max_tokens accepted.")
    default_max_tokens: int = Field(
        default=512, ge=1, le=MAX_TOKENS_LIMIT, description="max_tokens for a request that sets none."
    )
    queue_size: int = Field(
        default=16, ge=0,
        description="Requests that may wait for a free local primary; more get a 429 at once (a queue without a "
                    "bound turns overload into timeouts for everyone).",
    )
    queue_timeout_s: float = Field(
        default=30.0, gt=0,
        description="Seconds a request waits for a free local primary before a 429 with Retry-After.",
    )
    send_timeout_s: float = Field(
        default=30.0, gt=0,
        description="A streaming client that reads nothing for this long is cut off and its generation stopped "
                    "(a stuck reader would hold a primary).",
    )
    max_json_depth: int = Field(default=32, ge=4, le=512, description="Deepest nesting of a request body (400 above).")
    max_moderation_inputs: int = Field(default=32, ge=1, description="Most inputs in one moderation request.")
    max_moderation_chars: int = Field(
        default=100_000, ge=1, description="Most characters, all inputs together, in one moderation request."
    )
    models_cache_s: float = Field(
        default=60.0, ge=0, description="Seconds an upstream's own model list is trusted before it is asked again.",
    )
    audit_log: str | None = Field(
        default=None,
        description="A file that receives the audit record of every request as JSON lines (the supervisor.audit "
                    "logger logs them too); it holds removed text: keep it where operators keep logs.",
    )
    allow_unsupervised_compare: bool = Field(
        default=False,
        description="Let the chat page ask for the unsupervised answer beside the supervised one (demo use only: "
                    "it returns unchecked text).",
    )

    @model_validator(mode="after")
    def _one_source(self) -> GatewayConfig:
        if (self.upstream is None) == (self.primary is None):
            raise ValueError("give exactly one of upstream (an OpenAI-compatible URL) or primary (a local model)")
        keys = [t.api_key for t in self.tenants]
        if len(keys) != len(set(keys)):
            raise ValueError("two tenants share an api_key")
        return self

    def route_for(self, tenant: Tenant | None) -> Route:
        """The tenant's route with the gateway's defaults filled in."""
        if tenant is None:
            return self
        own = tenant.model_dump(exclude={"api_key", "name"}, exclude_unset=True)
        if own.get("upstream") or own.get("primary"):  # a tenant's own source replaces the default one
            base = {"upstream": None, "primary": None}
        else:
            base = {}
        fields = {name: getattr(self, name) for name in Route.model_fields}
        return Route(**{**fields, **base, **own})

    @staticmethod
    def upstream_key(route: Route) -> str:
        if route.upstream_api_key_env is None:
            return "not-needed"
        value = os.environ.get(route.upstream_api_key_env)
        if not value:
            raise ConfigError(f"the environment variable {route.upstream_api_key_env!r} (upstream API key) is not set")
        return value

    @classmethod
    def from_file(cls, path: str | Path, **overrides: Any) -> GatewayConfig:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"gateway config {str(path)!r} does not exist or is not a file")
        try:
            text = path.read_bytes().decode("utf-8-sig")
            data = json.loads(text) if path.suffix.lower() == ".json" else _toml.loads(text)
        except (UnicodeDecodeError, json.JSONDecodeError, _toml.TOMLDecodeError) as exc:
            raise ConfigError(f"gateway config {str(path)!r} does not parse: {exc}") from exc
        return cls.build({**data, **{k: v for k, v in overrides.items() if v is not None}}, source=str(path))

    @classmethod
    def build(cls, data: dict[str, Any], *, source: str = "gateway config") -> GatewayConfig:
        return validated(cls, data, source)
