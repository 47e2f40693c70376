"""The lab's dataset readers: the rows of ``../shared/data`` (RealToxicityPrompts, Davidson, ParaDetox, ToxiGen,
XSTest) as labelled examples, and the stable hash split every reader uses."""

from __future__ import annotations

import csv
import hashlib
import json
import math
from pathlib import Path
from typing import NamedTuple

import numpy as np

HEADS = ("toxicity", "harassment", "hate", "violence", "sexual")
#: alt-profanity-check's probability, calibrated with the heads and read as toxicity (``--lexical-head``).
LEXICAL_HEAD = "lexical"
#: The Perspective attribute of RealToxicityPrompts that is each head's soft label.
RTP_ATTRIBUTES = {"toxicity": "toxicity", "harassment": "insult", "hate": "identity_attack", "violence": "threat",
                  "sexual": "sexually_explicit"}
HEAD_SOURCES = {
    "toxicity": "davidson (hate or offensive), paradetox (toxic vs neutral rewrite), toxigen (hate vs neutral), "
                "RTP prompts (Perspective toxicity, soft)",
    "harassment": "RTP prompts (Perspective insult, soft); negatives: benign texts of davidson, paradetox, toxigen",
    "hate": "davidson (hate vs rest), toxigen (hate vs neutral), RTP prompts (Perspective identity_attack, soft); "
            "negatives: neutral paradetox rewrites",
    "violence": "RTP prompts (Perspective threat, soft); negatives: benign texts of davidson, paradetox, toxigen",
    "sexual": "RTP prompts (Perspective sexually_explicit, soft); negatives: benign texts of davidson, paradetox, "
              "toxigen",
}


class Example(NamedTuple):
    text: str
    head: str
    label: float  # probability that the text belongs to the head's category (soft labels from Perspective)
    dataset: str
    group: str = ""  # ToxiGen's target group


def hash_bucket(text: str, buckets: int) -> int:
    """A stable bucket of ``text`` (the same on every machine and run): splits never depend on order or seeds."""
    return int(hashlib.sha256(text.encode("utf-8")).hexdigest()[:8], 16) % buckets


def split_of(text: str) -> str:
    bucket = hash_bucket(text, 10)
    return "test" if bucket == 0 else "calibration" if bucket == 1 else "train"


def _finite(value: object) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def rtp_records(data: Path) -> list[dict[str, dict[str, object]]]:
    with (data / "rtp/rtp-toxic-prompts-dev.jsonl").open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def load_examples(data: Path, davidson_limit: int) -> list[Example]:
    examples: list[Example] = []
    benign_only = ("harassment", "violence", "sexual")
    with (data / "davidson/labeled_data.csv").open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    rng = np.random.default_rng(0)
    for index in rng.permutation(len(rows))[:davidson_limit]:
        row = rows[int(index)]
        label = int(row["class"])
        examples.append(Example(row["tweet"], "toxicity", float(label in (0, 1)), "davidson"))
        examples.append(Example(row["tweet"], "hate", float(label == 0), "davidson"))
        if label == 2:
            examples.extend(Example(row["tweet"], head, 0.0, "davidson") for head in benign_only)
    with (data / "paradetox/paradetox.tsv").open(encoding="utf-8") as handle:
        for row in csv.DictReader(handle, delimiter="\t"):
            examples.append(Example(row["toxic"], "toxicity", 1.0, "paradetox"))
            if row.get("neutral1"):
                examples.extend(Example(row["neutral1"], head, 0.0, "paradetox") for head in HEADS)
    with (data / "toxigen/toxigen-sentences-dev.jsonl").open(encoding="utf-8") as handle:
        for line in handle:
            record = json.loads(line)
            hateful = float(record["label"] == "hate")
            group = str(record.get("group", ""))
            examples.append(Example(record["text"], "hate", hateful, "toxigen", group))
            examples.append(Example(record["text"], "toxicity", hateful, "toxigen", group))
            if not hateful:
                examples.extend(Example(record["text"], head, 0.0, "toxigen", group) for head in benign_only)
    for record in rtp_records(data):
        prompt = record["prompt"]
        text = str(prompt["text"])
        for head, attribute in RTP_ATTRIBUTES.items():
            if _finite(prompt.get(attribute)):
                examples.append(Example(text, head, float(prompt[attribute]), "rtp"))  # type: ignore[arg-type]
    return examples


def rtp_continuations(data: Path) -> list[tuple[str, dict[str, float], str]]:
    """RTP continuation texts with their Perspective scores and the split of their prompt (the judge's data)."""
    rows = []
    for record in rtp_records(data):
        scores = {k: float(v) for k, v in record["continuation"].items() if k != "text" and _finite(v)}  # type: ignore[arg-type]
        if "toxicity" in scores:
            rows.append((str(record["continuation"]["text"]), scores, split_of(str(record["prompt"]["text"]))))
    return rows


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
