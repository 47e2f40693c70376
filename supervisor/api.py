"""The public entry point: ``Supervisor`` runs supervised generations on a primary."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Generator, Iterator, Sequence
from pathlib import Path
from typing import Any, TypedDict

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from typing_extensions import Unpack

from supervisor.chunk_drivers import arun_chunked, run_chunked
from supervisor.chunk_engine import ChunkEngine, chunk_engine
from supervisor.errors import InputError
from supervisor.events import EventObserver, GenerationResult
from supervisor.logit_engine import LogitEngine, Request
from supervisor.messages import validate_max_tokens, validate_messages, validate_prompt
from supervisor.policy import Policy, as_policy
from supervisor.primaries.base import LogitPrimary
from supervisor.primaries.chunk import ChunkPrimary
from supervisor.sampling import SamplingParams
from supervisor.scorers import Scorer, get_scorer


class _Run:
    """One generation, on whichever primary level: its released-text generator, result and cancel."""

    def __init__(self, primary: LogitPrimary | ChunkPrimary, session: LogitEngine | ChunkEngine, request: Any,
                 scorer: Scorer) -> None:
        self.primary = primary
        self.session = session
        self.request = request
        self.scorer = scorer

    def texts(self) -> Generator[str, None, None]:
        if isinstance(self.session, LogitEngine):
            return self.session.run()
        assert isinstance(self.primary, ChunkPrimary)
        return run_chunked(self.session, self.primary, self.request, self.scorer)

    def atexts(self) -> AsyncGenerator[str, None]:
        assert isinstance(self.session, ChunkEngine) and isinstance(self.primary, ChunkPrimary)
        return arun_chunked(self.session, self.primary, self.request, self.scorer)

    @property
    def local(self) -> bool:
        """A local primary: it decodes in its own loop (a worker thread for the async API)."""
        return isinstance(self.session, LogitEngine)

    def cancel(self) -> None:
        self.session.cancel()

    def stop(self) -> None:
        """Closing the stream: a local primary stops at its next token (a hosted one closes with its generator)."""
        if self.local:
            self.cancel()

    @property
    def result(self) -> GenerationResult | None:
        return self.session.result


class SupervisedStream:
    """Iterate for released text deltas; ``result`` is set once the stream is exhausted."""

    def __init__(self, run: _Run) -> None:
        self._run = run
        self._iterator: Generator[str, None, None] = run.texts()

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        return next(self._iterator)

    def close(self) -> None:
        """Stop generating (and close the upstream request); what was released stays released."""
        self._run.stop()
        self._iterator.close()

    def __enter__(self) -> SupervisedStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def result(self) -> GenerationResult | None:
        return self._run.result


class AsyncSupervisedStream:
    """Async twin of :class:`SupervisedStream`. Local primaries decode in a worker thread; hosted ones
    stream on the event loop."""

    def __init__(self, run: _Run) -> None:
        self._run = run
        self._queue: asyncio.Queue[tuple[str, Any]] | None = None
        self._thread: threading.Thread | None = None
        self._native: AsyncGenerator[str, None] | None = (
            None if run.local else run.atexts()
        )

    def _start(self) -> None:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self._queue = queue
        texts = self._run.texts()

        def produce() -> None:
            try:
                for delta in texts:
                    loop.call_soon_threadsafe(queue.put_nowait, ("delta", delta))
                loop.call_soon_threadsafe(queue.put_nowait, ("done", None))
            except BaseException as exc:  # noqa: BLE001 - handed to the consumer, raised there
                loop.call_soon_threadsafe(queue.put_nowait, ("error", exc))

        self._thread = threading.Thread(target=produce, name="supervisor-session", daemon=True)
        self._thread.start()

    def __aiter__(self) -> AsyncIterator[str]:
        return self

    async def __anext__(self) -> str:
        if self._native is not None:
            return await self._native.__anext__()
        if self._queue is None:
            self._start()
        assert self._queue is not None
        try:
            kind, value = await self._queue.get()
        except asyncio.CancelledError:
            self._run.cancel()  # the decode thread stops at its next token and frees the primary
            raise
        if kind == "delta":
            return str(value)
        if kind == "error":
            raise value
        raise StopAsyncIteration

    async def aclose(self) -> None:
        if self._native is not None:
            await self._native.aclose()
            return
        self._run.cancel()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)

    async def __aenter__(self) -> AsyncSupervisedStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    @property
    def result(self) -> GenerationResult | None:
        return self._run.result


class GenerationSettings(TypedDict, total=False):
    """The fields of :class:`GenerationOptions`, as keyword arguments of ``generate``/``stream``/``agenerate``/
    ``astream``."""

    max_tokens: int
    temperature: float
    top_p: float
    top_k: int
    seed: int | None
    supervise: bool
    on_event: EventObserver | None


class GenerationOptions(BaseModel):
    """How one generation decodes, given once for ``generate``, ``stream``, ``agenerate`` and ``astream``."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, arbitrary_types_allowed=True)

    max_tokens: int = Field(default=128, description="Most tokens of the released answer.")
    temperature: float = Field(default=0.7, description="Sampling temperature (0: greedy).")
    top_p: float = Field(default=0.95, description="Nucleus sampling mass.")
    top_k: int = Field(default=0, description="Top-k sampling (0: off).")
    seed: int | None = Field(default=None, description="Sampling seed: the same seed gives the same text.")
    supervise: bool = Field(default=True, description="False runs the same decoding unchecked (the baseline).")
    on_event: EventObserver | None = Field(default=None, description="Called with each intervention as it happens.")

    def merged(self, settings: GenerationSettings) -> GenerationOptions:
        """These options with ``settings`` (keyword arguments) over them; an unknown name is an InputError."""
        if not settings:
            return self
        try:
            return GenerationOptions.model_validate({**dict(self), **settings})
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
            raise InputError(f"generation options: {problems}; accepted: {', '.join(GenerationOptions.model_fields)}"
                             ) from None


