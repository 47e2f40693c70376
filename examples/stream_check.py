"""Your own streaming loop, any SDK: feed each delta to a StreamCheck and send on only what it lets through.

Here the stream is the plain (unsupervised) OpenAI client's against an OpenAI-compatible server; any iterator of
text deltas works the same way (an SSE handler, a websocket, another vendor's SDK):

    SUPERVISOR_OPENAI_URL=http://127.0.0.1:8080/v1 python examples/stream_check.py
"""

from __future__ import annotations

import os

from openai import OpenAI

from supervisor import StreamCheck

URL = os.environ.get("SUPERVISOR_OPENAI_URL", "http://127.0.0.1:8080/v1")


def main() -> None:
    client = OpenAI(base_url=URL, api_key="not-needed")
    messages = [{"role": "user", "content": "Finish this rant: this whole thing is bullshit, you stupid"}]
    stream = client.chat.completions.create(model="smollm2", messages=messages, stream=True, max_tokens=60,
                                            temperature=0.9, seed=3)
    check = StreamCheck(scorer="lexical", on_event=lambda e: print(f"\n  [{e.kind}: risk {e.risk:.2f}]"))
    print("released:", end=" ", flush=True)
    with stream:
        for chunk in stream:
            delta = chunk.choices[0].delta.content if chunk.choices else None
            checked = check.feed(delta or "")
            print(checked.text, end="", flush=True)  # checked text only; never taken back
            if checked.stopped:
                break  # unsafe: leaving the with block closes the upstream request
        else:
            print(check.end().text, end="", flush=True)
    print()
    report = check.result
    assert report is not None
    print(f"stop: {report.stop_reason}; {len(report.events)} intervention(s); "
          f"{report.usage.scorer_calls} scorer calls")

    # Given the conversation the stream answers, the check measures it first: under conversation_action="refuse"
    # an unsafe one is answered with a refusal before any of the stream is shown (here, before the request is sent).
    guarded = StreamCheck(scorer="lexical", policy={"conversation_action": "refuse"}, conversation=messages)
    opening = guarded.start()
    if opening.stopped:
        print(f"refused before the request: {opening.text}")


if __name__ == "__main__":
    main()
