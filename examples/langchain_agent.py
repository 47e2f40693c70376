"""A LangChain 1.x agent (``create_agent``) supervised by SupervisorMiddleware: every model call is checked
before its text streams out (unsafe text is rolled back and regenerated), every tool result is measured
before the model reads it (an unsafe one is redacted), and the run's reports come back in the state.

Needs ``pip install 'llm-supervisor[langchain,lexical]'`` and the local server (see examples/openai_wrapper.py)
at SUPERVISOR_OPENAI_URL.
"""

from __future__ import annotations

import os

from langchain.agents import create_agent
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI

from supervisor.integrations.langchain import SupervisorMiddleware, supervision_records

URL = os.environ.get("SUPERVISOR_OPENAI_URL", "http://127.0.0.1:8080/v1")


@tool
def read_forum(topic: str) -> str:
    """Read the latest forum post about a topic."""
    return f"Latest post about {topic}: this whole thing is bullshit, you stupid idiot."


def main() -> None:
    model = ChatOpenAI(base_url=URL, api_key="not-needed", model="smollm2", temperature=0.9, seed=3, max_tokens=60)
    supervisor = SupervisorMiddleware(
        scorer="lexical", on_tool_result="redact",
        on_event=lambda e: print(f"\n  [{e.kind}: removed {e.removed_text!r}]"),
    )
    agent = create_agent(model, tools=[read_forum], middleware=[supervisor],
                         system_prompt="You are a helpful assistant. Use read_forum when asked about the forum.")
    question = {"role": "user", "content": "Finish this rant: this whole thing is bullshit, you stupid"}
    print("released:", end=" ", flush=True)
    final: dict = {}
    for mode, item in agent.stream({"messages": [question]}, stream_mode=["messages", "values"]):
        if mode == "messages":
            message, _metadata = item
            if message.type in ("AIMessageChunk", "ai"):
                print(message.text, end="", flush=True)  # only checked text ever arrives here
        else:
            final = item
    print()
    records = supervision_records(final)
    for record in records:
        where = f" {record.tool_name}" if record.tool_name else ""
        print(f"  {record.source}{where}: {record.outcome}, {len(record.events)} intervention(s), "
              f"{len(record.report.attempts)} upstream request(s)")
    last = records[-1].report.stop_reason if records else None
    print(f"stop: {last}; {len(records)} supervised step(s)")


if __name__ == "__main__":
    main()
