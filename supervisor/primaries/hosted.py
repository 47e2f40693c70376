"""Hosted primaries behind the OpenAI SDK: one base class owns the stream's life (start, read, close), the
mapping of SDK and transport errors to retryable faults, and the instruction continuation."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

from supervisor.errors import ConfigError, MissingDependencyError, UpstreamFault
from supervisor.primaries.chunk import Attempt, ChunkPrimary, UpstreamDelta
from supervisor.primaries.continuation import ContinuationFilter

TRUNCATED = "the stream ended without a finish reason (connection dropped or server stopped mid-answer)"


def require_openai() -> Any:
    try:
        import openai
    except ImportError as exc:
        raise MissingDependencyError("the OpenAI-compatible primary", "openai", "openai") from exc
    return openai


def without_sdk_retries(client: Any) -> Any:
    """The client for upstream requests: the SDK's own retries off, so that the policy's
    ``max_upstream_retries`` is the one retry budget (the SDK's 2 times ours would try a 5xx 9 times)."""
    return client.with_options(max_retries=0) if client is not None and hasattr(client, "with_options") else client


def fault_from(exc: BaseException) -> UpstreamFault | None:
    """The retryable fault an SDK or transport exception stands for, or None (not retryable)."""
    openai: Any = None
    try:
        import openai
    except ImportError:  # another SDK (a LangChain model): only transport errors are classified
        pass
    if openai is not None and isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        if status == 429 or status >= 500 or status == 408:
            retry_after = exc.response.headers.get("retry-after")
            try:
                wait = float(retry_after) if retry_after is not None else None
            except ValueError:
                wait = None
            return UpstreamFault(f"HTTP {status}: {exc.message}", retry_after_s=wait)
        return None
    if openai is not None and isinstance(exc, (openai.APIConnectionError, openai.APIError)):
        return UpstreamFault(str(exc) or type(exc).__name__)
    # A connection cut mid-stream surfaces as the HTTP library's own error (httpx or httpx2).
    if type(exc).__module__.split(".")[0] in ("httpx", "httpx2", "httpcore", "httpcore2") and any(
        base.__name__ in ("TransportError", "StreamError", "TimeoutException") for base in type(exc).__mro__
    ):
        return UpstreamFault(f"{type(exc).__name__}: {exc}")
    return None


@contextmanager
def upstream_faults() -> Iterator[None]:
    """Inside: an SDK or transport error that is worth retrying leaves as the :class:`UpstreamFault` it stands
    for (the engine retries from the checked text); any other error leaves unchanged."""
    try:
        yield
    except UpstreamFault:
        raise
    except Exception as exc:
        fault = fault_from(exc)
        if fault is None:
            raise
        raise fault from exc


class HostedPrimary(ChunkPrimary):
    """A :class:`ChunkPrimary` over a streaming endpoint of the OpenAI SDK (sync and/or async client).

    Subclasses say how to start a request for an attempt (:meth:`start`), what each streamed event means
    (:meth:`delta`) and whether the stream ended properly (:meth:`completed`); this class runs the stream:
    faults become :class:`UpstreamFault`, a stream cut short is one too, the instruction continuation is
    applied, and leaving the context closes the upstream request.
    """

    def __init__(self, client: Any = None, async_client: Any = None) -> None:
        if client is None and async_client is None:
            raise ConfigError(f"{type(self).__name__} needs client= (openai.OpenAI) or async_client= (AsyncOpenAI)")
        self.client = client
        self.async_client = async_client
        self._upstream, self._async_upstream = without_sdk_retries(client), without_sdk_retries(async_client)

    @property
    def base_url(self) -> str:
        client = self.client if self.client is not None else self.async_client
        return str(getattr(client, "base_url", "") or "")

    @property
    def api_key(self) -> str | None:
        client = self.client if self.client is not None else self.async_client
        return getattr(client, "api_key", None)

    # -- what subclasses say ----------------------------------------------------------------------
    @abstractmethod
    def prepare(self, request: Any) -> Any:
        """The request in this primary's own type, with what the last attempt learned reset."""

    @abstractmethod
    def start(self, client: Any, request: Any, attempt: Attempt) -> Any:
        """Start the upstream call on ``client`` (an awaitable with the async client); returns the SDK stream."""

    @abstractmethod
    def delta(self, event: Any, request: Any, attempt: Attempt) -> UpstreamDelta:
        """What one streamed event means."""

    @abstractmethod
    def completed(self, request: Any, finished: bool) -> bool:
        """Whether the stream ended properly (``finished``: some delta carried a finish reason)."""

    def continues_by_instruction(self, attempt: Attempt) -> bool:
        """Whether ``attempt`` asks the model to continue by instruction (its deltas go through the filter)."""
        return True

    # -- the stream -------------------------------------------------------------------------------
    def _reader(self, request: Any, attempt: Attempt) -> _Reader:
        return _Reader(self, request, attempt, ContinuationFilter(
            attempt.prefix, active=self.continues_by_instruction(attempt)))

    @contextmanager
    def open(self, request: Any, attempt: Attempt) -> Iterator[Iterator[UpstreamDelta]]:
        if self._upstream is None:
            raise ConfigError(f"{self.name!r} has only an async client; use the async API (astream/agenerate)")
        request = self.prepare(request)
        with upstream_faults():
            stream = self.start(self._upstream, request, attempt)
        reader = self._reader(request, attempt)

        def deltas() -> Iterator[UpstreamDelta]:
            with upstream_faults():
                for event in stream:
                    yield reader.read(event)
            yield from reader.end()

        try:
            yield deltas()
        finally:
            stream.close()

    @asynccontextmanager
    async def aopen(self, request: Any, attempt: Attempt) -> AsyncIterator[AsyncIterator[UpstreamDelta]]:
        if self._async_upstream is None:
            raise ConfigError(f"{self.name!r} has only a sync client; pass async_client= (openai.AsyncOpenAI)")
        request = self.prepare(request)
        with upstream_faults():
            stream = await self.start(self._async_upstream, request, attempt)
        reader = self._reader(request, attempt)

        async def deltas() -> AsyncIterator[UpstreamDelta]:
            with upstream_faults():
                async for event in stream:
                    yield reader.read(event)
            for rest in reader.end():
                yield rest

        try:
            yield deltas()
        finally:
            await stream.close()


class _Reader:
    """One attempt's stream as the engine sees it: deltas through the continuation filter; at the end, the
    filter's remainder, or a fault when the stream was cut short."""

    def __init__(self, primary: HostedPrimary, request: Any, attempt: Attempt, continuation: ContinuationFilter,
                 ) -> None:
        self.primary, self.request, self.attempt, self.continuation = primary, request, attempt, continuation
        self.finished = False

    def read(self, event: Any) -> UpstreamDelta:
        delta = self.primary.delta(event, self.request, self.attempt)
        self.finished = self.finished or delta.finish_reason is not None
        return self.continuation.apply(delta)

    def end(self) -> Iterator[UpstreamDelta]:
        if not self.primary.completed(self.request, self.finished):
            raise UpstreamFault(TRUNCATED)
        rest = self.continuation.flush()
        if rest:
            yield rest
