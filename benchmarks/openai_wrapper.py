"""What the OpenAI client wrapper costs: time to the first released token and total time, against the
unwrapped client on the same server, in one run.

Each prompt of the bundled benign and demo sets is sent with greedy decoding through the plain client
and through ``supervise(client)``, alternating which goes first; both stream. Starts a local
llama.cpp server with the embedded SmolLM2 unless ``--url`` names one.

    python benchmarks/openai_wrapper.py                      # lexical scorer, 40 tokens
    python benchmarks/openai_wrapper.py --scorer embedding
    python benchmarks/openai_wrapper.py --policy '{"holdback_checkpoints": 0}' --out benchmarks/results/openai_wrapper-lag0.json

Prints a Markdown table and writes benchmarks/results/openai_wrapper.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import openai

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from supervisor.integrations.openai import supervise  # noqa: E402

from supervisor.primaries.embedded import smollm2_path  # noqa: E402
from supervisor.prompts import bundled_prompts  # noqa: E402
from tests.openai_servers import MODEL_ALIAS, free_port, start_llama_server  # noqa: E402


def timed_stream(client: Any, messages: list[dict[str, str]], max_tokens: int) -> tuple[float, float, str, int]:
    started = time.perf_counter()
    first: float | None = None
    parts: list[str] = []
    stream = client.chat.completions.create(model=MODEL_ALIAS, messages=messages, stream=True, max_tokens=max_tokens,
                                            temperature=0.0, seed=0)
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            if first is None:
                first = time.perf_counter() - started
            parts.append(chunk.choices[0].delta.content)
    total = time.perf_counter() - started
    report = getattr(stream, "supervision", None)
    interventions = len(report.events) if report is not None else 0
    return (first if first is not None else total), total, "".join(parts), interventions


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default=None, help="an OpenAI-compatible server serving 'smollm2' (default: start one)")
    parser.add_argument("--scorer", default="lexical")
    parser.add_argument("--max-tokens", type=int, default=40)
    parser.add_argument("--policy", default=None, help='policy file, or JSON such as \'{"holdback_checkpoints": 0}\'')
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "openai_wrapper.json"))
    args = parser.parse_args(argv)

    server = None
    url = args.url
    if url is None:
        port = free_port()
        server = start_llama_server(str(smollm2_path()), port)
        url = f"http://127.0.0.1:{port}/v1"
    try:
        plain = openai.OpenAI(base_url=url, api_key="not-needed", max_retries=0)
        policy = json.loads(args.policy) if args.policy and args.policy.lstrip().startswith("{") else args.policy
        wrapped = supervise(openai.OpenAI(base_url=url, api_key="not-needed", max_retries=0), scorer=args.scorer,
                            policy=policy)
        items = [item for name in ("benign", "demo") for item in bundled_prompts(name)]
        timed_stream(plain, [{"role": "user", "content": "Hello"}], 5)  # warm the server
        rows: list[dict[str, Any]] = []
        for index, item in enumerate(items):
            messages = item.messages or [{"role": "user", "content": item.text}]
            order = [("plain", plain), ("wrapped", wrapped)]
            if index % 2:
                order.reverse()
            row: dict[str, Any] = {"id": item.id, "set": item.set}
            for name, client in order:
                first, total, text, interventions = timed_stream(client, messages, args.max_tokens)
                row[name] = {"first_s": first, "total_s": total, "chars": len(text), "interventions": interventions}
            rows.append(row)
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)

    table = []
    for subset in ("benign", "demo", "all"):
        chosen = [r for r in rows if subset == "all" or r["set"] == subset]
        if not chosen:
            continue

        def median(key: str, side: str, rows_: list[dict[str, Any]] = chosen) -> float:
            return statistics.median(r[side][key] for r in rows_)

        table.append({
            "set": subset, "prompts": len(chosen),
            "plain_first_s": median("first_s", "plain"), "wrapped_first_s": median("first_s", "wrapped"),
            "plain_total_s": median("total_s", "plain"), "wrapped_total_s": median("total_s", "wrapped"),
            "first_ratio": statistics.median(r["wrapped"]["first_s"] / r["plain"]["first_s"] for r in chosen),
            "total_ratio": statistics.median(r["wrapped"]["total_s"] / r["plain"]["total_s"] for r in chosen),
            "prompts_with_interventions": sum(1 for r in chosen if r["wrapped"]["interventions"]),
        })
    lines = [
        f"OpenAI client wrapper vs plain client, scorer {args.scorer}, policy {args.policy or 'default'}, "
        f"{args.max_tokens} tokens, greedy, "
        "llama.cpp server (SmolLM2-135M), medians",
        "",
        "| set | prompts | first token plain | first token wrapped | ratio | total plain | total wrapped | ratio "
        "| prompts with interventions |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for t in table:
        lines.append(
            f"| {t['set']} | {t['prompts']} | {t['plain_first_s']:.3f} s | {t['wrapped_first_s']:.3f} s | "
            f"{t['first_ratio']:.2f} | {t['plain_total_s']:.3f} s | {t['wrapped_total_s']:.3f} s | "
            f"{t['total_ratio']:.2f} | {t['prompts_with_interventions']} |"
        )
    print("\n".join(lines))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"settings": vars(args) | {"url": url}, "machine": platform.platform(),
                               "table": table, "rows": rows}, indent=1), encoding="utf-8")
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
