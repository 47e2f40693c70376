"""HTTP pieces of the gateway: OpenAI-style errors, a server-sent-event response that stops its work when the client
goes away or stops reading, and a guard that does the same for work before the response starts."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import anyio
from starlette.responses import JSONResponse
from starlette.types import Receive, Scope, Send

_T = TypeVar("_T")
log = logging.getLogger("supervisor.serve")


class HTTPError(Exception):
    """An error answered in OpenAI's error format (``{"error": {"message", "type", "param", "code"}}``)."""

    def __init__(self, status: int, message: str, *, kind: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.status, self.kind, self.param, self.code, self.retry_after_s = status, kind, param, code, retry_after_s

    def body(self) -> dict[str, Any]:
        return {"error": {"message": str(self), "type": self.kind, "param": self.param, "code": self.code}}

    def response(self, headers: dict[str, str] | None = None) -> JSONResponse:
        headers = dict(headers or {})
        if self.status == 401:
            headers["WWW-Authenticate"] = "Bearer"
        if self.retry_after_s is not None:
            headers["Retry-After"] = str(max(1, round(self.retry_after_s)))
        return JSONResponse(self.body(), status_code=self.status, headers=headers)


class ClientGone(Exception):
    """The client closed the connection before its answer was ready."""


async def until_disconnected(receive: Receive, work: Callable[[], Awaitable[_T]]) -> _T:
    """``await work()``, cancelled as soon as the client disconnects (then :class:`ClientGone`). Call it only after
    the request body was read: every later message on ``receive`` is the disconnect."""
    job = asyncio.ensure_future(work())
    watcher = asyncio.ensure_future(_disconnected(receive))
    try:
        await asyncio.wait({job, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not job.done():  # the client went away, or this request was cancelled: the work stops with it
            job.cancel()
            with anyio.CancelScope(shield=True):
                await asyncio.gather(job, return_exceptions=True)
    if job.cancelled():
        raise ClientGone
    return job.result()


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


def sse(data: dict[str, Any] | str) -> str:
    """One server-sent event (``data: ...``) as the OpenAI SDKs read it."""
    return f"data: {data if isinstance(data, str) else json.dumps(data)}\n\n"


class EventStream:
    """An ASGI response streaming server-sent events from ``frames``.

    Its work stops (``frames`` is closed, which stops the generation) when the client disconnects, and when the
    client reads nothing for ``send_timeout_s`` (a slow or stuck reader would otherwise hold a primary): then the
    connection is closed without completing the response. ``on_close`` always runs once, at the end, whatever
    ended the stream, even when the response never started."""

    def __init__(self, frames: AsyncIterator[str], *, send_timeout_s: float, on_close: Callable[[], Awaitable[None]],
                 headers: dict[str, str] | None = None) -> None:
        self.frames, self.send_timeout_s, self.on_close = frames, send_timeout_s, on_close
        self.headers = {"content-type": "text/event-stream; charset=utf-8", "cache-control": "no-cache",
                        "x-accel-buffering": "no", **(headers or {})}
        self.status_code = 200
        self.outcome = "open"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        host = asyncio.current_task()
        assert host is not None

        async def watch() -> None:
            await _disconnected(receive)
            self.outcome = "disconnected"
            host.cancel()

        watcher = asyncio.ensure_future(watch())
        try:
            await self._stream(send)
        except asyncio.CancelledError:
            if self.outcome != "disconnected":
                raise
            if hasattr(host, "uncancel"):  # Python 3.11+: this cancellation was ours, and it is handled
                host.uncancel()
        except TimeoutError:
            self.outcome = "slow reader"
            log.warning("a client read nothing for %s s: its stream was cut off and its work stopped",
                        self.send_timeout_s)
        finally:
            watcher.cancel()
            with anyio.CancelScope(shield=True):
                try:
                    close = getattr(self.frames, "aclose", None)
                    if close is not None:
                        await close()
                finally:
                    await self.on_close()

    async def _send(self, send: Send, message: dict[str, Any]) -> None:
        with anyio.fail_after(self.send_timeout_s):
            await send(message)

    async def _stream(self, send: Send) -> None:
        raw_headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in self.headers.items()]
        await self._send(send, {"type": "http.response.start", "status": self.status_code, "headers": raw_headers})
        async for frame in self.frames:
            await self._send(send, {"type": "http.response.body", "body": frame.encode("utf-8"), "more_body": True})
        await self._send(send, {"type": "http.response.body", "body": b"", "more_body": False})
        self.outcome = "complete"
