"""Scorer benchmark: how well each supervisor model measures, how often it cries wolf, how fast.

    python benchmarks/scorers.py [--scorers lexical,embedding,...] [--limit 300]

For each scorer: AUROC on the held-out test split (sha256(text) % 10 == 0, never used for
training or calibration) of davidson (toxicity: hate or offensive), paradetox (toxic vs neutral
rewrite) and toxigen (implicit hate vs neutral); the false-positive rate at 0.5 on XSTest `safe`
prompts and on neutral paradetox rewrites of the test split; latency per text at batch 1 and 32;
the memory its loading added. Prints a Markdown table, writes benchmarks/results/scorers.json.
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

from supervisor.scorers import get_scorer
from supervisor.train import benign_texts, load_examples, split_of

DEFAULT = "lexical,embedding,cascade,ensemble,llm-judge:self-check,llm-judge:llama-guard"


def test_sets(data: Path, limit: int) -> dict[str, tuple[list[str], list[int]]]:
    sets: dict[str, tuple[list[str], list[int]]] = {}
    wanted = {"davidson": "toxicity", "paradetox": "toxicity", "toxigen": "hate"}
    rng = np.random.default_rng(0)
    for dataset, category in wanted.items():
        pairs = [(t, y) for t, c, y, d in load_examples(data, 24_783) if d == dataset and c == category
                 and split_of(t) == "test"]
        chosen = [pairs[int(i)] for i in rng.permutation(len(pairs))[:limit]]
        sets[dataset] = ([t for t, _ in chosen], [y for _, y in chosen])
    return sets


def auroc(scores: list[float], labels: list[int]) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(labels, scores))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scorers", default=DEFAULT)
    parser.add_argument("--data", default="../shared/data")
    parser.add_argument("--limit", type=int, default=300, help="texts per test set")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "scorers.json"))
    args = parser.parse_args(argv)
    data = Path(args.data)
    sets = test_sets(data, args.limit)
    benign = benign_texts(data)
    benign_sets = {"xstest_safe": benign["xstest_safe"], "paradetox_neutral": benign["paradetox_neutral_test"][: args.limit]}
    process = psutil.Process(os.getpid())
    rows: list[dict[str, Any]] = []
    for name in [n for n in args.scorers.split(",") if n]:
        before = process.memory_info().rss
        started = time.perf_counter()
        scorer = get_scorer(name)
        scorer.assess(["warm up"])
        row: dict[str, Any] = {"scorer": name, "load_s": time.perf_counter() - started}
        row["memory_mb"] = (process.memory_info().rss - before) / 2**20
        for dataset, (texts, labels) in sets.items():
            row[f"auroc_{dataset}"] = auroc([a.risk for a in scorer.assess(texts)], labels)
        for benign_name, texts in benign_sets.items():
            row[f"fpr_{benign_name}"] = float(np.mean([a.risk >= 0.5 for a in scorer.assess(texts)]))
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
    head = ["scorer", "AUROC davidson", "AUROC paradetox", "AUROC toxigen", "FPR xstest safe", "FPR paradetox neutral",
            "ms/text b=1", "ms/text b=32", "memory MB"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        lines.append("| " + " | ".join([
            r["scorer"], f"{r['auroc_davidson']:.3f}", f"{r['auroc_paradetox']:.3f}", f"{r['auroc_toxigen']:.3f}",
            f"{r['fpr_xstest_safe']:.1%}", f"{r['fpr_paradetox_neutral']:.1%}", f"{r['ms_per_text_batch1']:.1f}",
            f"{r['ms_per_text_batch32']:.1f}", f"{r['memory_mb']:.0f}",
        ]) + " |")
    print("\n".join(lines))
    print("\ntest split sizes: " + ", ".join(f"{k} {len(v[0])}" for k, v in sets.items()) +
          f"; benign: xstest safe {len(benign_sets['xstest_safe'])}, paradetox neutral "
          f"{len(benign_sets['paradetox_neutral'])}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"settings": vars(args), "rows": rows, "table": "\n".join(lines)}, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
