"""What the OpenAI client wrapper costs: time to the first released token and total time, against the
unwrapped client on the same server, in one run.

Each prompt of the bundled benign and demo sets is sent with greedy decoding through the plain client
and through ``supervise(client)``, alternating which goes first; both stream. Starts a local
llama.cpp server with the embedded SmolLM2 unless ``--url`` names one.

    python benchmarks/openai_wrapper.py                      # default scorer and policy, 40 tokens
    python benchmarks/openai_wrapper.py --scorer lexical
    python benchmarks/openai_wrapper.py --policy default --policy '{"first_checkpoint_tokens": 8}'

Each ``--policy`` (``default``, a file, or JSON) is one more wrapped client in the same alternating run, so
their figures compare as ratios measured together. Target (issue 11): added time to the first released
text <= 0.15 s over the plain client's first token, total time <= 1.05x on benign prompts.
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
from supervisor.prompts import bundled_prompts  # noqa: E402
from tests.openai_servers import MODEL_ALIAS, llama_server_unless  # noqa: E402


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
    parser.add_argument("--scorer", default=None, help="scorer (default: the library's default)")
    parser.add_argument("--max-tokens", type=int, default=40)
    parser.add_argument("--policy", action="append", default=None,
                        help="'default', a policy file, or JSON such as '{\"holdback_checkpoints\": 0}'; repeatable")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "openai_wrapper.json"))
    args = parser.parse_args(argv)
    policies = args.policy or ["default"]

    with llama_server_unless(args.url) as url:
        clients: list[tuple[str, Any]] = [("plain", openai.OpenAI(base_url=url, api_key="not-needed", max_retries=0))]
        for spec in policies:
            policy = None if spec == "default" else json.loads(spec) if spec.lstrip().startswith("{") else spec
            clients.append((spec, supervise(openai.OpenAI(base_url=url, api_key="not-needed", max_retries=0),
                                            scorer=args.scorer, policy=policy)))
        items = [item for name in ("benign", "demo") for item in bundled_prompts(name)]
        for _, client in clients:  # warm the server and the scorer
            timed_stream(client, [{"role": "user", "content": "Hello"}], 5)
        rows: list[dict[str, Any]] = []
        for index, item in enumerate(items):
            messages = item.messages or [{"role": "user", "content": item.text}]
            shift = index % len(clients)
            row: dict[str, Any] = {"id": item.id, "set": item.set}
            for name, client in clients[shift:] + clients[:shift]:
                first, total, text, interventions = timed_stream(client, messages, args.max_tokens)
                row[name] = {"first_s": first, "total_s": total, "chars": len(text), "interventions": interventions}
            rows.append(row)

    table = []
    for subset in ("benign", "demo", "all"):
        chosen = [r for r in rows if subset == "all" or r["set"] == subset]
        if not chosen:
            continue
        for spec in policies:
            def median(key: str, side: str, rows_: list[dict[str, Any]] = chosen) -> float:
                return statistics.median(r[side][key] for r in rows_)

            table.append({
                "set": subset, "policy": spec, "prompts": len(chosen),
                "plain_first_s": median("first_s", "plain"), "wrapped_first_s": median("first_s", spec),
                "added_first_s": statistics.median(r[spec]["first_s"] - r["plain"]["first_s"] for r in chosen),
                "plain_total_s": median("total_s", "plain"), "wrapped_total_s": median("total_s", spec),
                "total_ratio": statistics.median(r[spec]["total_s"] / r["plain"]["total_s"] for r in chosen),
                "prompts_with_interventions": sum(1 for r in chosen if r[spec]["interventions"]),
            })
    lines = [
        f"OpenAI client wrapper vs plain client, scorer {args.scorer or 'default'}, {args.max_tokens} tokens, greedy, "
        "llama.cpp server (SmolLM2-135M), medians (added first-token time and total ratio: medians per prompt)",
        "",
        "| set | policy | prompts | first token plain | first token wrapped | added | total plain | total wrapped "
        "| ratio | prompts with interventions |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for t in table:
        lines.append(
            f"| {t['set']} | `{t['policy']}` | {t['prompts']} | {t['plain_first_s']:.3f} s | {t['wrapped_first_s']:.3f} s"
            f" | {t['added_first_s']:+.3f} s | {t['plain_total_s']:.3f} s | {t['wrapped_total_s']:.3f} s | "
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
