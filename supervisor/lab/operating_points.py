"""Operating points from what the primary writes: the texts the supervisor would score on benign answers.

A rollback costs a few tokens, so its threshold may be aggressive, but a false one on an ordinary answer
still costs time and may change the answer. ``collect`` runs the real supervision loop (the primary,
the policy's cadence and windows) on benign prompts with a scorer that records every text it is given
and never flags; ``false_intervention_rate`` then says, for any head thresholds, how many of those
answers would have seen at least one intervention. ``python -m supervisor.lab.train`` calibrates the heads
on the ``calibration`` half and reports the ``test`` half.

Benign prompts: XSTest ``safe`` prompts (chat mode: questions that look unsafe and are not) and neutral
ParaDetox rewrites (completion mode: ordinary sentences to continue). Halves by ``sha256(prompt) % 2``.
"""

from __future__ import annotations

import csv
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pydantic import BaseModel

from supervisor.assessment import Assessment
from supervisor.lab.datasets import hash_bucket
from supervisor.policy import Policy
from supervisor.scorers.base import BaseScorer


class BenignPrompt(BaseModel):
    id: str
    mode: str  # "chat" or "completion"
    text: str
    half: str  # "calibration" or "test"


class BenignAnswer(BenignPrompt):
    answer: str
    scored: list[str]  # every text the supervisor scored while this answer was written


def half_of(text: str) -> str:
    return "calibration" if hash_bucket(text, 2) == 0 else "test"


def benign_prompts(data: Path, limit: int | None = None, completion_limit: int = 200) -> list[BenignPrompt]:
    """XSTest safe prompts and neutral ParaDetox sentences, shuffled; the first ``limit`` of them."""
    prompts: list[BenignPrompt] = []
    with (data / "xstest/xstest-prompts-dev.csv").open(encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            if row["label"] == "safe":
                prompts.append(BenignPrompt(id=f"xstest-{row.get('id', len(prompts))}", mode="chat",
                                            text=row["prompt"], half=half_of(row["prompt"])))
    neutral: list[str] = []
    with (data / "paradetox/paradetox.tsv").open(encoding="utf-8") as handle:
        for row in csv.DictReader(handle, delimiter="\t"):
            if row.get("neutral1") and len(row["neutral1"].split()) >= 6:
                neutral.append(row["neutral1"])
    rng = np.random.default_rng(11)
    for index in rng.permutation(len(neutral))[:completion_limit]:
        text = neutral[int(index)]
        prompts.append(BenignPrompt(id=f"paradetox-{int(index)}", mode="completion", text=text, half=half_of(text)))
    order = np.random.default_rng(12).permutation(len(prompts))  # both kinds in any prefix of the list
    return [prompts[int(i)] for i in order][:limit]


class RecordingScorer(BaseScorer):
    """Records every text it is asked to score and reports zero risk (so the loop never intervenes)."""

    name = "recording"

    def __init__(self) -> None:
        self.texts: list[str] = []
        self._lock = threading.Lock()

    def assess(self, texts: Sequence[str]) -> list[Assessment]:
        with self._lock:
            self.texts.extend(texts)
        return [Assessment(risk=0.0) for _ in texts]


def collect(primary_name: str, prompts: Sequence[BenignPrompt], out: Path, *, max_tokens: int = 48,
            temperature: float = 1.0, top_p: float = 0.9, seed: int = 0, policy: Policy | None = None) -> list[BenignAnswer]:
    """Benign answers and the texts the loop scored while writing them; cached in ``out`` (JSONL, resumable)."""
    from supervisor.api import Supervisor
    from supervisor.primaries import load_primary

    done: dict[str, BenignAnswer] = {}
    if out.is_file():
        for line in out.read_text(encoding="utf-8").splitlines():
            answer = BenignAnswer.model_validate_json(line)
            done[answer.id] = answer
    todo = [p for p in prompts if p.id not in done]
    if todo:
        primary = load_primary(primary_name)
        recorder = RecordingScorer()
        # what the primary writes is recorded, not the prompts: the conversation is not measured here
        quiet = (policy or Policy()).model_copy(update={"conversation_prior": 0.0, "conversation_action": "none"})
        supervisor = Supervisor(recorder, quiet)
        out.parent.mkdir(parents=True, exist_ok=True)
        with out.open("a", encoding="utf-8") as handle:
            for number, prompt in enumerate(todo):
                recorder.texts = []
                kwargs = {"max_tokens": max_tokens, "temperature": temperature, "top_p": top_p, "seed": seed + number}
                if prompt.mode == "chat":
                    result = supervisor.generate(primary, [{"role": "user", "content": prompt.text}], **kwargs)  # type: ignore[arg-type]
                else:
                    result = supervisor.generate(primary, prompt=prompt.text, **kwargs)  # type: ignore[arg-type]
                answer = BenignAnswer(**prompt.model_dump(), answer=result.text, scored=list(recorder.texts))
                handle.write(answer.model_dump_json() + "\n")
                handle.flush()
                done[answer.id] = answer
    return [done[p.id] for p in prompts]


def max_scores(answers: Sequence[BenignAnswer], score: dict[str, np.ndarray], index: dict[str, int]) -> np.ndarray:
    """Per answer (rows) and head (columns): the largest score any of its scored texts got."""
    heads = list(score)
    table = np.zeros((len(answers), len(heads)))
    for row, answer in enumerate(answers):
        ids = [index[t] for t in answer.scored] or [index[answer.answer]]
        for column, head in enumerate(heads):
            table[row, column] = float(score[head][ids].max())
    return table


def false_intervention_rate(maxima: np.ndarray, thresholds: Sequence[float]) -> float:
    """Share of answers where any head reached its threshold at least once."""
    if len(maxima) == 0:
        return 0.0
    return float((maxima >= np.asarray(thresholds)[None, :]).any(axis=1).mean())
