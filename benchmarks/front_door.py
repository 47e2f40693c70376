"""The gateway as a front door: the careless-client and attacker cases of issue 21, replayed against the running
gateway (uvicorn on loopback) with the embedded SmolLM2 as a local primary and a scripted upstream, measured.

Per case: what the client got and what it cost the gateway (tokens an abandoned request still generated, how long
the next request waited, how long a stuck reader held the primary, /health during a tokenizer probe, removed text
sent to clients, obfuscated words measured). Numbers, not pass/fail: the tests check behaviour.

    python benchmarks/front_door.py

Prints a Markdown table and writes benchmarks/results/front_door.json.
"""

from __future__ import annotations

import asyncio
import json
import platform
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from supervisor.integrations.serve import GatewayConfig, create_app  # noqa: E402
from tests.openai_servers import Reply, ScriptedOpenAIServer  # noqa: E402
from tests.test_serve import RAINBOW, RunningGateway  # noqa: E402
from tests.test_serve_adversarial import StuckReader  # noqa: E402
from tests.test_serve_front_door import BAD_REQUESTS, LONG, VALID, abandon, generated_tokens, health_ms, post  # noqa: E402

FAST = {"checkpoint_every": 4, "window_tokens": 8, "upstream_backoff_s": 0.0}
OBFUSCATED = ["\u202ekcuf\u202c you", "f\u200bu\u200bc\u200bk you", "\uff46\uff55\uff43\uff4b you", "f u c k you",
              "fu\u0441k you", "sh1t head", "you are a b i t c h"]


def malformed(rows: list[dict[str, Any]]) -> None:
    with ScriptedOpenAIServer([], echo=1) as upstream, RunningGateway(GatewayConfig(
            upstream=upstream.url, scorer="lexical", policy=FAST, max_tokens=256)) as gateway:
        statuses = []
        for change, _, param in BAD_REQUESTS:
            status, _, raw = post(gateway.port, "/v1/chat/completions", {**VALID, **change})
            named = status == 400 and json.loads(raw)["error"]["param"] == param
            statuses.append((status, named))
        rows.append({"case": f"{len(BAD_REQUESTS)} malformed or out-of-contract requests (upstream mode)",
                     "now": f"{sum(n for _, n in statuses)} got a 400 naming the parameter; "
                            f"{sum(s >= 500 for s, _ in statuses)} a 5xx; {sum(s == 200 for s, _ in statuses)} a 200; "
                            f"upstream requests made: {len(upstream.requests)}",
                     "statuses": [s for s, _ in statuses], "upstream_requests": len(upstream.requests)})
        for depth in (40, 100_000):
            nested = b'{"model": "scripted", "messages": [], "metadata": ' + b"[" * depth + b"]" * depth + b"}"
            status, _, _ = post(gateway.port, "/v1/chat/completions", nested)
            rows.append({"case": f"JSON nested {depth} deep", "now": f"HTTP {status}", "status": status})
        started = time.perf_counter()
        status, _, _ = post(gateway.port, "/v1/moderations", {"input": ["x"] * 20_000})
        rows.append({"case": "/v1/moderations with 20,000 inputs",
                     "now": f"HTTP {status} in {time.perf_counter() - started:.3f} s", "status": status})
        status, _, _ = post(gateway.port, "/v1/moderations", b'{"input": "bad \\udc00 text"}')
        rows.append({"case": "/v1/moderations with a lone surrogate", "now": f"HTTP {status}", "status": status})
        risks = []
        for text in OBFUSCATED:
            _, _, raw = post(gateway.port, "/v1/moderations", {"input": text})
            risks.append(round(json.loads(raw)["results"][0]["risk"], 3))
        rows.append({"case": f"{len(OBFUSCATED)} obfuscated profanities (bidi override, zero-width, fullwidth, spaced, "
                             "Cyrillic, leet, spaced after an article), lexical scorer",
                     "now": f"{sum(r >= 0.5 for r in risks)} flagged; risks {risks}", "risks": risks})


