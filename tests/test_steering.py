"""Continuous steering: the value of candidates, the control law, what a steered generation does and reports."""

from __future__ import annotations

import random
from collections.abc import Sequence

import numpy as np
import pytest
from helpers import EOS, ConstantScorer

from supervisor import Policy, Supervisor
from supervisor.controller import Controller
from supervisor.events import SteeringReport
from supervisor.primaries.base import LogitPrimary
from supervisor.scorers.lexical import ProfanityModel, profanity_model
from supervisor.steering import LexicalValue, VocabValue, last_words, steer, token_pieces

CHAT = [{"role": "user", "content": "tell me about your day"}]


def test_profanity_model_equals_alt_profanity_check() -> None:
    from profanity_check import predict_prob

    words = ("the park is open fuck you idiot shit hello assistant bitcoin hell kill FUCK !! 123 "
             "café naïve über you're don't").split()
    rng = random.Random(0)
    texts = ["", " ", "."] + [" ".join(rng.choices(words, k=rng.randint(1, 30))) for _ in range(300)]
    assert np.allclose(ProfanityModel().probabilities(texts), predict_prob(texts), atol=1e-12, rtol=0)


def test_last_words_keeps_the_whitespace_before_them() -> None:
    assert last_words(" the park is open", 2) == " is open"
    assert last_words("the park is open ", 1) == " open "
    assert last_words("one", 3) == "one"
    assert last_words("", 3) == ""


class WordPrimary(LogitPrimary):
    """A primary with a vocabulary of whole words and pieces that writes ``script`` (token texts) greedily, with
    ``alternatives`` as the runner-up at each step (logit 9 against 10)."""

    name = "words"
    context_length = 4096

    def __init__(self, vocabulary: Sequence[str], script: Sequence[str], alternatives: dict[int, str]) -> None:
        super().__init__()
        self.vocabulary = [*vocabulary, "<eos>"]
        self.script = [self.vocabulary.index(t) for t in script]
        self.alternatives = {step: self.vocabulary.index(t) for step, t in alternatives.items()}
        self._ids: list[int] = []
        self._start = 0

    @property
    def vocab_size(self) -> int:
        return len(self.vocabulary)

    @property
    def eos_token_ids(self) -> frozenset[int]:
        return frozenset({len(self.vocabulary) - 1})

    def chat_prompt(self, messages: Sequence[object]) -> list[int]:
        return []

    def completion_prompt(self, text: str) -> list[int]:
        return []

    def encode(self, text: str) -> list[int]:
        return []

    def decode(self, ids: Sequence[int]) -> str:
        return "".join(self.vocabulary[i] for i in ids if i < len(self.vocabulary) - 1)

    @property
    def context_ids(self) -> list[int]:
        return list(self._ids)

    def _logits(self) -> np.ndarray:
        step = len(self._ids)
        logits = np.full(self.vocab_size, -5.0)
        best = self.script[step] if step < len(self.script) else self.vocab_size - 1
        logits[best] = 10.0
        if step in self.alternatives:
            logits[self.alternatives[step]] = 9.0
        return logits

    def reset(self, ids: Sequence[int]) -> np.ndarray:
        self._ids = list(ids)
        return self._logits()

    def step(self, token_id: int) -> np.ndarray:
        self._ids.append(token_id)
        return self._logits()

    def truncate(self, length: int) -> np.ndarray:
        self._ids = self._ids[:length]
        return self._logits()


VOCAB = [" you", " are", " a", " fucking", " lovely", " person", ".", " hel", "l", "o", " there", " bit", "c",
         "oin", "ch", " ass", " assist"]


def test_steering_takes_the_benign_runner_up_over_a_profane_favourite() -> None:
    primary = WordPrimary(VOCAB, [" you", " are", " a", " fucking", " person", "."], {3: " lovely"})
    policy = Policy(checkpoint_every=64, first_checkpoint_tokens=64, window_tokens=64)
    result = Supervisor(scorer=ConstantScorer(0.0), policy=policy).generate(primary, CHAT, max_tokens=10,
                                                                           temperature=0.0)
    assert result.text == " you are a lovely person."
    assert result.events == []  # no rollback: the steering acted before anything was measured
    report = result.steering
    assert report.value == "lexical" and report.reordered == 1 and report.steps == 7
    assert report.max_value > 0.9 and report.mean_gain == pytest.approx(policy.steering_gain)

    off = Supervisor(scorer=ConstantScorer(0.0), policy=policy.model_copy(update={"steering": "off"}))
    assert off.generate(primary, CHAT, max_tokens=10, temperature=0.0).text == " you are a fucking person."


