"""Why implicit hate about unseen groups got worse when five heads replaced two, and which recipe recovers it
(issue 19, item 5). The tool is leave-one-group-out: each ToxiGen target group's sentences are removed from
training, the recipe is refitted, and its outputs are scored on that group's sentences (implicit hate vs neutral,
ToxiGen's labels). Recipes (``supervisor.lab.fitting.fit_heads`` on the MiniLM + lexical features, as shipped):

- ``five heads, all sources`` (shipped): every head with RTP prompts' Perspective scores as soft labels;
- ``two heads, no RTP`` (before the five heads): toxicity and hate from davidson, paradetox, toxigen only;
- ``hate/toxicity without RTP, three new heads with it``: the candidate fix (the new categories keep their only
  source; the two old heads go back to theirs).

Per recipe and group: AUROC of the hate head alone, of the toxicity head alone, and of the overall risk (the
largest head output, as the scorer reports ``risk``). And, to see what a fix costs, each recipe's hate and toxicity
heads on the RTP continuations (never trained on; Perspective identity_attack / toxicity >= 0.5).

    python benchmarks/implicit_hate.py

Prints tables and writes benchmarks/results/implicit_hate.json (about ten minutes the first time: the embeddings
of every training text; cached in .cache/train after).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.report import publish  # noqa: E402
from supervisor.lab import datasets  # noqa: E402
from supervisor.lab.fitting import auroc, fit_heads, sigmoid  # noqa: E402
from supervisor.lab.train import Featurizer  # noqa: E402

Heads = dict[str, tuple[np.ndarray, float]]
OLD_HEADS = ("toxicity", "hate")


def fit_recipe(recipe: str, examples: list[datasets.Example], features: Featurizer,
               keep: Callable[[datasets.Example], bool]) -> Heads:
    if recipe == "five heads, all sources":
        return fit_heads(examples, features, keep=keep)
    without_rtp = fit_heads(examples, features, heads_wanted=OLD_HEADS, keep=lambda e: keep(e) and e.dataset != "rtp")
    if recipe == "two heads, no RTP":
        return without_rtp
    new = fit_heads(examples, features, heads_wanted=[h for h in datasets.HEADS if h not in OLD_HEADS], keep=keep)
    return {**without_rtp, **new}


RECIPES = ("five heads, all sources", "two heads, no RTP", "hate/toxicity without RTP, three new heads with it")


def outputs(heads: Heads, x: np.ndarray) -> dict[str, np.ndarray]:
    return {head: sigmoid(x @ weights + bias) for head, (weights, bias) in heads.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(Path(__file__).resolve().parent.parent.parent / "shared" / "data"))
    parser.add_argument("--cache", default=".cache/train")
    parser.add_argument("--out", default="benchmarks/results/implicit_hate.json")
    args = parser.parse_args()
    data = Path(args.data)
    examples = datasets.load_examples(data, 8000)
    features = Featurizer(Path(args.cache))
    groups = sorted({e.group for e in examples if e.dataset == "toxigen" and e.group})
    rows: list[dict[str, Any]] = []
    for group in groups:
        held = [e for e in examples if e.group == group and e.head == "hate"]
        labels = [e.label for e in held]
        if len({label >= 0.5 for label in labels}) < 2:
            continue
        x = features([e.text for e in held])
        for recipe in RECIPES:
            heads = fit_recipe(recipe, examples, features,
                               lambda e, g=group: datasets.split_of(e.text) == "train" and e.group != g)  # type: ignore[misc]
            out = outputs(heads, x)
            risk = np.max(np.stack(list(out.values())), axis=0)
            rows.append({"group": group, "sentences": len(held), "recipe": recipe,
                         "hate": auroc(labels, out["hate"]), "toxicity": auroc(labels, out["toxicity"]),
                         "risk": auroc(labels, risk),
                         "risk_leader": max(out, key=lambda h: float(np.mean(out[h][np.asarray(labels) < 0.5])))})
        print(f"{group}: " + ", ".join(f"{r['recipe'][:12]} risk {r['risk']}" for r in rows[-3:]), flush=True)
    continuations = {head: ([t for t, s, _ in datasets.rtp_continuations(data) if attribute in s],
                            [s[attribute] for _, s, _ in datasets.rtp_continuations(data) if attribute in s])
                     for head, attribute in datasets.RTP_ATTRIBUTES.items() if head in OLD_HEADS}
    rtp: list[dict[str, Any]] = []
    for recipe in RECIPES:
        heads = fit_recipe(recipe, examples, features, lambda e: datasets.split_of(e.text) == "train")
        row: dict[str, Any] = {"recipe": recipe}
        for head, (texts, labels) in continuations.items():
            row[head] = auroc(labels, outputs({head: heads[head]}, features(texts))[head])
        rtp.append(row)

    def summary(recipe: str, key: str) -> str:
        values = [r[key] for r in rows if r["recipe"] == recipe and r[key] is not None]
        return f"{min(values):.3f} / {float(np.mean(values)):.3f}" if values else "-"

    lines = ["Leave-one-group-out over the ToxiGen groups (AUROC on the left-out group's sentences: min / mean over "
             f"{len({r['group'] for r in rows})} groups)", "",
             "| recipe | hate head | toxicity head | risk (largest head) | RTP cont. hate | RTP cont. toxicity |",
             "|---|---|---|---|---|---|"]
    for recipe, on_rtp in zip(RECIPES, rtp):
        lines.append(f"| {recipe} | {summary(recipe, 'hate')} | {summary(recipe, 'toxicity')} | "
                     f"{summary(recipe, 'risk')} | {on_rtp.get('hate')} | {on_rtp.get('toxicity')} |")
    lines += ["", "| group | sentences | " + " | ".join(f"risk: {r}" for r in RECIPES) + " |",
              "|---|---|" + "---|" * len(RECIPES)]
    for group in sorted({r["group"] for r in rows}):
        mine = {r["recipe"]: r for r in rows if r["group"] == group}
        lines.append(f"| {group} | {mine[RECIPES[0]]['sentences']} | " + " | ".join(
            f"{mine[r]['risk']} ({mine[r]['risk_leader']})" for r in RECIPES) + " |")
    publish(lines, args.out, {"settings": vars(args), "rows": rows, "rtp_continuations": rtp})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
