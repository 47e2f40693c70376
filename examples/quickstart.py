"""Supervise the embedded SmolLM2 on a provocative prompt; print what was released and every intervention.

    python examples/quickstart.py
"""

from __future__ import annotations

import supervisor


def main() -> None:
    sup = supervisor.Supervisor(policy={"max_rollbacks": 3})
    primary = supervisor.load_primary("smollm2")
    prompt = "This whole thing is bullshit thats a"

    print("released:", end=" ", flush=True)
    stream = sup.stream(primary, prompt=prompt, max_tokens=40, seed=0, temperature=1.0)
    for delta in stream:
        print(delta, end="", flush=True)
    print()
    result = stream.result
    assert result is not None
    for event in result.events:
        print(f"  {event.kind} at token {event.position}: risk {event.risk:.2f}, removed {event.removed_text!r}")
    steering = result.steering
    print(f"steering ({steering.value}): {steering.reordered} of {steering.steps} tokens steered away from their "
          f"favourite, gain {steering.mean_gain:.1f} on average")
    print(f"stop: {result.stop_reason}; {result.usage.completion_tokens} tokens released, "
          f"{result.usage.discarded_tokens} discarded; {result.timings.total_s:.2f} s")


if __name__ == "__main__":
    main()
