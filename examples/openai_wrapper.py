"""Supervise an OpenAI-compatible server through the official client: one changed line.

Start the local server with the embedded model first:

    python -m llama_cpp.server --model "$(python -c 'from supervisor.primaries.embedded import smollm2_path; print(smollm2_path())')" \
        --model_alias smollm2 --port 8080 --interrupt_requests false
    SUPERVISOR_OPENAI_URL=http://127.0.0.1:8080/v1 python examples/openai_wrapper.py
"""

from __future__ import annotations

import os

from openai import OpenAI

from supervisor.integrations.openai import supervise

URL = os.environ.get("SUPERVISOR_OPENAI_URL", "http://127.0.0.1:8080/v1")


def main() -> None:
    client = supervise(OpenAI(base_url=URL, api_key="not-needed"), scorer="lexical",
                       on_event=lambda e: print(f"\n  [{e.kind}: risk {e.risk:.2f}, removed {e.removed_text!r}]"))
    messages = [{"role": "user", "content": "Finish this rant: this whole thing is bullshit, you stupid"}]
    print("released:", end=" ", flush=True)
    stream = client.chat.completions.create(model="smollm2", messages=messages, stream=True, max_tokens=60,
                                            temperature=0.9, seed=3, stream_options={"include_usage": True})
    with stream:
        for chunk in stream:  # real ChatCompletionChunk objects, released text only
            if chunk.choices and chunk.choices[0].delta.content:
                print(chunk.choices[0].delta.content, end="", flush=True)
    print()
    report = stream.supervision
    print(f"stop: {report.stop_reason}; {len(report.attempts)} upstream request(s); usage over all of them: "
          f"{chunk.usage.completion_tokens if chunk.usage else '?'} completion tokens; "
          f"{len(report.events)} intervention(s)")

    completion = client.chat.completions.create(model="smollm2", messages=[{"role": "user", "content": "Say hello."}],
                                                max_tokens=20)
    print("non-streaming:", completion.choices[0].message.content, f"({completion.supervision.stop_reason})")


if __name__ == "__main__":
    main()
