"""A supervised chat model in an LCEL chain: only checked text streams out; unsafe text is rolled back.

Needs the local server (see examples/openai_wrapper.py) at SUPERVISOR_OPENAI_URL.
"""

from __future__ import annotations

import os

from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_openai import ChatOpenAI

from supervisor.integrations.langchain import SupervisedChatModel

URL = os.environ.get("SUPERVISOR_OPENAI_URL", "http://127.0.0.1:8080/v1")


def main() -> None:
    inner = ChatOpenAI(base_url=URL, api_key="not-needed", model="smollm2", temperature=0.9, seed=3, max_tokens=60)
    model = SupervisedChatModel(inner=inner, scorer="lexical",
                                on_event=lambda e: print(f"\n  [{e.kind}: removed {e.removed_text!r}]"))
    chain = ChatPromptTemplate.from_messages([("user", "Finish this rant: {start}")]) | model
    print("released:", end=" ", flush=True)
    last = None
    for chunk in chain.stream({"start": "this whole thing is bullshit, you stupid"}):
        print(chunk.text, end="", flush=True)
        last = chunk
    print()
    report = last.response_metadata["supervision"] if last is not None else {}
    print(f"stop: {report.get('stop_reason')}; {len(report.get('attempts', []))} upstream request(s), "
          f"{len(report.get('events', []))} intervention(s)")
    answer = (ChatPromptTemplate.from_messages([("user", "{q}")]) | model | StrOutputParser()).invoke(
        {"q": "Name two planets."})
    print("invoke:", answer)


if __name__ == "__main__":
    main()
