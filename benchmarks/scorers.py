"""Scorer benchmark: how well each supervisor model measures, whether it generalises, how fast.

    python benchmarks/scorers.py [--scorers lexical,embedding,...] [--limit 300] [--no-generalisation]

1. Per scorer (each as shipped): AUROC on the held-out test split (sha256(text) % 10 == 0, never used for
   training or calibration) of davidson (toxicity), paradetox (toxic vs neutral rewrite), toxigen (implicit
   hate vs neutral); per category on the RTP *continuation* texts (Perspective attribute >= 0.5; no scorer
   here is trained on them: toxicity, insult -> harassment, identity_attack -> hate, threat -> violence,
   sexually_explicit -> sexual); the share of XSTest `safe` prompts and neutral paradetox rewrites flagged at
   the default act threshold (0.6); latency per text at batch 1 and 32; memory.
2. Generalisation of the embedding probe's recipe (``supervisor.lab.train``), retrained for each fold:
   - leave-one-group-out: each ToxiGen target group removed from training (all its sentences), then the
     hate and toxicity heads scored on that group's sentences;
   - leave-one-dataset-out: each dataset removed from training, every head it labels scored on its test
     split (RTP: on the continuations, since every RTP prompt is toxic; categories from Perspective >= 0.5).
Prints Markdown tables, writes benchmarks/results/scorers.json.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from supervisor.lab import datasets
from supervisor.lab.fitting import auroc, fit_heads, sigmoid
from supervisor.lab.train import Featurizer
from supervisor.policy import Policy
from supervisor.scorers import get_scorer

DEFAULT = "lexical,embedding,cascade,ensemble"


def test_sets(examples: list[datasets.Example], limit: int) -> dict[str, tuple[list[str], list[float]]]:
    sets: dict[str, tuple[list[str], list[float]]] = {}
    wanted = {"davidson": "toxicity", "paradetox": "toxicity", "toxigen": "hate"}
    rng = np.random.default_rng(0)
    for dataset, category in wanted.items():
        pairs = [(e.text, e.label) for e in examples if e.dataset == dataset and e.head == category
                 and datasets.split_of(e.text) == "test"]
        chosen = [pairs[int(i)] for i in rng.permutation(len(pairs))[:limit]]
        sets[dataset] = ([t for t, _ in chosen], [y for _, y in chosen])
    return sets


def category_sets(data: Path) -> dict[str, tuple[list[str], list[float]]]:
    rows = datasets.rtp_continuations(data)
    return {head: ([t for t, s, _ in rows if attribute in s], [s[attribute] for _, s, _ in rows if attribute in s])
            for head, attribute in datasets.RTP_ATTRIBUTES.items()}


def scorer_rows(names: list[str], examples: list[datasets.Example], data: Path, limit: int) -> list[dict[str, Any]]:
    sets = test_sets(examples, limit)
    categories = category_sets(data)
    benign = datasets.benign_texts(data)
    benign_sets = {"xstest_safe": benign["xstest_safe"], "paradetox_neutral": benign["paradetox_neutral_test"][:limit]}
    act = Policy().act_threshold
    process = psutil.Process(os.getpid())
    rows: list[dict[str, Any]] = []
    for name in names:
        before = process.memory_info().rss
        started = time.perf_counter()
        scorer = get_scorer(name)
        scorer.assess(["warm up"])
        row: dict[str, Any] = {"scorer": name, "load_s": time.perf_counter() - started}
        row["memory_mb"] = (process.memory_info().rss - before) / 2**20
        for dataset, (texts, labels) in sets.items():
            row[f"auroc_{dataset}"] = auroc(labels, np.array([a.risk for a in scorer.assess(texts)]))
        continuation_texts = sorted({t for texts, _ in categories.values() for t in texts})
        by_text = dict(zip(continuation_texts, scorer.assess(continuation_texts)))
        for head, (texts, labels) in categories.items():
            assessed = [by_text[t] for t in texts]
            if head == "toxicity" or any(head in a.categories for a in assessed):
                row[f"auroc_rtp_continuations_{head}"] = auroc(
                    labels, np.array([a.categories.get(head, a.risk if head == "toxicity" else 0.0) for a in assessed]))
            else:
                row[f"auroc_rtp_continuations_{head}"] = None  # no head for this category
        for benign_name, texts in benign_sets.items():
            row[f"fpr_{benign_name}"] = float(np.mean([a.risk >= act for a in scorer.assess(texts)]))
        sample = sets["paradetox"][0][:32]
        started = time.perf_counter()
        for text in sample[:16]:
            scorer.assess([text])
        row["ms_per_text_batch1"] = 1000 * (time.perf_counter() - started) / 16
        started = time.perf_counter()
        scorer.assess(sample)
        row["ms_per_text_batch32"] = 1000 * (time.perf_counter() - started) / len(sample)
        rows.append(row)
        print(f"{name}: done", flush=True)
    return rows


def leave_one_group_out(examples: list[datasets.Example], features: Featurizer) -> list[dict[str, Any]]:
    rows = []
    groups = sorted({e.group for e in examples if e.dataset == "toxigen" and e.group})
    for group in groups:
        heads = fit_heads(examples, features, heads_wanted=("hate", "toxicity"),
                          keep=lambda e, g=group: datasets.split_of(e.text) == "train" and e.group != g)  # type: ignore[misc]
        row: dict[str, Any] = {"group": group}
        for head, (weights, bias) in heads.items():
            held = [e for e in examples if e.group == group and e.head == head]
            row["sentences"] = len(held)
            row[f"auroc_{head}"] = auroc([e.label for e in held], sigmoid(features([e.text for e in held]) @ weights + bias))
        rows.append(row)
        print(f"left out group {group}: {row}", flush=True)
    return rows


def leave_one_dataset_out(examples: list[datasets.Example], features: Featurizer, data: Path) -> list[dict[str, Any]]:
    continuations = category_sets(data)
    rows = []
    for dataset in ("davidson", "paradetox", "toxigen", "rtp"):
        labelled = [h for h in datasets.HEADS if any(e.dataset == dataset and e.head == h and e.label >= 0.5 for e in examples)]
        heads = fit_heads(examples, features, heads_wanted=labelled,
                          keep=lambda e, d=dataset: datasets.split_of(e.text) == "train" and e.dataset != d)  # type: ignore[misc]
        row: dict[str, Any] = {"dataset": dataset}
        for head in labelled:
            if head not in heads:
                row[f"auroc_{head}"] = None  # no other dataset labels this category: nothing left to learn from
                continue
            weights, bias = heads[head]
            if dataset == "rtp":  # every RTP prompt is toxic: its continuations have both classes of every category
                texts, labels = continuations[head]
            else:
                held = [e for e in examples if e.dataset == dataset and e.head == head and datasets.split_of(e.text) == "test"]
                texts, labels = [e.text for e in held], [e.label for e in held]
            row[f"auroc_{head}"] = auroc(labels, sigmoid(features(texts) @ weights + bias))
        rows.append(row)
        print(f"left out dataset {dataset}: {row}", flush=True)
    return rows


def fmt(value: float | None, spec: str = ".3f") -> str:
    return "-" if value is None else format(value, spec)


def tables(rows: list[dict[str, Any]], logo: list[dict[str, Any]], lodo: list[dict[str, Any]]) -> str:
    out = []
    head = ["scorer", "AUROC davidson", "AUROC paradetox", "AUROC toxigen",
            *[f"RTP cont. {h}" for h in datasets.HEADS], "flagged xstest safe", "flagged paradetox neutral",
            "ms/text b=1", "ms/text b=32", "memory MB"]
    out += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        out.append("| " + " | ".join([
            r["scorer"], fmt(r["auroc_davidson"]), fmt(r["auroc_paradetox"]), fmt(r["auroc_toxigen"]),
            *[fmt(r.get(f"auroc_rtp_continuations_{h}")) for h in datasets.HEADS],
            fmt(r["fpr_xstest_safe"], ".1%"), fmt(r["fpr_paradetox_neutral"], ".1%"), f"{r['ms_per_text_batch1']:.1f}",
            f"{r['ms_per_text_batch32']:.1f}", f"{r['memory_mb']:.0f}",
        ]) + " |")
    if logo:
        out += ["", "Leave-one-group-out (ToxiGen group removed from training; AUROC on its sentences)", "",
                "| group | sentences | hate head | toxicity head |", "|---|---|---|---|"]
        out += [f"| {r['group']} | {r.get('sentences', 0)} | {fmt(r.get('auroc_hate'))} | {fmt(r.get('auroc_toxicity'))} |"
                for r in logo]
        hate = [r["auroc_hate"] for r in logo if r.get("auroc_hate") is not None]
        out.append(f"| min / mean | | {fmt(min(hate))} / {fmt(float(np.mean(hate)))} | |")
    if lodo:
        out += ["", "Leave-one-dataset-out (dataset removed from training; AUROC on its test split, RTP on the "
                "continuations; - : no other dataset labels that category)", "",
                "| dataset | " + " | ".join(datasets.HEADS) + " |", "|---|" + "---|" * len(datasets.HEADS)]
        out += ["| " + r["dataset"] + " | " + " | ".join(fmt(r.get(f"auroc_{h}")) if f"auroc_{h}" in r else "n/a"
                                                        for h in datasets.HEADS) + " |" for r in lodo]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scorers", default=DEFAULT)
    parser.add_argument("--data", default="../shared/data")
    parser.add_argument("--limit", type=int, default=300, help="texts per test set")
    parser.add_argument("--cache", default=".cache/train", help="embedding cache shared with supervisor.lab.train")
    parser.add_argument("--no-generalisation", action="store_true", help="skip the leave-one-out retraining")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "scorers.json"))
    args = parser.parse_args(argv)
    data = Path(args.data)
    examples = datasets.load_examples(data, 8000)
    rows = scorer_rows([n for n in args.scorers.split(",") if n], examples, data, args.limit)
    logo: list[dict[str, Any]] = []
    lodo: list[dict[str, Any]] = []
    if not args.no_generalisation:
        features = Featurizer(Path(args.cache))
        logo = leave_one_group_out(examples, features)
        lodo = leave_one_dataset_out(examples, features, data)
    table = tables(rows, logo, lodo)
    print(table)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"settings": vars(args), "rows": rows, "leave_one_group_out": logo,
                                          "leave_one_dataset_out": lodo, "table": table}, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
