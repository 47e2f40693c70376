"""Load on the gateway (`supervisor serve`): concurrent streaming clients through it, against the same clients
talking to the upstream directly, in one run, on loopback only.

Two upstreams: a fast scripted one (it streams back each client's own message, so any cross-talk shows,
and every fifth client's message holds a flagged word, so any leak shows) and the real llama.cpp server
with the embedded SmolLM2 (one decoding slot: requests queue there as they would on a small deployment).
Per upstream and side (direct, through the gateway): time to first token p50/p95, throughput (characters
per second over the whole wave), cross-talk (an answer that is not its own client's) and leaks (a flagged
word that reached a client through the gateway).

    python benchmarks/serve.py                        # 50 clients on each upstream
    python benchmarks/serve.py --clients 20 --llama-clients 0   # the scripted upstream only

Prints a Markdown table and writes benchmarks/results/serve.json.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import openai

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.report import publish  # noqa: E402
from supervisor.integrations.serve import GatewayConfig  # noqa: E402
from supervisor.primaries.embedded import smollm2_path  # noqa: E402
from tests.openai_servers import MODEL_ALIAS, ScriptedOpenAIServer, free_port, start_llama_server  # noqa: E402
from tests.test_serve import RunningGateway  # noqa: E402

FLAGGED = "idiot"


def prompt(index: int) -> str:
    text = f"client{index:03d} says hello to the park"
    return f"{text} you {FLAGGED}" if index % 5 == 0 else text


async def one(client: Any, index: int, max_tokens: int) -> dict[str, Any]:
    started = time.perf_counter()
    first: float | None = None
    parts: list[str] = []
    stream = await client.chat.completions.create(
        model=MODEL_ALIAS, messages=[{"role": "user", "content": prompt(index)}], stream=True,
        max_tokens=max_tokens, temperature=0.0, seed=index)
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            first = first if first is not None else time.perf_counter() - started
            parts.append(chunk.choices[0].delta.content)
    total = time.perf_counter() - started
    return {"index": index, "first_s": first if first is not None else total, "total_s": total, "text": "".join(parts)}


async def wave(url: str, clients: int, max_tokens: int) -> tuple[list[dict[str, Any]], float]:
    client = openai.AsyncOpenAI(base_url=url, api_key="none", max_retries=0, timeout=600)
    started = time.perf_counter()
    try:
        results = await asyncio.gather(*[one(client, i, max_tokens) for i in range(clients)])
    finally:
        await client.close()
    return list(results), time.perf_counter() - started


def summarise(name: str, side: str, results: list[dict[str, Any]], seconds: float, *, echo: bool) -> dict[str, Any]:
    firsts = sorted(r["first_s"] for r in results)
    crosstalk = sum(1 for r in results if echo and r["text"] and f"client{r['index']:03d}" not in r["text"])
    crosstalk += sum(1 for r in results if echo and any(
        f"client{j:03d}" in r["text"] for j in range(len(results)) if j != r["index"]))
    return {
        "upstream": name, "side": side, "clients": len(results),
        "ttft_p50_s": statistics.median(firsts), "ttft_p95_s": firsts[min(len(firsts) - 1, int(0.95 * len(firsts)))],
        "chars_per_s": sum(len(r["text"]) for r in results) / seconds, "wave_s": seconds,
        "crosstalk": crosstalk, "flagged_word_delivered": sum(1 for r in results if FLAGGED in r["text"]),
        "empty": sum(1 for r in results if not r["text"]),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=50, help="concurrent clients on the scripted upstream")
    parser.add_argument("--llama-clients", type=int, default=50, help="concurrent clients on llama.cpp (0: skip)")
    parser.add_argument("--scorer", default="lexical")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "serve.json"))
    args = parser.parse_args(argv)

    table: list[dict[str, Any]] = []
    with ScriptedOpenAIServer([], echo=3, piece_delay_s=0.005) as scripted:
        config = GatewayConfig(upstream=scripted.url, scorer=args.scorer, continuation="prefill")
        with RunningGateway(config) as gateway:
            for side, url in (("direct", scripted.url), ("gateway", gateway.url), ("direct", scripted.url),
                              ("gateway", gateway.url)):
                results, seconds = asyncio.run(wave(url, args.clients, args.max_tokens))
                table.append(summarise("scripted", side, results, seconds, echo=True))
    if args.llama_clients:
        port = free_port()
        server = start_llama_server(str(smollm2_path()), port)
        url = f"http://127.0.0.1:{port}/v1"
        try:
            with RunningGateway(GatewayConfig(upstream=url, scorer=args.scorer)) as gateway:
                for side, target in (("direct", url), ("gateway", gateway.url)):
                    results, seconds = asyncio.run(wave(target, args.llama_clients, args.max_tokens))
                    table.append(summarise("llama.cpp", side, results, seconds, echo=False))
        finally:
            server.terminate()
            server.wait(timeout=30)

    lines = [f"Gateway load, scorer {args.scorer}, {args.max_tokens} tokens, loopback, one run", "",
             "| upstream | side | clients | TTFT p50 | TTFT p95 | chars/s | wave | cross-talk | flagged word delivered |",
             "|---|---|---|---|---|---|---|---|---|"]
    for t in table:
        lines.append(f"| {t['upstream']} | {t['side']} | {t['clients']} | {t['ttft_p50_s']:.3f} s | "
                     f"{t['ttft_p95_s']:.3f} s | {t['chars_per_s']:.0f} | {t['wave_s']:.2f} s | {t['crosstalk']} | "
                     f"{t['flagged_word_delivered']} |")
    publish(lines, args.out, {"settings": vars(args), "table": table})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
