"""Servers for the OpenAI integration tests.

- :func:`llama_server_url` starts (once per test run) the real ``python -m llama_cpp.server`` with the
  embedded SmolLM2, unless ``SUPERVISOR_TEST_OPENAI_URL`` names one already running (``.ci/run``
  starts one that way).
- :class:`ScriptedOpenAIServer` speaks the OpenAI wire protocol from a script, for the faults a real
  server cannot be made to show on demand: a connection cut mid-stream, a 429, a 5xx, tool calls,
  and the Responses API (which llama.cpp's server does not have).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MODEL_ALIAS = "smollm2"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(url: str, timeout_s: float = 60.0, process: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the server exited with code {process.returncode} before answering {url}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.25)
    raise RuntimeError(f"no answer from {url} within {timeout_s} s")


def start_llama_server(model_path: str, port: int) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "llama_cpp.server", "--model", model_path, "--model_alias", MODEL_ALIAS,
               "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048", "--interrupt_requests", "false"]
    # Its log goes to a file: an unread pipe fills up with llama.cpp's load messages and blocks the server.
    log = tempfile.NamedTemporaryFile(prefix="llama-server-", suffix=".log", delete=False)  # noqa: SIM115
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    log.close()
    try:
        wait_for(f"http://127.0.0.1:{port}/v1/models", process=process)
    except RuntimeError as exc:
        process.kill()
        raise RuntimeError(f"{exc}; server log: {log.name}") from exc
    return process


@contextmanager
def llama_server_unless(url: str | None) -> Iterator[str]:
    """``url`` as it is, or the /v1 URL of a llama.cpp server started for the block, serving the embedded SmolLM2."""
    if url is not None:
        yield url
        return
    from supervisor.primaries.embedded import smollm2_path

    port = free_port()
    server = start_llama_server(str(smollm2_path()), port)
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.terminate()
        server.wait(timeout=30)


@dataclass
class Reply:
    """One scripted answer. ``pieces`` stream as deltas; ``cut_after`` drops the connection after that
    many; ``status`` answers with an HTTP error instead."""

    pieces: list[str] = field(default_factory=list)
    cut_after: int | None = None
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    tool_call: tuple[str, str] | None = None
    #: The tool call in several deltas of (name, arguments piece), e.g. the name repeated in each (llama.cpp)
    tool_call_deltas: list[tuple[str | None, str]] | None = None
    #: The id of ``tool_call`` / ``tool_call_deltas`` (an agent loop needs a new one per step)
    tool_call_id: str = "call_1"
    #: Parallel tool calls, (id, name, arguments) each, one delta each
    parallel_tool_calls: list[tuple[str, str, str]] | None = None
    finish_reason: str = "stop"
    stall_after: int | None = None
    stall_s: float = 0.0
    #: The error message of a ``status`` reply (what an upstream's validation dump looks like, for instance)
    error_message: str | None = None
    #: ``pieces`` are the whole answer: stream only what follows the assistant prefix the request carries (the
    #: checked text a retry resumes from), like a model that goes on from where it was asked to
    resume: bool = False

    def resumed(self, body: dict[str, Any]) -> Reply:
        if not self.resume:
            return self
        turns = body.get("messages") or body.get("input") or []
        prefix = next((str(m.get("content", "")) for m in reversed(turns) if isinstance(m, dict)
                       and m.get("role") == "assistant"), "")
        whole = "".join(self.pieces)
        if not prefix or not whole.startswith(prefix):
            return self
        rest, pieces, used = whole[len(prefix):], [], 0
        for piece in self.pieces:
            used += len(piece)
            if used > len(prefix):
                pieces.append(piece[max(0, len(piece) - (used - len(prefix))):])
        assert "".join(pieces) == rest
        return replace(self, pieces=pieces, resume=False)


class _LoopbackServer(ThreadingHTTPServer):
    request_queue_size = 128  # many concurrent clients (benchmarks/serve.py)
    daemon_threads = True


class ScriptedOpenAIServer:
    """``/v1/chat/completions`` and ``/v1/responses`` answered from a script; records every request body."""

    def __init__(self, replies: list[Reply], *, echo: int = 0, piece_delay_s: float = 0.0, port: int = 0,
                 tokenize_delay_s: float | None = None) -> None:
        """``echo``: with no scripted reply left, answer with the last user message repeated ``echo`` times
        (each client can then tell its own answer); ``piece_delay_s``: pause between streamed pieces; ``port``: 0
        for a free one; ``tokenize_delay_s``: serve llama.cpp's ``/extras/tokenize`` (one id per character) after
        that pause, instead of a 404."""
        self.tokenize_delay_s = tokenize_delay_s
        self.replies = list(replies)
        self.echo, self.piece_delay_s = echo, piece_delay_s
        self.completed = 0  # streamed answers sent to the end
        self.aborted = 0  # streamed answers whose client closed the connection first
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                if not self.path.endswith("/models"):
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                payload = json.dumps({"object": "list", "data": [
                    {"id": "scripted", "object": "model", "created": 0, "owned_by": "test"}]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                if self.path.endswith("/extras/tokenize") and server.tokenize_delay_s is not None:
                    time.sleep(server.tokenize_delay_s)
                    tokens = json.dumps({"tokens": [ord(c) for c in str(body.get("input", ""))]}).encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(tokens)))
                    self.end_headers()
                    self.wfile.write(tokens)
                    return
                if not self.path.endswith(("/chat/completions", "/responses")):
                    self.send_response(404)  # e.g. /extras/tokenize: not a llama.cpp server
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                with server._lock:
                    server.requests.append({"path": self.path, **body})
                    reply = (server.replies.pop(0) if server.replies else server._default_reply(body)).resumed(body)
                if reply.status != 200:
                    message = reply.error_message or f"scripted {reply.status}"
                    payload = json.dumps({"error": {"message": message, "type": "test"}}).encode()
                    self.send_response(reply.status)
                    for key, value in {"Content-Type": "application/json", **reply.headers}.items():
                        self.send_header(key, value)
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Transfer-Encoding", "chunked")
                self.send_header("Connection", "close")
                self.end_headers()
                events = (server._responses_events if self.path.endswith("/responses") else server._chat_events)(reply)
                try:
                    self._stream(events, reply)
                except (BrokenPipeError, ConnectionResetError):
                    with server._lock:
                        server.aborted += 1  # the client closed the request mid-answer
                    self.close_connection = True

            def _stream(self, events: list[dict[str, Any]], reply: Reply) -> None:
                for index, event in enumerate(events):
                    if reply.stall_after is not None and index == reply.stall_after + 1:
                        time.sleep(reply.stall_s)  # the server hangs mid-answer (the client's timeout fires)
                        self.close_connection = True
                        return
                    if reply.cut_after is not None and index == reply.cut_after + 1:
                        # the connection drops mid-body: no terminating chunk, no [DONE]
                        self.wfile.flush()
                        self.connection.shutdown(socket.SHUT_RDWR)
                        self.close_connection = True
                        return
                    self._chunk(f"data: {json.dumps(event)}\n\n".encode())
                    if server.piece_delay_s:
                        time.sleep(server.piece_delay_s)
                self._chunk(b"data: [DONE]\n\n")
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()
                self.close_connection = True
                with server._lock:
                    server.completed += 1

            def _chunk(self, data: bytes) -> None:
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                self.wfile.flush()

        self.httpd = _LoopbackServer(("127.0.0.1", port), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def _default_reply(self, body: dict[str, Any]) -> Reply:
        if not self.echo:
            return Reply(pieces=["(script ended)"])
        messages = body.get("messages") or [{}]
        last = next((m for m in reversed(messages) if m.get("role") == "user"), messages[-1])
        words = (" ".join([str(last.get("content", ""))] * self.echo)).split(" ")
        return Reply(pieces=[w if i == 0 else " " + w for i, w in enumerate(words)])

    def __enter__(self) -> ScriptedOpenAIServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    @staticmethod
    def _chat_events(reply: Reply) -> list[dict[str, Any]]:
        base = {"id": "chatcmpl-scripted", "object": "chat.completion.chunk", "created": 1700000000,
                "model": "scripted"}
        events: list[dict[str, Any]] = [
            {**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": piece}, "finish_reason": None}]}
            for piece in reply.pieces
        ]
        finish = reply.finish_reason
        calls = [reply.tool_call] if reply.tool_call is not None else reply.tool_call_deltas or []
        for number, (name, arguments) in enumerate(calls):
            function = {"arguments": arguments, **({"name": name} if name is not None else {})}
            call = {"index": 0, "function": function,
                    **({"id": reply.tool_call_id, "type": "function"} if number == 0 else {})}
            events.append({**base, "choices": [{"index": 0, "delta": {"tool_calls": [call]}, "finish_reason": None}]})
            finish = "tool_calls"
        for index, (call_id, name, arguments) in enumerate(reply.parallel_tool_calls or []):
            call = {"index": index, "id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}
            events.append({**base, "choices": [{"index": 0, "delta": {"tool_calls": [call]}, "finish_reason": None}]})
            finish = "tool_calls"
        events.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]})
        events.append({**base, "choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": len(reply.pieces),
                                                          "total_tokens": 7 + len(reply.pieces)}})
        return events

    @staticmethod
    def _responses_events(reply: Reply) -> list[dict[str, Any]]:
        response = {"id": "resp_scripted", "object": "response", "created_at": 1700000000, "model": "scripted",
                    "status": "in_progress", "output": [], "parallel_tool_calls": False, "tool_choice": "auto",
                    "tools": []}
        item = {"id": "msg_1", "type": "message", "role": "assistant", "status": "in_progress", "content": []}
        part = {"type": "output_text", "text": "", "annotations": []}
        text = "".join(reply.pieces)
        events: list[dict[str, Any]] = [
            {"type": "response.created", "response": response},
            {"type": "response.in_progress", "response": response},
            {"type": "response.output_item.added", "output_index": 0, "item": item},
            {"type": "response.content_part.added", "item_id": "msg_1", "output_index": 0, "content_index": 0,
             "part": part},
        ]
        events += [{"type": "response.output_text.delta", "item_id": "msg_1", "output_index": 0, "content_index": 0,
                    "delta": piece, "logprobs": []} for piece in reply.pieces]
        done_item = {**item, "status": "completed", "content": [{**part, "text": text}]}
        events += [
            {"type": "response.output_text.done", "item_id": "msg_1", "output_index": 0, "content_index": 0,
             "text": text, "logprobs": []},
            {"type": "response.output_item.done", "output_index": 0, "item": done_item},
            {"type": "response.completed", "response": {
                **response, "status": "completed", "output": [done_item],
                "usage": {"input_tokens": 5, "output_tokens": len(reply.pieces), "total_tokens": 5 + len(reply.pieces),
                          "input_tokens_details": {"cached_tokens": 0},
                          "output_tokens_details": {"reasoning_tokens": 0}}}},
        ]
        for number, event in enumerate(events):
            event["sequence_number"] = number
        return events


def llama_server_env_url() -> str | None:
    return os.environ.get("SUPERVISOR_TEST_OPENAI_URL") or None
