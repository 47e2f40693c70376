"""Best-of-K on hosted primaries: what asking for K candidate blocks after a rollback does to toxicity, and what it
costs, through the OpenAI client wrapper against a real OpenAI-compatible server, in one run.

RTP test-split prompts (``supervisor/data/rtp_eval.jsonl``) are sent as the user's message, K samples each, with
the same seed through the plain client and through ``supervise(client)`` with ``best_of`` 1, 2 and 4, interleaved
prompt by prompt. Toxicity is judged by ``perspective-proxy`` (independent of every supervisor scorer).

    .venv/bin/python benchmarks/best_of.py                        # starts llama.cpp serving the embedded SmolLM2
    .venv/bin/python benchmarks/best_of.py --url http://127.0.0.1:8282/v1 --out benchmarks/results/best_of-vllm.json

Prints a Markdown table and writes benchmarks/results/best_of.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import openai

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from supervisor.integrations.openai import supervise  # noqa: E402
from supervisor.lab.evaluation import load_mode_prompts, rtp_toxicity  # noqa: E402
from supervisor.scorers import get_scorer  # noqa: E402
from tests.openai_servers import MODEL_ALIAS, llama_server_unless  # noqa: E402

BEST_OF = (1, 2, 4)


def generate(client: Any, prompt: str, seed: int, max_tokens: int) -> dict[str, Any]:
    started = time.perf_counter()
    first: float | None = None
    parts: list[str] = []
    stream = client.chat.completions.create(
        model=MODEL_ALIAS, messages=[{"role": "user", "content": prompt}], stream=True, max_tokens=max_tokens,
        temperature=1.0, top_p=0.9, seed=seed)
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            first = first if first is not None else time.perf_counter() - started
            parts.append(chunk.choices[0].delta.content)
    report = getattr(stream, "supervision", None)
    return {
        "text": "".join(parts), "time_s": time.perf_counter() - started, "first_s": first,
        "rollbacks": report.count("rollback") if report is not None else 0,
        "halts": int(report.stop_reason == "halt") if report is not None else 0,
        "requests": len(report.attempts) if report is not None else 1,
        "candidates": sum(a.reason == "candidate" for a in report.attempts) if report is not None else 0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=None, help="an OpenAI-compatible server serving 'smollm2' (default: start one)")
    parser.add_argument("--scorer", default="embedding")
    parser.add_argument("--limit", type=int, default=30)
    parser.add_argument("--samples", type=int, default=2)
    parser.add_argument("--max-tokens", type=int, default=20)
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/best_of.json"))
    args = parser.parse_args()

    with llama_server_unless(args.url) as url:
        def client() -> Any:
            return openai.OpenAI(base_url=url, api_key="not-needed", max_retries=0)

        scorer = get_scorer(args.scorer)
        clients: dict[str, Any] = {"plain": client()}
        for k in BEST_OF:
            clients[f"best_of={k}"] = supervise(client(), scorer=scorer, policy={"best_of": k})
        prompts = load_mode_prompts("continuation", None, args.limit)
        records: list[dict[str, Any]] = []
        for one in clients.values():  # warm up
            generate(one, prompts[0].text, 10**6, args.max_tokens)
        for index, item in enumerate(prompts):
            for sample in range(args.samples):
                for name, one in clients.items():
                    records.append({"config": name, "id": item.id,
                                    **generate(one, item.text, 1000 * index + sample, args.max_tokens)})
            print(f"\r{index + 1}/{len(prompts)} prompts", end="", file=sys.stderr, flush=True)
        print(file=sys.stderr)

    judge = get_scorer("perspective-proxy")
    scores = [a.risk for a in judge.assess([r["text"] for r in records])]
    rows: dict[str, Any] = {}
    for name in clients:
        mine = [i for i, r in enumerate(records) if r["config"] == name]
        per_prompt: dict[str, list[float]] = {}
        for i in mine:
            per_prompt.setdefault(records[i]["id"], []).append(scores[i])
        rows[name] = {
            **rtp_toxicity(per_prompt),
            "time_s": sum(records[i]["time_s"] for i in mine),
            "mean_first_s": float(np.mean([records[i]["first_s"] for i in mine if records[i]["first_s"] is not None])),
            "rollbacks": sum(records[i]["rollbacks"] for i in mine),
            "halts": sum(records[i]["halts"] for i in mine),
            "candidate_requests": sum(records[i]["candidates"] for i in mine),
            "requests": sum(records[i]["requests"] for i in mine),
        }
    base = rows["plain"]
    lines = ["| client | **tox.prob** (perspective-proxy) | exp.max tox | rollbacks | halts | requests (candidates) "
             "| time ratio | first text s |", "|" + "---|" * 8]
    for name, row in rows.items():
        change = (row["toxicity_probability"] - base["toxicity_probability"]) / base["toxicity_probability"] \
            if base["toxicity_probability"] else 0.0
        row["time_ratio"] = row["time_s"] / base["time_s"]
        row["toxicity_probability_change"] = change
        lines.append(f"| {name} | {row['toxicity_probability']:.2f} ({change:+.0%}) | "
                     f"{row['expected_max_toxicity']:.3f} | {row['rollbacks']} | {row['halts']} | "
                     f"{row['requests']} ({row['candidate_requests']}) | {row['time_ratio']:.2f} | "
                     f"{row['mean_first_s']:.3f} |")
    markdown = "\n".join(lines) + "\n"
    payload = {"settings": {"url": url if args.url else "llama.cpp server (started here)", "scorer": args.scorer,
                            "prompts": len(prompts), "samples": args.samples, "max_tokens": args.max_tokens,
                            "split": "RTP test split", "judge": "perspective-proxy (independent)"},
               "rows": rows, "records": records, "markdown": markdown}
    Path(args.out).write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")
    print(markdown)


if __name__ == "__main__":
    main()
