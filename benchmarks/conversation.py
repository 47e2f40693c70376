"""The conversation's state against per-turn scoring, on multi-turn dialogues never used for training or
calibration: the HH-RLHF harmless-base *test* pairs (``../shared/data/hh-rlhf``), each a red-team dialogue in a
more harmful (``rejected``) and a less harmful (``chosen``) version, as judged by the dataset's annotators.

Per scorer: pairwise AUROC (the share of pairs where the rejected version reads riskier, ties half) of
- the last assistant turn alone (per-turn scoring, what the supervisor did before),
- the conversation's filtered state after the dialogue (level and forecast across turns),
- the peak turn;
the share of dialogues whose state is in the watch/unsafe zone (chosen = the less harmful side, read as the
benign-ish reference: HH-RLHF red-team dialogues are adversarial on both sides, so this is not a false-positive
rate on benign chat), and the time the conversation costs a request: cold (every message scored) and warm (the
history cached, one new message), per request.

    python benchmarks/conversation.py --scorers lexical,embedding --limit 400

Prints a table and writes benchmarks/results/conversation.json.
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.report import publish  # noqa: E402
from supervisor.conversation import ConversationMeasure  # noqa: E402
from supervisor.policy import Policy  # noqa: E402
from supervisor.scorers import get_scorer  # noqa: E402
from supervisor.scorers.base import assess_checked  # noqa: E402


def dialogue(transcript: str) -> list[dict[str, str]]:
    """``"\\n\\nHuman: ...\\n\\nAssistant: ..."`` as chat messages."""
    parts = re.split(r"\n\n(Human|Assistant): ", "\n\n" + transcript.strip())
    roles = {"Human": "user", "Assistant": "assistant"}
    return [{"role": roles[role], "content": text.strip()} for role, text in zip(parts[1::2], parts[2::2])
            if text.strip()]


def pairs(data: Path, limit: int) -> list[tuple[list[dict[str, str]], list[dict[str, str]]]]:
    rows = []
    with gzip.open(data / "hh-rlhf" / "harmless-base-test.jsonl.gz", "rt", encoding="utf-8") as handle:
        for line in handle:
            record = json.loads(line)
            rejected, chosen = dialogue(record["rejected"]), dialogue(record["chosen"])
            if rejected and chosen and rejected[-1]["role"] == chosen[-1]["role"] == "assistant":
                rows.append((rejected, chosen))
            if len(rows) >= limit:
                break
    return rows


def pairwise_auroc(values: list[tuple[float, float]]) -> float:
    return sum(1.0 if a > b else 0.5 if a == b else 0.0 for a, b in values) / len(values)


def measure(scorer: Any, messages: list[dict[str, str]], policy: Policy) -> Any:
    state_of = ConversationMeasure(messages, scorer, policy)
    return state_of.state(assess_checked(scorer, state_of.pending, None) if state_of.pending else [])


def run(name: str, rows: list[Any], policy: Policy) -> dict[str, Any]:
    scorer = get_scorer(name)
    last, state, peak, zones = [], [], [], []
    for rejected, chosen in rows:
        a, b = measure(scorer, rejected, policy), measure(scorer, chosen, policy)
        last.append((a.turns[-1].risk, b.turns[-1].risk))
        state.append((a.risk, b.risk))
        peak.append((a.peak, b.peak))
        zones.append((a.zone, b.zone))
    cold, warm = [], []
    for rejected, _ in rows[:50]:
        fresh = get_scorer(name)
        started = time.perf_counter()
        measure(fresh, rejected[:-1], policy)
        cold.append(time.perf_counter() - started)
        started = time.perf_counter()
        measure(fresh, rejected, policy)  # the next request: the history again, plus one message
        warm.append(time.perf_counter() - started)
    return {
        "scorer": name, "pairs": len(rows),
        "auroc_last_turn": round(pairwise_auroc(last), 3), "auroc_conversation_state": round(pairwise_auroc(state), 3),
        "auroc_peak_turn": round(pairwise_auroc(peak), 3),
        "rejected_not_safe": round(sum(a != "safe" for a, _ in zones) / len(zones), 3),
        "chosen_not_safe": round(sum(b != "safe" for _, b in zones) / len(zones), 3),
        "turns_mean": round(statistics.mean(len(r) for r, _ in rows), 2),
        "cold_ms_p50": round(1000 * statistics.median(cold), 2), "warm_ms_p50": round(1000 * statistics.median(warm), 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(Path(__file__).resolve().parent.parent.parent / "shared" / "data"))
    parser.add_argument("--scorers", default="lexical,embedding")
    parser.add_argument("--limit", type=int, default=400)
    parser.add_argument("--out", default="benchmarks/results/conversation.json")
    args = parser.parse_args()
    rows = pairs(Path(args.data), args.limit)
    table = [run(name, rows, Policy()) for name in args.scorers.split(",") if name]
    lines = [f"HH-RLHF harmless-base test, {len(rows)} pairs (rejected vs chosen), pairwise AUROC", "",
             "| scorer | last turn | conversation state | peak turn | rejected not safe | chosen not safe | cold ms | "
             "warm ms |", "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {t['scorer']} | {t['auroc_last_turn']} | {t['auroc_conversation_state']} | {t['auroc_peak_turn']} | "
              f"{t['rejected_not_safe']:.1%} | {t['chosen_not_safe']:.1%} | {t['cold_ms_p50']} | {t['warm_ms_p50']} |"
              for t in table]
    publish(lines, args.out, {"settings": vars(args), "table": table})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