def leaks(rows: list[dict[str, Any]]) -> None:
    insult = "Honestly you are a stupid idiot and everyone knows it"
    replies = [Reply(pieces=[" " + w for w in insult.split()]), Reply(pieces=[" a fair question."])] * 20
    with ScriptedOpenAIServer(replies) as upstream, RunningGateway(GatewayConfig(
            upstream=upstream.url, scorer="lexical", continuation="prefill", policy=FAST)) as gateway:
        leaked = rollbacks = 0
        for index in range(20):
            _, _, raw = post(gateway.port, "/v1/chat/completions", {**VALID, "stream": index % 2 == 0})
            rollbacks += b"rollback" in raw
            leaked += b"idiot" in raw or b"stupid" in raw
        rows.append({"case": "20 answers with a rollback (10 streamed)",
                     "now": f"removed text sent to the client in {leaked} of {rollbacks}", "leaked": leaked})


def probe(rows: list[dict[str, Any]]) -> None:
    with ScriptedOpenAIServer([Reply(pieces=[" fine."])], tokenize_delay_s=3.0) as upstream, RunningGateway(
            GatewayConfig(upstream=upstream.url, scorer="lexical", policy=FAST)) as gateway:
        worker = threading.Thread(target=post, args=(gateway.port, "/v1/chat/completions", VALID))
        worker.start()
        time.sleep(0.5)
        samples = [health_ms(gateway.port) for _ in range(10)]
        worker.join()
        rows.append({"case": "upstream mode, first request of a model (a 3 s tokenizer probe)",
                     "now": f"/health {max(samples):.1f} ms at most during the probe", "health_ms": samples})


def local(rows: list[dict[str, Any]]) -> None:
    config = GatewayConfig(primary="smollm2:llama-cpp", scorer="lexical", queue_size=1, queue_timeout_s=30.0,
                           send_timeout_s=2.0, max_tokens=1500)
    with RunningGateway(config) as gateway:
        client = gateway.client(timeout=120)
        client.chat.completions.create(model="smollm2", messages=RAINBOW, max_tokens=4)  # warm-up

        def next_wait() -> float:
            started = time.perf_counter()
            client.chat.completions.create(model="smollm2", messages=RAINBOW, max_tokens=4, temperature=0.0)
            return time.perf_counter() - started

        unhindered = next_wait()
        for stream, after_s, label in [(False, 2.0, "a client that abandons a non-streamed request after 2 s"),
                                       (True, 2.0, "a client that abandons a stream after 2 s"),
                                       (True, 0.05, "a client that disconnects right after sending")]:
            before = generated_tokens(gateway)
            abandon(gateway.port, {**LONG, "stream": stream}, after_s=after_s)
            wait = next_wait()
            tokens = generated_tokens(gateway) - before - 4
            rows.append({"case": label, "now": f"{tokens:.0f} of 1500 tokens generated; the next request took "
                                               f"{wait:.2f} s ({unhindered:.2f} s unhindered)",
                         "abandoned_tokens": tokens, "next_wait_s": wait, "unhindered_s": unhindered})
    app = create_app(config)
    scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
             "method": "POST", "scheme": "http", "path": "/v1/chat/completions", "raw_path": b"/v1/chat/completions",
             "query_string": b"", "root_path": "", "headers": [(b"content-type", b"application/json")],
             "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 2)}
    reader = StuckReader({**LONG, "stream": True})

    async def held() -> float:
        started = time.perf_counter()
        await asyncio.wait_for(app(scope, reader.receive, reader.send), timeout=300)
        return time.perf_counter() - started

    seconds = asyncio.run(held())
    pool = app.state.gateway.default.pool
    rows.append({"case": "a reader that reads nothing (local primary, send_timeout_s=2)",
                 "now": f"cut off after {seconds:.1f} s; primaries busy afterwards: {pool.busy}",
                 "held_s": seconds, "busy_after": pool.busy})


def main() -> None:
    rows: list[dict[str, Any]] = []
    for part in (malformed, leaks, probe, local):
        part(rows)
    print("| case | now |\n|---|---|")
    for row in rows:
        print(f"| {row['case']} | {row['now']} |")
    out = Path(__file__).parent / "results" / "front_door.json"
    out.write_text(json.dumps({"machine": platform.platform(), "rows": rows}, indent=2), encoding="utf-8")
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
