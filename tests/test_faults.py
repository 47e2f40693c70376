"""Faults that must not spread: a cancelled generation, hung or broken scorers, and bad API arguments."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Sequence

import numpy as np
import pytest

from supervisor import Policy, Supervisor
from supervisor.assessment import Assessment
from supervisor.errors import InputError, ScorerError
from supervisor.scorers.base import BaseScorer, aassess_checked, assess_checked
from tests.helpers import ConstantScorer, FailingScorer, ScriptedPrimary
from tests.test_chunk_engine import ScriptedChunkPrimary

LONG = " ".join(["the park is open and the weather is mild"] * 60)


class SlowPrimary(ScriptedPrimary):
    """A scripted primary that takes ``delay_s`` per decoded token (a real model's pace)."""

    def __init__(self, script: str, delay_s: float = 0.01) -> None:
        super().__init__(script)
        self.delay_s = delay_s

    def step(self, token_id: int) -> np.ndarray:
        time.sleep(self.delay_s)
        return super().step(token_id)


def test_cancelling_an_async_generation_stops_the_decode_and_frees_the_primary() -> None:
    primary = SlowPrimary(LONG)
    sup = Supervisor(scorer=ConstantScorer(0.0))

    async def cancelled_by_timeout() -> None:
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(sup.agenerate(primary, prompt="Go.", max_tokens=2000), 0.3)

    async def cancelled_task() -> None:
        task = asyncio.create_task(sup.agenerate(primary, prompt="Go.", max_tokens=2000))
        await asyncio.sleep(0.3)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    for case in (cancelled_by_timeout, cancelled_task):
        asyncio.run(case())
        decoded = primary.evaluated_tokens
        time.sleep(0.2)
        assert primary.evaluated_tokens == decoded, f"{case.__name__}: the decode went on after cancellation"
        # the primary is free at once: no PrimaryBusyError
        assert sup.generate(primary, prompt="Go.", max_tokens=5).text


def test_hung_scorer_calls_do_not_starve_later_healthy_ones() -> None:
    hung = FailingScorer(fail_after=0, hang_s=3.0)
    for _ in range(6):  # more hung calls than the old shared pool had threads (4)
        with pytest.raises(ScorerError, match="did not answer within"):
            assess_checked(hung, ["x"], 0.05)
    healthy = ConstantScorer(0.0)
    started = time.perf_counter()
    assert assess_checked(healthy, ["x"], 1.0)[0].risk == 0.0
    assert time.perf_counter() - started < 0.5
    result = Supervisor(scorer=healthy, policy={"scorer_timeout_s": 1.0}).generate(
        ScriptedPrimary("All good here."), prompt="Go.", max_tokens=20)
    assert result.stop_reason == "stop" and result.text == "All good here."


def test_async_hosted_run_with_a_hung_scorer_ends_when_it_halts() -> None:
    """The generation halts at the scorer timeout; nothing then waits for the hung call (the event loop's
    executor used to be joined by asyncio.run, for as long as the scorer hung)."""
    primary = ScriptedChunkPrimary([LONG])
    sup = Supervisor(scorer=FailingScorer(fail_after=0, hang_s=5.0), policy={"scorer_timeout_s": 0.2})

    async def run() -> str:
        result = await sup.agenerate(primary, [{"role": "user", "content": "Go."}], max_tokens=200)
        return result.stop_reason

    started = time.perf_counter()
    assert asyncio.run(run()) == "scorer_error"
    assert time.perf_counter() - started < 2.0


class NaNScorer(BaseScorer):
    """A custom scorer with a bug: NaN risk (built without validation, as numpy code can)."""

    name = "nan"

    def assess(self, texts: Sequence[str]) -> list[Assessment]:
        return [Assessment.model_construct(risk=math.nan, categories={"toxicity": math.nan}) for _ in texts]


def test_a_non_finite_measurement_is_a_scorer_error_and_fails_closed() -> None:
    with pytest.raises(ScorerError, match="outside"):
        assess_checked(NaNScorer(), ["x"], None)
    with pytest.raises(ScorerError, match="outside"):
        asyncio.run(aassess_checked(NaNScorer(), ["x"], None))
    result = Supervisor(scorer=NaNScorer()).generate(ScriptedPrimary("Some text here."), prompt="Go.", max_tokens=30)
    assert result.stop_reason == "scorer_error"
    assert result.text == Policy().halt_message  # nothing unchecked was released


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"seed": -1}, "seed is -1; accepted"),
        ({"seed": 2**70}, "seed is"),
        ({"messages": [{"role": "user", "content": "hi \ud800 there"}]}, "lone surrogate"),
        ({"prompt": "broken \udcff text"}, "lone surrogate"),
        ({"temperature": math.nan}, "temperature is nan"),
    ],
)
def test_bad_generation_arguments_raise_the_library_input_error(arguments: dict[str, object], message: str) -> None:
    sup = Supervisor(scorer=ConstantScorer(0.0))
    call: dict[str, object] = {"max_tokens": 5}
    if "messages" not in arguments and "prompt" not in arguments:
        call["prompt"] = "Go."
    with pytest.raises(InputError, match=message):
        sup.generate(ScriptedPrimary("ok"), **{**call, **arguments})  # type: ignore[arg-type]
