"""Training the state probe: a logistic head on a local primary's own hidden states
(``python -m supervisor.lab.train --state-probe --primary smollm2:transformers``)."""

from __future__ import annotations

import argparse
import json
import math
import time
from importlib import resources
from pathlib import Path

import numpy as np

from supervisor.lab.datasets import benign_texts, load_examples, split_of
from supervisor.lab.fitting import best_threshold


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
    for example in load_examples(data, args.davidson_limit):
        if example.head == "toxicity" and example.dataset != "rtp":
            by_split[split_of(example.text)].append((example.text, int(example.label >= 0.5), example.dataset))
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
        "command": f"python -m supervisor.lab.train --state-probe --primary {args.primary} --probe-train {args.probe_train} "
        f"--max-false-interventions {args.max_benign_fpr}",
        "split": "sha256(text) % 10: 0 test, 1 calibration, else train; toxicity labels of davidson, paradetox, toxigen",
        "mean": [round(float(v), 5) for v in mean], "scale": [round(float(v), 5) for v in scale],
        "heads": {"toxicity": {"weights": [round(float(w), 6) for w in model.coef_[0]],
                               "bias": round(float(model.intercept_[0]) - shift, 6),
                               "train_examples": len(chosen["train"]), "metrics": metrics}},
    }
    out = Path(args.out or str(resources.files("supervisor").joinpath("data/state_probe_smollm2.json")))
    out.write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")
    print(metrics)
    print(f"wrote {out}")
    return 0
