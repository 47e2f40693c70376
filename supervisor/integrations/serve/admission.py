"""Who may start work now: a pool of local primaries with a bounded, timed queue, and per-tenant concurrency.
Refusals are 429s with ``Retry-After``, known before the response starts."""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from supervisor.integrations.serve.http import HTTPError

_P = TypeVar("_P")
log = logging.getLogger("supervisor.serve")


class Pool(Generic[_P]):
    """Local primaries (each holds one decoding state). A request waits at most ``timeout_s`` for a free one, and
    at most ``queue_size`` requests wait at once; past either bound it gets a 429."""

    def __init__(self, primaries: list[_P], *, queue_size: int, timeout_s: float) -> None:
        self._free: asyncio.Queue[_P] = asyncio.Queue()
        for primary in primaries:
            self._free.put_nowait(primary)
        self.size, self.queue_size, self.timeout_s = len(primaries), queue_size, timeout_s
        self.waiting = 0

    @property
    def busy(self) -> int:
        return self.size - self._free.qsize()

    async def acquire(self) -> _P:
        if not self._free.empty():
            return self._free.get_nowait()
        if self.waiting >= self.queue_size:
            raise HTTPError(429, f"all {self.size} local primaries are busy and {self.waiting} requests are waiting; "
                                 "retry later", kind="rate_limit_error", code="queue_full",
                            retry_after_s=self.timeout_s / 2)
        self.waiting += 1
        try:
            return await asyncio.wait_for(self._free.get(), timeout=self.timeout_s)
        except asyncio.TimeoutError:
            raise HTTPError(429, f"no local primary became free within {self.timeout_s:g} s; retry later",
                            kind="rate_limit_error", code="queue_timeout", retry_after_s=self.timeout_s / 2) from None
        finally:
            self.waiting -= 1

    def release(self, primary: _P) -> None:
        self._free.put_nowait(primary)


class TenantLimits:
    """At most ``limit`` requests of one tenant at once (None: no limit); the next one gets a 429."""

    def __init__(self) -> None:
        self.active: dict[str, int] = {}

    def enter(self, tenant: str, limit: int | None) -> None:
        count = self.active.get(tenant, 0)
        if limit is not None and count >= limit:
            raise HTTPError(429, f"this API key has {count} requests in progress, its limit; retry when one ends",
                            kind="rate_limit_error", code="concurrency_limit", retry_after_s=1)
        self.active[tenant] = count + 1

    def leave(self, tenant: str) -> None:
        count = self.active.get(tenant, 0) - 1
        if count > 0:
            self.active[tenant] = count
        else:
            self.active.pop(tenant, None)


class Releases:
    """What one request holds (a primary, a tenant slot, a running generation), released once, in reverse order,
    whoever ends the request; a failing release does not keep the others from running."""

    def __init__(self) -> None:
        self._undo: list[Callable[[], Awaitable[None] | None]] = []

    def hold(self, undo: Callable[[], Awaitable[None] | None]) -> None:
        self._undo.append(undo)

    async def release(self) -> None:
        while self._undo:
            undo = self._undo.pop()
            try:
                outcome = undo()
                if inspect.isawaitable(outcome):
                    await outcome
            except Exception:  # noqa: BLE001 - logged; the rest must still be released
                log.exception("releasing a request's resources failed")