class Supervisor:
    """A supervisor model plus a policy; supervises generations of any logit-controlled primary.

    ``scorer`` is a name (see :data:`supervisor.scorers.SCORERS`) or a :class:`Scorer`;
    ``policy`` a :class:`Policy`, a dict of its fields, or a path to a TOML/JSON file.
    """

    def __init__(
        self,
        scorer: str | Scorer | None = None,
        policy: Policy | str | Path | dict[str, Any] | None = None,
        *,
        observers: Sequence[EventObserver] = (),
    ) -> None:
        self.policy: Policy = as_policy(policy)  # first: a bad policy is reported before any model loads
        self.scorer: Scorer = get_scorer(scorer)
        self.observers = list(observers)

    def _session(self, primary: LogitPrimary | ChunkPrimary, messages: Any, prompt: str | None,
                 options: GenerationOptions | None, settings: GenerationSettings) -> _Run:
        if not isinstance(primary, (LogitPrimary, ChunkPrimary)):
            raise InputError(
                f"primary must come from supervisor.load_primary(...) (a local or an OpenAI-compatible primary), "
                f"got {type(primary).__name__}"
            )
        if (messages is None) == (prompt is None):
            raise InputError("give exactly one of messages (chat mode) or prompt= (completion mode)")
        chosen = (options or GenerationOptions()).merged(settings)
        request = Request(
            messages=validate_messages(messages) if messages is not None else None,
            prompt=validate_prompt(prompt) if prompt is not None else None,
            max_tokens=validate_max_tokens(chosen.max_tokens),
            sampling=SamplingParams(temperature=chosen.temperature, top_p=chosen.top_p, top_k=chosen.top_k,
                                    seed=chosen.seed),
        )
        observers = [*self.observers, *([chosen.on_event] if chosen.on_event else [])]
        if isinstance(primary, LogitPrimary):
            session = LogitEngine(primary, self.scorer, self.policy, request, supervise=chosen.supervise,
                              observers=observers)
            return _Run(primary, session, request, self.scorer)
        if request.messages is None:
            raise InputError(
                f"primary {primary.name!r} is a chat API: pass messages, not prompt= (completion mode needs a "
                "local primary)"
            )
        chat = {"messages": request.messages, "max_tokens": request.max_tokens, "temperature": chosen.temperature,
                "top_p": chosen.top_p, **({"seed": chosen.seed} if chosen.seed is not None else {})}
        chunked = chunk_engine(primary, chat, self.policy, max_tokens=request.max_tokens, supervise=chosen.supervise,
                               observers=observers, conversation=request.messages, measured_by=self.scorer)
        return _Run(primary, chunked, chat, self.scorer)

    # Each takes ``options`` (a GenerationOptions) and/or its fields as keywords (max_tokens=128, temperature=0.7,
    # top_p=0.95, top_k=0, seed=None, supervise=True, on_event=None); keywords override the options' fields.
    def stream(self, primary: LogitPrimary | ChunkPrimary, messages: Any = None, *, prompt: str | None = None,
               options: GenerationOptions | None = None, **settings: Unpack[GenerationSettings]) -> SupervisedStream:
        """Yield only released (checked) text. ``supervise=False`` runs the same decoding unchecked."""
        return SupervisedStream(self._session(primary, messages, prompt, options, settings))

    def generate(self, primary: LogitPrimary | ChunkPrimary, messages: Any = None, *, prompt: str | None = None,
                 options: GenerationOptions | None = None, **settings: Unpack[GenerationSettings]) -> GenerationResult:
        """Run a whole supervised generation; the result has ``.text``, ``.events``, ``.usage``, ``.timings``."""
        stream = self.stream(primary, messages, prompt=prompt, options=options, **settings)
        for _ in stream:
            pass
        assert stream.result is not None
        return stream.result

    def astream(self, primary: LogitPrimary | ChunkPrimary, messages: Any = None, *, prompt: str | None = None,
                options: GenerationOptions | None = None, **settings: Unpack[GenerationSettings],
                ) -> AsyncSupervisedStream:
        """Async twin of :meth:`stream` (``async for delta in sup.astream(...)``)."""
        return AsyncSupervisedStream(self._session(primary, messages, prompt, options, settings))

    async def agenerate(self, primary: LogitPrimary | ChunkPrimary, messages: Any = None, *,
                        prompt: str | None = None, options: GenerationOptions | None = None,
                        **settings: Unpack[GenerationSettings]) -> GenerationResult:
        """Async twin of :meth:`generate`."""
        stream = self.astream(primary, messages, prompt=prompt, options=options, **settings)
        try:
            async for _ in stream:
                pass
        finally:
            # Also on cancellation (task.cancel(), asyncio.wait_for): stop decoding before returning, so the
            # primary is free for the next call.
            await stream.aclose()
        assert stream.result is not None
        return stream.result
