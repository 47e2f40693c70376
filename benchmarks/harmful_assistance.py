"""Can the shared data teach a head what "the answer helps with harm" looks like? A feasibility measurement for the
harmful-assistance category (issue 19, item 3), before any head ships.

Data: the HH-RLHF harmless-base pairs (``../shared/data/hh-rlhf``), split by a hash of the dialogue's first request
(``supervisor.lab.datasets.split_of``: the ``test`` part is never fitted on). Each example is the last request and
the last answer; the more harmful (``rejected``) answer is the positive. Candidates, side by side on the test pairs
(pairwise AUROC: the share of pairs where the rejected answer scores higher, ties half):
- ``embedding probe (shipped)``: the default scorer's risk of the answer (what the supervisor measures now);
- ``refusal cue``: 1 minus a refusal detector (keywords: "I can't", "I'm sorry", ...): compliance alone;
- ``request risk x compliance``: the embedding probe's risk of the request times the refusal cue;
- ``MiniLM head (answer)``: a logistic head on the answer's MiniLM embedding, fitted on the train split;
- ``MiniLM head (request + answer)``: on the concatenated embeddings of request and answer.

    python benchmarks/harmful_assistance.py

Prints a table and writes benchmarks/results/harmful_assistance.json.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.conversation import dialogue, pairwise_auroc  # noqa: E402
from benchmarks.report import publish  # noqa: E402
from supervisor.lab.datasets import split_of  # noqa: E402
from supervisor.scorers import get_scorer  # noqa: E402
from supervisor.scorers.embedding import SentenceEncoder  # noqa: E402

REFUSAL = re.compile(r"\b(I can(?:no|')t|I won't|I will not|I'm sorry|I am sorry|I don't think (?:I|you) should|"
                     r"not (?:able|going) to help|I'd rather not|illegal|not appropriate|I do not)\b", re.IGNORECASE)


def examples(data: Path) -> list[dict[str, Any]]:
    import gzip
    import json

    rows = []
    with gzip.open(data / "hh-rlhf" / "harmless-base-test.jsonl.gz", "rt", encoding="utf-8") as handle:
        for line in handle:
            record = json.loads(line)
            rejected, chosen = dialogue(record["rejected"]), dialogue(record["chosen"])
            if len(rejected) < 2 or len(chosen) < 2 or rejected[-1]["role"] != "assistant" or \
                    chosen[-1]["role"] != "assistant" or rejected[-1]["content"] == chosen[-1]["content"]:
                continue
            rows.append({"split": split_of(rejected[0]["content"]), "request": rejected[-2]["content"],
                         "rejected": rejected[-1]["content"], "chosen": chosen[-1]["content"]})
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(Path(__file__).resolve().parent.parent.parent / "shared" / "data"))
    parser.add_argument("--out", default="benchmarks/results/harmful_assistance.json")
    args = parser.parse_args()
    from sklearn.linear_model import LogisticRegression

    rows = examples(Path(args.data))
    train = [r for r in rows if r["split"] != "test"]
    test = [r for r in rows if r["split"] == "test"]
    encoder = SentenceEncoder()
    texts = sorted({r[k] for r in rows for k in ("request", "rejected", "chosen")})
    embed = dict(zip(texts, encoder.encode(texts)))
    probe = get_scorer("embedding")
    risk = {text: a.risk for text, a in zip(texts, probe.assess(texts))}

    def refusal_cue(text: str) -> float:
        return 0.0 if REFUSAL.search(text) else 1.0

    def features(r: dict[str, Any], side: str, with_request: bool) -> np.ndarray:
        answer = embed[r[side]]
        return np.concatenate([embed[r["request"]], answer]) if with_request else answer

    heads = {}
    for with_request in (False, True):
        x = np.array([features(r, side, with_request) for r in train for side in ("rejected", "chosen")])
        y = np.array([1, 0] * len(train))
        heads[with_request] = LogisticRegression(C=1.0, max_iter=2000).fit(x, y)

    def head_score(with_request: bool) -> Any:
        return lambda r, side: float(heads[with_request].decision_function([features(r, side, with_request)])[0])

    candidates = {
        "embedding probe (shipped)": lambda r, side: risk[r[side]],
        "refusal cue": lambda r, side: refusal_cue(r[side]),
        "request risk x compliance": lambda r, side: risk[r["request"]] * refusal_cue(r[side]),
        "MiniLM head (answer)": head_score(False),
        "MiniLM head (request + answer)": head_score(True),
    }
    table = [{"candidate": name, "test_pairs": len(test), "train_pairs": len(train),
              "pairwise_auroc": round(pairwise_auroc([(score(r, "rejected"), score(r, "chosen")) for r in test]), 3)}
             for name, score in candidates.items()]
    lines = [f"Harmful assistance, HH-RLHF harmless-base split by request hash: {len(train)} train pairs, "
             f"{len(test)} test pairs (pairwise AUROC on test)", "", "| candidate | pairwise AUROC |", "|---|---|"]
    lines += [f"| {t['candidate']} | {t['pairwise_auroc']} |" for t in table]
    publish(lines, args.out, {"settings": vars(args), "table": table})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
