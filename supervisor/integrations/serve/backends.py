"""One route made ready: its scorer and policy, the model names it answers to, and either a supervised upstream
client or a pool of local primaries."""

from __future__ import annotations

import time
from typing import Any

import anyio

from supervisor.errors import ConfigError
from supervisor.integrations.openai import supervise
from supervisor.integrations.serve.admission import Pool
from supervisor.integrations.serve.config import GatewayConfig, Route
from supervisor.integrations.serve.http import HTTPError
from supervisor.policy import as_policy
from supervisor.primaries import load_primary
from supervisor.primaries.base import LogitPrimary
from supervisor.primaries.openai_compatible import ChatRequest
from supervisor.scorers import Scorer, get_scorer
from supervisor.scorers.combined import BatchingScorer


class Backend:
    """A route's parts. Local primaries each hold one decoding state: requests wait in the pool for a free one."""

    def __init__(self, route: Route, config: GatewayConfig, scorers: dict[str | None, Scorer]) -> None:
        if route.scorer not in scorers:  # (None: the gateway's scorer, given to create_app or the default)
            # concurrent streams' checks go to the scorer as one batch (one forward pass for many streams)
            scorers[route.scorer] = BatchingScorer(get_scorer(route.scorer))
        self.route = route
        self.scorer = scorers[route.scorer]
        self.policy = as_policy(route.policy)
        self.pass_through = frozenset(route.pass_through)
        self.models_cache_s = config.models_cache_s
        self.client: Any = None
        self.pool: Pool[LogitPrimary] | None = None
        self._listed: tuple[float, list[str]] | None = None
        if route.upstream is not None:
            import openai

            upstream = openai.AsyncOpenAI(base_url=route.upstream, api_key=GatewayConfig.upstream_key(route))
            self.client = supervise(upstream, scorer=self.scorer, policy=self.policy, continuation=route.continuation)
            self.name = "upstream"
        else:
            assert route.primary is not None
            primaries = []
            for _ in range(config.workers):
                primary = load_primary(route.primary)
                if not isinstance(primary, LogitPrimary):
                    raise ConfigError(f"primary {route.primary!r} is not a local model; give it as upstream instead")
                primaries.append(primary)
            self.pool = Pool(primaries, queue_size=config.queue_size, timeout_s=config.queue_timeout_s)
            self.name = route.primary.split(":")[0]

    @property
    def local(self) -> bool:
        return self.pool is not None

    async def models(self) -> list[str] | None:
        """The model names this route answers to; None when the upstream cannot say (it then decides itself)."""
        if self.route.models:
            return list(self.route.models)
        if self.pool is not None:
            primary = self.route.primary
            return [self.name] + ([primary] if primary is not None and primary != self.name else [])
        now = time.monotonic()
        if self._listed is None or now - self._listed[0] > self.models_cache_s:
            try:
                listed = await self.client.models.list()
            except Exception:  # noqa: BLE001 - an upstream that cannot list its models still serves them
                return None
            self._listed = (now, [model.id for model in listed.data])
        return list(self._listed[1])

    async def check_model(self, name: str) -> None:
        known = await self.models()
        if known is not None and name not in known:
            raise HTTPError(404, f"The model '{name}' does not exist or you do not have access to it. This gateway "
                                 f"serves: {', '.join(known) or 'no model'}", param="model", code="model_not_found")

    async def ready_tokenizer(self, body: dict[str, Any]) -> None:
        """Find the upstream's tokenizer for this model (an HTTP probe, cached) off the event loop; once found, no
        thread hop."""
        request = ChatRequest(kwargs=body)
        if not self.client.primary.knows_tokenizer(request):
            await anyio.to_thread.run_sync(self.client.primary.tokenizer, request)
