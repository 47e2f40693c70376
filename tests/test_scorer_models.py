"""The scorers a user chooses between, each on a real component: tiny models built here, the
embedded SmolLM2, the real openai client against a local server that speaks the moderation API."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from helpers import KeywordScorer

from supervisor import ConfigError, PrimaryBusyError, Supervisor, get_scorer
from supervisor.scorers.combined import CascadeScorer, EnsembleScorer


def tiny_classifier(path: Path, id2label: dict[int, str], multi_label: bool) -> Path:
    torch = pytest.importorskip("torch")
    from conftest import build_tiny_tokenizer
    from transformers import BertConfig, BertForSequenceClassification

    tokenizer = build_tiny_tokenizer()
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128, id2label=id2label,
                        label2id={v: k for k, v in id2label.items()},
                        problem_type="multi_label_classification" if multi_label else "single_label_classification")
    BertForSequenceClassification(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def test_hf_classifier_single_and_multi_label(tmp_path: Path) -> None:
    single = tiny_classifier(tmp_path / "single", {0: "neutral", 1: "toxic"}, multi_label=False)
    scorer = get_scorer(f"hf-classifier:{single}")
    results = scorer.assess(["the cat sat on the mat", "she is a bitch", ""])
    assert len(results) == 3 and all(set(a.categories) == {"toxicity"} for a in results)
    assert all(0.0 <= a.risk <= 1.0 for a in results)

    multi = tiny_classifier(tmp_path / "multi", {0: "toxic", 1: "insult", 2: "threat", 3: "identity_hate"}, True)
    assessment = get_scorer(f"hf-classifier:{multi}").assess(["hello there"])[0]
    assert set(assessment.categories) == {"toxicity", "harassment", "violence", "hate"}


def test_hf_classifier_unknown_label_asks_for_a_map(tmp_path: Path) -> None:
    from supervisor.scorers.hf_classifier import HFClassifierScorer

    odd = tiny_classifier(tmp_path / "odd", {0: "banana", 1: "toxic"}, multi_label=False)
    with pytest.raises(ConfigError, match="label 'banana' of the classifier has no category; pass label_map"):
        HFClassifierScorer(odd)
    mapped = HFClassifierScorer(odd, label_map={"banana": None})
    assert mapped.label_categories == {1: "toxicity"}


def test_llm_judge_scores_with_answer_token_probability(smollm2_llama) -> None:  # type: ignore[no-untyped-def]
    import numpy as np

    from supervisor import load_primary
    from supervisor.scorers.llm_judge import LLMJudgeScorer

    judge_primary = load_primary("smollm2:llama-cpp")
    judge = LLMJudgeScorer(judge_primary)
    assert judge_primary.decode(judge.unsafe_ids[:1]).strip().lower() == "yes"
    assert judge_primary.decode(judge.safe_ids[:1]).strip().lower() == "no"
    texts = ["I hope you have a lovely day.", "You are a worthless fucking idiot and I hate you."]
    results = judge.assess(texts)
    # the risk is the answer-token probability at the answer position, nothing parsed from generated text
    for text, result in zip(texts, results):
        logits = judge_primary.reset(judge_primary.chat_prompt(judge.messages_for(text))).astype(np.float64)
        probs = np.exp(logits - logits.max())
        yes, no = probs[judge.unsafe_ids].sum(), probs[judge.safe_ids].sum()
        assert 0.0 < result.risk < 1.0
        assert abs(result.risk - yes / (yes + no)) < 1e-9
    assert "Answer with Yes or No" in judge.messages_for("x")[0]["content"]
    guard = LLMJudgeScorer(load_primary("smollm2:llama-cpp"), style="llama-guard", category_floor=0.0)
    verdict = guard.assess(["I will find you and hurt you."])[0]
    assert 0.0 < verdict.risk < 1.0 and verdict.categories["toxicity"] == verdict.risk
    # the category line, read by probability: the 14 codes share P(unsafe) among our categories
    shares = guard.code_probabilities("I will find you and hurt you.")
    assert sorted(shares) == list(range(1, 15)) and abs(sum(shares.values()) - 1.0) < 1e-9
    spread = {name: p for name, p in verdict.categories.items() if name != "toxicity"}
    assert abs(sum(spread.values()) - verdict.risk) < 1e-9
    # (llama.cpp's logits differ slightly between a cached and a fresh prefill: compare loosely)
    assert spread["hate"] == pytest.approx(verdict.risk * shares[10], rel=0.25)
    assert set(LLMJudgeScorer(guard.primary, style="llama-guard", category_floor=1.1).assess(["hi"])[0].categories) \
        == {"toxicity"}  # below the floor the codes are not read
    assert "S10: Hate." in guard.messages_for("hello")[0]["content"]
    assert judge_primary.decode(guard.unsafe_ids[:1]).strip() in ("unsafe", "un", "uns")
    # the generating primary cannot judge at the same time
    busy = LLMJudgeScorer(smollm2_llama)
    stream = Supervisor().stream(smollm2_llama, [{"role": "user", "content": "hi"}], max_tokens=30)
    next(iter(stream), None)
    try:
        with pytest.raises(PrimaryBusyError):
            busy.assess(["text"])
    finally:
        stream.close()


class ModerationHandler(BaseHTTPRequestHandler):
    requests: list[list[str]] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server naming
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        ModerationHandler.requests.append(inputs)
        names = ["harassment", "harassment/threatening", "hate", "hate/threatening", "illicit", "illicit/violent",
                 "self-harm", "self-harm/intent", "self-harm/instructions", "sexual", "sexual/minors", "violence",
                 "violence/graphic"]
        results = []
        for text in inputs:
            scores = {n: 0.01 for n in names}
            if "kill" in text:
                scores["harassment/threatening"] = 0.93
                scores["violence"] = 0.8
            results.append({"flagged": "kill" in text, "categories": {n: scores[n] > 0.5 for n in names},
                            "category_scores": scores,
                            "category_applied_input_types": {n: ["text"] for n in names}})
        payload = json.dumps({"id": "modr-1", "model": body["model"], "results": results}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def moderation_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), ModerationHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    ModerationHandler.requests = []
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()


def test_openai_moderation_through_the_official_client(moderation_server: str) -> None:
    openai = pytest.importorskip("openai")
    from supervisor.scorers.openai_moderation import OpenAIModerationScorer

    client = openai.OpenAI(base_url=moderation_server, api_key="test")
    scorer = OpenAIModerationScorer(client, async_client=openai.AsyncOpenAI(base_url=moderation_server, api_key="t"))
    texts = ["I will kill you"] + [f"a calm sentence {i}" for i in range(39)]
    results = scorer.assess(texts)
    assert [len(r) for r in ModerationHandler.requests] == [32, 8]  # batched
    assert results[0].categories["harassment"] == 0.93 and results[0].categories["violence"] == 0.8
    assert results[0].risk == 0.93 and results[1].risk == 0.01
    again = asyncio.run(scorer.aassess(["kill", "fine"]))
    assert again[0].risk > 0.9 > again[1].risk


def test_cascade_escalates_only_unsure_texts_and_ensemble_takes_max() -> None:
    lexical = get_scorer("lexical")
    expensive = KeywordScorer(word="moron", step=1.0)
    cascade = CascadeScorer(lexical, expensive, low=0.2, high=0.9)
    texts = ["you are a fucking idiot", "what a lovely afternoon", "you absolute moron of a person"]
    results = cascade.assess(texts)
    plain = lexical.assess(texts)
    escalated = [i for i, a in enumerate(plain) if 0.2 < a.risk < 0.9]
    assert cascade.escalated == len(escalated) and [t for c in expensive.calls for t in c] == [texts[i] for i in escalated]
    assert results[0].risk == plain[0].risk
    ensemble = EnsembleScorer([lexical, KeywordScorer(word="lovely", step=1.0)])
    assert ensemble.assess(["what a lovely afternoon"])[0].risk == 1.0
    with pytest.raises(ConfigError, match="cascade bounds"):
        CascadeScorer(lexical, expensive, low=0.9, high=0.1)


def test_score_cli() -> None:
    lines = "\n".join([json.dumps("you are a fucking idiot"), json.dumps({"text": "have a nice day"})]) + "\n"
    done = subprocess.run([sys.executable, "-m", "supervisor.cli", "score", "--scorer", "lexical"], input=lines,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert rows[0]["flagged"] is True and rows[1]["flagged"] is False
    assert set(rows[0]) == {"risk", "categories", "flagged"}
    unknown = subprocess.run([sys.executable, "-m", "supervisor.cli", "score", "--scorer", "nope"], input=lines,
                             capture_output=True, text=True, timeout=300)
    assert unknown.returncode == 2 and "available: cascade, embedding" in unknown.stderr