def test_a_benign_word_whose_start_reads_profane_is_not_broken() -> None:
    """ "hel" + "l" on the way to "hello", "bit" + "c" on the way to "bitcoin": the word in progress is not
    valued as the profane word it spells so far."""
    primary = WordPrimary(VOCAB, [" hel", "l", "o", " there", " bit", "c", "oin", "."], {1: ".", 5: "."})
    policy = Policy(checkpoint_every=64, first_checkpoint_tokens=64, window_tokens=64, steering_gain=16.0)
    result = Supervisor(scorer=ConstantScorer(0.0), policy=policy).generate(primary, CHAT, max_tokens=10,
                                                                           temperature=0.0)
    assert result.text == " hello there bitcoin."
    assert result.steering.reordered == 0


def test_a_word_piece_that_completes_a_profane_word_is_steered() -> None:
    primary = WordPrimary(VOCAB, [" bit", "ch", "."], {1: "c"})
    policy = Policy(checkpoint_every=64, first_checkpoint_tokens=64, window_tokens=64)
    result = Supervisor(scorer=ConstantScorer(0.0), policy=policy).generate(primary, CHAT, max_tokens=3,
                                                                           temperature=0.0)
    assert result.text.startswith(" bitc") and result.steering.reordered == 1


def test_a_candidate_that_starts_a_word_is_valued_as_that_word() -> None:
    primary = WordPrimary(VOCAB, [" you", " ass"], {})
    value = LexicalValue(primary)

    class View:
        ids = [primary.vocabulary.index(" you")]

        def piece(self, token_id: int) -> str:
            return primary.vocabulary[token_id]

    candidates = np.array([primary.vocabulary.index(" ass"), primary.vocabulary.index(" assist")])
    risky, benign = value.values(View(), candidates)
    assert risky > 0.5 > benign


def test_steer_moves_candidates_by_gain_times_value_above_the_lowest() -> None:
    class Fixed:
        name = "fixed"

        def values(self, response: object, candidates: np.ndarray) -> np.ndarray:
            return np.array([{0: 0.1, 1: 0.9, 2: 0.5}[int(c)] for c in candidates])

    class View:
        ids: list[int] = []

        def piece(self, token_id: int) -> str:
            return ""

    logits = np.array([1.0, 3.0, 2.0, -50.0])
    report = SteeringReport()
    steer(logits, View(), Fixed(), gain=10.0, top_k=3, report=report)
    assert logits.tolist() == pytest.approx([1.0, 3.0 - 8.0, 2.0 - 4.0, -50.0])
    assert report.reordered == 1 and report.steps == 1 and report.max_value == pytest.approx(0.9)


def test_the_gain_rises_with_the_filtered_risk_to_its_maximum_at_the_act_threshold() -> None:
    policy = Policy(steering_gain=4.0, steering_gain_max=12.0, act_threshold=0.6, watch_threshold=0.3)
    controller = Controller(policy)
    gains = [controller.steering_gain(risk) for risk in (0.0, 0.15, 0.3, 0.6, 0.9)]
    assert gains == pytest.approx([4.0, 6.0, 8.0, 12.0, 12.0])
    with pytest.raises(ValueError, match="steering_gain"):
        Policy(steering_gain=5.0, steering_gain_max=4.0)


def test_vocab_value_is_one_table_over_the_vocabulary() -> None:
    primary = WordPrimary(VOCAB, [" you"], {})
    table = VocabValue(primary).table
    assert table.shape == (primary.vocab_size,)
    assert table[primary.vocabulary.index(" fucking")] > 0.9 > table[primary.vocabulary.index(" lovely")]
    assert len(token_pieces(primary)) == primary.vocab_size


def test_a_steered_retry_uses_no_heat_and_no_token_penalties() -> None:
    """retry='steer' (the default): after a rollback the retry runs under the steering and the scorer's rerank,
    without the hotter temperature and the penalties on the removed words that made broken words."""
    from helpers import KeywordScorer

    from supervisor.logit_engine import LogitEngine, Request
    from supervisor.sampling import SamplingParams

    primary = WordPrimary(VOCAB, [" you", " are", " a", " fucking", " person", "."], {3: " lovely"})
    request = Request(messages=None, prompt="Go.", max_tokens=8, sampling=SamplingParams(temperature=1.0, seed=0))
    for retry, penalised in (("steer", False), ("heat", True)):
        policy = Policy(checkpoint_every=4, first_checkpoint_tokens=4, window_tokens=8, retry=retry, steering="off")
        session = LogitEngine(primary, KeywordScorer(word="fucking", step=1.0), policy, request)
        text = "".join(session.run())
        assert session.result is not None and session.result.count("rollback") >= 1
        assert "fucking" not in text
        assert bool(session._penalties) is penalised


def test_unsupervised_generation_is_not_steered() -> None:
    primary = WordPrimary(VOCAB, [" you", " are", " a", " fucking", " person", "."], {3: " lovely"})
    result = Supervisor(scorer=ConstantScorer(0.0)).generate(primary, CHAT, max_tokens=10, temperature=0.0,
                                                             supervise=False)
    assert "fucking" in result.text and result.steering.steps == 0 and EOS
    assert profanity_model() is profanity_model()
