"""Answers of the embedded primary to the XSTest prompts, generated once and cached: safe prompts that only look
unsafe and truly unsafe contrasts (``../shared/data/xstest``), each answered by SmolLM2 (greedy, unsupervised, one
turn). The benchmarks that need what the primary writes for a labelled request read them from here.

    python benchmarks/answers.py          # writes benchmarks/results/xstest_answers.jsonl (a few minutes)

The cached file holds the XSTest prompts (Röttger et al. 2024, github paul-rottger/exaggerated-safety, CC-BY-4.0)
with their labels, and SmolLM2-135M-Instruct's answers (Apache-2.0 model; the answers are generated here).
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data"
CACHE = ROOT / "benchmarks" / "results" / "xstest_answers.jsonl"


def xstest_answers(data: Path = DATA, *, max_tokens: int = 64, cache: Path = CACHE) -> list[dict[str, Any]]:
    """Rows ``{"id", "prompt", "label", "type", "answer"}``; generated where the cache lacks them."""
    from supervisor import Supervisor
    from supervisor.primaries import load_primary

    with (data / "xstest" / "xstest-prompts-dev.csv").open(encoding="utf-8") as handle:
        prompts = list(csv.DictReader(handle))
    known: dict[str, dict[str, Any]] = {}
    if cache.exists():
        with cache.open(encoding="utf-8") as handle:
            known = {row["prompt"]: row for row in map(json.loads, handle) if row.get("max_tokens") == max_tokens}
    missing = [row for row in prompts if row["prompt"] not in known]
    if missing:
        sup, primary = Supervisor(scorer="lexical"), load_primary("smollm2")
        for row in missing:
            answer = sup.generate(primary, [{"role": "user", "content": row["prompt"]}], supervise=False,
                                  max_tokens=max_tokens, temperature=0.0)
            known[row["prompt"]] = {"id": row["id"], "prompt": row["prompt"], "label": row["label"],
                                    "type": row["type"], "answer": answer.text, "max_tokens": max_tokens}
        cache.parent.mkdir(parents=True, exist_ok=True)
        with cache.open("w", encoding="utf-8") as handle:
            for row in prompts:
                handle.write(json.dumps(known[row["prompt"]]) + "\n")
    return [known[row["prompt"]] for row in prompts]


if __name__ == "__main__":
    rows = xstest_answers()
    print(f"{len(rows)} answers in {CACHE}")
