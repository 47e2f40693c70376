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
- ``MiniLM head (request + answer)``: on the concatenated embeddings of request and answer;
- ``MiniLM head (request, answer, product)``: the same plus their elementwise product (request x compliance, learnt);
- ``word n-grams (request + answer)``: a logistic head on TF-IDF word uni- and bigrams of both.

A second corpus, never trained on: the XSTest prompts answered by the embedded primary (``benchmarks/answers.py``,
cached): AUROC of the answers to the unsafe prompts against the answers to the safe ones (SmolLM2 complies with
most of both, so an unsafe prompt's answer is mostly harmful assistance; the label is the request's, by XSTest).

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

from benchmarks.answers import xstest_answers  # noqa: E402
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
    parser.add_argument("--no-xstest", action="store_true", help="skip the second corpus (it generates answers once)")
    parser.add_argument("--out", default="benchmarks/results/harmful_assistance.json")
    args = parser.parse_args()
    from scipy.sparse import hstack
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    rows = examples(Path(args.data))
    train = [r for r in rows if r["split"] != "test"]
    test = [r for r in rows if r["split"] == "test"]
    answered = [] if args.no_xstest else xstest_answers(Path(args.data))
    encoder = SentenceEncoder()
    texts = sorted({r[k] for r in rows for k in ("request", "rejected", "chosen")} |
                   {r[k] for r in answered for k in ("prompt", "answer")})
    embed = dict(zip(texts, encoder.encode(texts)))
    probe = get_scorer("embedding")
    risk = {text: a.risk for text, a in zip(texts, probe.assess(texts))}

    def refusal_cue(text: str) -> float:
        return 0.0 if REFUSAL.search(text) else 1.0

    shapes = {"answer": lambda r, a: embed[a], "request + answer": lambda r, a: np.concatenate([embed[r], embed[a]]),
              "request, answer, product": lambda r, a: np.concatenate([embed[r], embed[a], embed[r] * embed[a]])}
    pairs_xy = [(r["request"], r[side], label) for r in train for side, label in (("rejected", 1), ("chosen", 0))]
    labels = np.array([label for _, _, label in pairs_xy])
    heads = {name: LogisticRegression(C=1.0, max_iter=3000).fit(np.array([shape(q, a) for q, a, _ in pairs_xy]), labels)
             for name, shape in shapes.items()}
    words_request = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True).fit([q for q, _, _ in pairs_xy])
    words_answer = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True).fit([a for _, a, _ in pairs_xy])

    def word_features(pairs: list[tuple[str, str]]) -> Any:
        return hstack([words_request.transform([q for q, _ in pairs]), words_answer.transform([a for _, a in pairs])])

    words = LogisticRegression(C=1.0, max_iter=3000).fit(word_features([(q, a) for q, a, _ in pairs_xy]), labels)

    def head(name: str) -> Any:
        return lambda q, a: float(heads[name].decision_function([shapes[name](q, a)])[0])

    candidates: dict[str, Any] = {
        "embedding probe (shipped)": lambda q, a: risk[a],
        "refusal cue": lambda q, a: refusal_cue(a),
        "request risk x compliance": lambda q, a: risk[q] * refusal_cue(a),
        **{f"MiniLM head ({name})": head(name) for name in shapes},
        "word n-grams (request + answer)": lambda q, a: float(words.decision_function(word_features([(q, a)]))[0]),
    }
    table = []
    for name, score in candidates.items():
        row: dict[str, Any] = {"candidate": name, "test_pairs": len(test), "train_pairs": len(train),
                               "pairwise_auroc": round(pairwise_auroc(
                                   [(score(r["request"], r["rejected"]), score(r["request"], r["chosen"])) for r in test]), 3)}
        if answered:
            row["xstest_auroc"] = round(float(roc_auc_score([r["label"] == "unsafe" for r in answered],
                                                            [score(r["prompt"], r["answer"]) for r in answered])), 3)
        table.append(row)
    lines = [f"Harmful assistance, HH-RLHF harmless-base split by request hash: {len(train)} train pairs, "
             f"{len(test)} test pairs (pairwise AUROC on test); XSTest: {len(answered)} prompts answered by SmolLM2, "
             "AUROC of answers to unsafe vs safe prompts (never trained on)", "",
             "| candidate | HH-RLHF pairwise AUROC | XSTest AUROC |", "|---|---|---|"]
    lines += [f"| {t['candidate']} | {t['pairwise_auroc']} | {t.get('xstest_auroc', '')} |" for t in table]
    publish(lines, args.out, {"settings": vars(args), "table": table})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
