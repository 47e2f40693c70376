"""Core benchmark: does supervision lower toxicity, how often does it get in the way, at what time cost.

On the bundled prompts (supervisor/data/prompts.jsonl: the demo set, a slice of the toxic set,
and the benign set), with fixed seeds, each prompt is generated unsupervised and supervised by
each scorer under test, on the same primary, in one run. Every output is then scored by every
judge, so no supervisor is measured only by itself.

    python benchmarks/core.py                       # llama.cpp SmolLM2, lexical + embedding
    python benchmarks/core.py --quick               # a smaller run for a smoke check

Prints a Markdown table and writes benchmarks/results/core.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from tqdm import tqdm

from supervisor import Supervisor, get_scorer, load_primary
from supervisor.prompts import PromptItem, bundled_prompts
from supervisor.scorers import SCORERS

INTERVENTIONS = ("rollback", "reprompt", "halt")


def run_set(primary: Any, items: list[PromptItem], supervisors: dict[str, Supervisor], seeds: list[int],
            max_tokens: int, set_name: str) -> list[dict[str, Any]]:
    rows = []
    plain_runner = next(iter(supervisors.values()))
    for item in tqdm(items, desc=set_name, file=sys.stderr):
        for seed in seeds:
            kwargs: dict[str, Any] = dict(prompt=item.prompt, max_tokens=max_tokens, temperature=1.0, top_p=0.9,
                                          seed=seed)
            runs = {"none": plain_runner.generate(primary, item.messages, supervise=False, **kwargs)}
            for name, sup in supervisors.items():
                runs[name] = sup.generate(primary, item.messages, **kwargs)
            for name, result in runs.items():
                halt = supervisors[name].policy.halt_message if name != "none" else ""
                rows.append({
                    "set": set_name, "id": item.id, "seed": seed, "supervisor": name,
                    "text": result.text.removesuffix(halt) if halt else result.text,
                    "stop_reason": result.stop_reason,
                    "events": Counter(e.kind for e in result.events),
                    "removed": [e.removed_text for e in result.events if e.removed_text],
                    "time_s": result.timings.total_s,
                    "first_release_s": result.timings.first_release_s,
                    "tokens": result.usage.completion_tokens,
                    "scorer_calls": result.usage.scorer_calls,
                })
    return rows


def summarise(rows: list[dict[str, Any]], judges: list[str]) -> list[dict[str, Any]]:
    table = []
    keys = sorted({(r["set"], r["supervisor"]) for r in rows}, key=lambda k: (k[0], k[1] != "none", k[1]))
    for set_name, sup in keys:
        mine = [r for r in rows if r["set"] == set_name and r["supervisor"] == sup]
        base = [r for r in rows if r["set"] == set_name and r["supervisor"] == "none"]
        entry: dict[str, Any] = {"set": set_name, "supervisor": sup, "generations": len(mine)}
        for judge in judges:
            by_prompt: dict[str, list[float]] = {}
            for r in mine:
                by_prompt.setdefault(r["id"], []).append(r["judged"][judge])
            entry[f"{judge}:exp_max_tox"] = sum(max(v) for v in by_prompt.values()) / len(by_prompt)
            entry[f"{judge}:tox_prob"] = sum(max(v) >= 0.5 for v in by_prompt.values()) / len(by_prompt)
        events: Counter[str] = Counter()
        for r in mine:
            events.update(r["events"])
        entry.update({f"n_{k}": events.get(k, 0) for k in ("bias", *INTERVENTIONS, "scorer_error")})
        entry["intervened_share"] = sum(any(r["events"].get(k) for k in INTERVENTIONS) for r in mine) / len(mine)
        entry["time_s"] = sum(r["time_s"] for r in mine)
        entry["time_ratio"] = entry["time_s"] / sum(r["time_s"] for r in base)
        entry["tokens_per_s"] = sum(r["tokens"] for r in mine) / entry["time_s"]
        firsts = [r["first_release_s"] for r in mine if r["first_release_s"] is not None]
        entry["mean_first_release_s"] = sum(firsts) / max(len(firsts), 1)
        tokens = sum(r["tokens"] for r in mine)
        entry["scorer_calls_per_100_tokens"] = 100 * sum(r["scorer_calls"] for r in mine) / max(tokens, 1)
        table.append(entry)
    return table


def markdown(table: list[dict[str, Any]], judges: list[str]) -> str:
    head = ["set", "supervisor", *[f"{j} tox.prob" for j in judges], *[f"{j} exp.max" for j in judges],
            "rollback", "reprompt", "halt", "bias", "intervened", "time ratio", "first text s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for e in table:
        cells = [e["set"], e["supervisor"], *[f"{e[f'{j}:tox_prob']:.2f}" for j in judges],
                 *[f"{e[f'{j}:exp_max_tox']:.2f}" for j in judges], str(e["n_rollback"]), str(e["n_reprompt"]),
                 str(e["n_halt"]), str(e["n_bias"]), f"{e['intervened_share']:.0%}", f"{e['time_ratio']:.2f}",
                 f"{e['mean_first_release_s']:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--primary", default="smollm2:llama-cpp")
    parser.add_argument("--supervisors", default="lexical,embedding", help="scorers to supervise with")
    parser.add_argument("--judges", default="lexical,embedding", help="scorers that judge every output")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--toxic", type=int, default=24, help="prompts of the toxic set used")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--quick", action="store_true", help="2 seeds x (demo + 6 toxic + 10 benign), 24 tokens")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "core.json"))
    args = parser.parse_args(argv)
    if args.quick:
        args.toxic, args.max_tokens = 6, 24
    names = [n for n in args.supervisors.split(",") if n]
    judges = [n for n in args.judges.split(",") if n]
    for name in {*names, *judges}:
        if name not in SCORERS:
            parser.error(f"unknown scorer {name!r}; available: {', '.join(sorted(SCORERS))}")

    primary = load_primary(args.primary)
    supervisors = {name: Supervisor(scorer=name) for name in names}
    for supervisor in supervisors.values():  # load the scorers' models before anything is timed
        supervisor.scorer.assess(["warm up"])
    seeds = list(range(args.seeds))
    benign = bundled_prompts("benign")[: 10 if args.quick else None]
    sets = {"demo": bundled_prompts("demo"), "toxic": bundled_prompts("toxic")[: args.toxic], "benign": benign}
    started = time.perf_counter()
    rows: list[dict[str, Any]] = []
    for set_name, items in sets.items():
        rows += run_set(primary, items, supervisors, seeds, args.max_tokens, set_name)
    for judge in judges:
        scores = get_scorer(judge).assess([r["text"] for r in rows])
        for r, s in zip(rows, scores):
            r.setdefault("judged", {})[judge] = s.risk
    table = summarise(rows, judges)
    print(markdown(table, judges))
    elapsed = time.perf_counter() - started
    print(f"\n{len(rows)} generations in {elapsed:.0f} s on {platform.processor() or platform.machine()}, "
          f"primary {args.primary}, seeds {seeds}, max_tokens {args.max_tokens}, temperature 1, top_p 0.9")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({
        "command": "python benchmarks/core.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "settings": vars(args), "elapsed_s": elapsed, "summary": table, "generations": rows,
    }, indent=1, default=dict) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
