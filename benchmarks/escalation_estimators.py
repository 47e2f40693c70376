"""Which conversation estimator flags an escalating dialogue soonest at a matched benign budget? (issue 19, item 7)

A first measurement, side by side on the sets of ``benchmarks/conversation.py`` (escalations from RTP continuations,
benign multi-turn conversations from XSTest safe prompts with SmolLM2's answers): for each estimator, the threshold
that lets 2% / 5% / 10% of the benign conversations through (on all of them: this compares estimators, it does not
choose a threshold), and what share of the escalations it flags by their first harmful user turn. In-sample: the
held-out comparison, with thresholds picked on one half of the benign prompts and measured on the other, is the
two-fold table of ``benchmarks/conversation.py`` (which decided the shipped rule: the filter or the riskiest
message; CUSUM, ahead here, did not hold up there).

Estimators: the shipped filter (``turn.state_risk``), the riskiest message so far (per turn), the filter or the
latest message, the filter over user turns only, and CUSUM over user turns (``S = max(0, S + risk - k)``: evidence
that accumulates, the classic change detector), and CUSUM over every message.

    python benchmarks/escalation_estimators.py --scorer embedding

Prints a table (for each budget: benign share, by first harmful, before harmful, flagged) and writes
benchmarks/results/escalation_estimators.json.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.conversation import (  # noqa: E402
    ESCALATION_BINS,
    HARMFUL,
    benign_conversations,
    escalations,
    evidence,
    measure,
    peak_so_far,
)
from benchmarks.report import publish  # noqa: E402
from supervisor.assessment import Assessment  # noqa: E402
from supervisor.policy import Policy  # noqa: E402
from supervisor.scorers import get_scorer  # noqa: E402
from supervisor.state import StateEstimator  # noqa: E402


def user_only_filter(turns: list[Any], policy: Policy) -> list[float]:
    estimator, out, last, count = StateEstimator(policy), [], 0.0, 0
    for turn in turns:
        if turn.role == "user":
            count += 1
            estimator.update(count, Assessment(risk=turn.risk, categories=turn.categories))
            last = estimator.filtered_risk()
        out.append(last)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(Path(__file__).resolve().parent.parent.parent / "shared" / "data"))
    parser.add_argument("--scorer", default="embedding")
    parser.add_argument("--limit", type=int, default=300)
    parser.add_argument("--out", default="benchmarks/results/escalation_estimators.json")
    args = parser.parse_args()
    data, policy, scorer = Path(args.data), Policy(), get_scorer(args.scorer)
    harmful = next(i for i, (low, _) in enumerate(ESCALATION_BINS) if low >= HARMFUL)
    benign = [measure(scorer, m, policy).turns for m in benign_conversations(data, 3, 0)]
    rising = [measure(scorer, m, policy).turns for m in escalations(data, args.limit, 0)]
    methods: dict[str, Callable[[list[Any]], list[float]]] = {
        "state (shipped)": lambda ts: [t.state_risk for t in ts],
        "per turn max": peak_so_far,
        "state or latest": lambda ts: [max(t.state_risk, t.risk) for t in ts],
        "user-turn filter": lambda ts: user_only_filter(ts, policy),
        **{f"CUSUM users k={k}": (lambda ts, k=k: evidence(ts, k)) for k in (0.1, 0.2, 0.3)},
        "CUSUM all k=0.2": lambda ts: evidence(ts, 0.2, users_only=False),
    }

    def at_users(turns: list[Any], values: list[float]) -> list[float]:
        return [v for t, v in zip(turns, values) if t.role == "user"]  # what each request's answer would see

    table = []
    for name, method in methods.items():
        benign_peaks = sorted((max(at_users(ts, method(ts))) for ts in benign), reverse=True)
        seen = [at_users(ts, method(ts)) for ts in rising]
        row: dict[str, Any] = {"method": name}
        for budget in (0.02, 0.05, 0.10):
            threshold = benign_peaks[int(budget * len(benign_peaks))] + 1e-9
            hits = [next((i for i, v in enumerate(values) if v >= threshold), None) for values in seen]
            row[f"@{budget}"] = [round(sum(v >= threshold for v in benign_peaks) / len(benign_peaks), 3),
                                 round(sum(h is not None and h <= harmful for h in hits) / len(hits), 3),
                                 round(sum(h is not None and h < harmful for h in hits) / len(hits), 3),
                                 round(sum(h is not None for h in hits) / len(hits), 3)]
        table.append(row)
    lines = [f"Escalations flagged by their first harmful user turn, {args.scorer} scorer, at matched benign budgets "
             "(each cell: benign share / by first harmful / before harmful / flagged)", "",
             "| estimator | at 2% | at 5% | at 10% |", "|---|---|---|---|"]
    lines += [f"| {r['method']} | " + " | ".join(" / ".join(f"{v:.3f}" for v in r[f"@{b}"]) for b in (0.02, 0.05, 0.1)) + " |"
              for r in table]
    publish(lines, args.out, {"settings": vars(args), "table": table})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
