"""What supervision costs a local primary in time: total time and time to the first released text, for the
cadence and score-ahead settings, against the same generations unsupervised, in one run.

Each benign prompt is generated (same seed) unsupervised and under each policy variant, taking turns in a
rotating order; ratios are of summed wall times in this run (the machine is noisy: compare ratios).

    python benchmarks/latency.py                      # SmolLM2 on llama.cpp, default scorer, 30 benign prompts
    python benchmarks/latency.py --scorer lexical --limit 10

Target (issue 11): total <= 1.05x on benign prompts, first released text <= 0.15 s after the unsupervised
first token. Prints a Markdown table and writes benchmarks/results/latency.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from supervisor import Policy, Supervisor, load_primary  # noqa: E402
from supervisor.prompts import bundled_prompts  # noqa: E402

VARIANTS: dict[str, dict[str, Any]] = {
    "default (first checkpoint after 1 token)": {},
    "score_ahead on": {"score_ahead": True},
    "first checkpoint after 8 tokens (the former behaviour)": {"first_checkpoint_tokens": 8},
    "first checkpoint after 8 tokens, score_ahead on": {"first_checkpoint_tokens": 8, "score_ahead": True},
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--primary", default="smollm2:llama-cpp")
    parser.add_argument("--scorer", default=None, help="scorer (default: the library's default)")
    parser.add_argument("--limit", type=int, default=30)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "latency.json"))
    args = parser.parse_args(argv)

    primary = load_primary(args.primary)
    runners = {"unsupervised": Supervisor(scorer=args.scorer)}
    runners.update({name: Supervisor(scorer=args.scorer, policy=Policy(**update)) for name, update in VARIANTS.items()})
    for runner in runners.values():  # load and warm the scorer
        runner.generate(primary, prompt="Hello there.", max_tokens=4, seed=0)
    items = bundled_prompts("benign")[: args.limit]
    rows: list[dict[str, Any]] = []
    names = list(runners)
    for index, item in enumerate(items):
        row: dict[str, Any] = {"id": item.id}
        shift = index % len(names)
        for name in names[shift:] + names[:shift]:
            result = runners[name].generate(primary, item.messages, prompt=item.prompt, max_tokens=args.max_tokens,
                                            temperature=1.0, top_p=0.9, seed=index,
                                            supervise=name != "unsupervised")
            row[name] = {"total_s": result.timings.total_s, "first_s": result.timings.first_release_s,
                         "scorer_calls": result.usage.scorer_calls, "events": len(result.events)}
        rows.append(row)

    base_total = sum(r["unsupervised"]["total_s"] for r in rows)
    table = []
    for name in names:
        firsts = [r[name]["first_s"] - r["unsupervised"]["first_s"] for r in rows
                  if r[name]["first_s"] is not None and r["unsupervised"]["first_s"] is not None]
        table.append({
            "policy": name,
            "total_ratio": sum(r[name]["total_s"] for r in rows) / base_total,
            "first_s": statistics.median(r[name]["first_s"] for r in rows if r[name]["first_s"] is not None),
            "added_first_s": statistics.median(firsts) if firsts else None,
            "scorer_calls": statistics.mean(r[name]["scorer_calls"] for r in rows),
            "generations_with_events": sum(1 for r in rows if r[name]["events"]),
        })
    lines = [
        f"Local primary {args.primary}, scorer {args.scorer or 'default'}, {len(rows)} benign prompts, "
        f"{args.max_tokens} tokens, temperature 1, seeds per prompt; one run, rotating order",
        "",
        "| policy | total time ratio | first text (median) | added first text (median) | scorer calls | generations with events |",
        "|---|---|---|---|---|---|",
    ]
    for t in table:
        added = f"{t['added_first_s']:+.3f} s" if t["added_first_s"] is not None else "-"
        lines.append(f"| {t['policy']} | {t['total_ratio']:.3f} | {t['first_s']:.3f} s | {added} | "
                     f"{t['scorer_calls']:.1f} | {t['generations_with_events']} |")
    print("\n".join(lines))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"settings": vars(args), "machine": platform.platform(), "table": table, "rows": rows},
                              indent=1), encoding="utf-8")
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
