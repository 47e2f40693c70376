"""Watch any LangChain chat model with a callback; stop its stream when the trajectory turns unsafe.

A callback only observes: the tokens before the halt have reached you. To hold text back and roll it
back, use SupervisedChatModel (examples/langchain_wrapper.py). Needs the local server (see
examples/openai_wrapper.py) at SUPERVISOR_OPENAI_URL.
"""

from __future__ import annotations

import os

from langchain_openai import ChatOpenAI

from supervisor.integrations.langchain import SupervisorCallbackHandler, SupervisorHalt

URL = os.environ.get("SUPERVISOR_OPENAI_URL", "http://127.0.0.1:8080/v1")


def main() -> None:
    handler = SupervisorCallbackHandler(scorer="lexical", policy={"act_threshold": 0.5})
    model = ChatOpenAI(base_url=URL, api_key="not-needed", model="smollm2", temperature=0.9, seed=3,
                       max_tokens=60)
    print("released:", end=" ", flush=True)
    try:
        for chunk in model.stream("Finish this rant: this whole thing is bullshit, you stupid",
                                  config={"callbacks": [handler]}):
            print(chunk.text, end="", flush=True)
        print()
        outcome = "finished"
    except SupervisorHalt as halt:
        print(f"\n  [halted: {halt}]")
        outcome = "halted"
    for run_id, result in handler.results.items():
        print(f"stop: {outcome} (run {run_id}: {result.stop_reason}, {len(result.trace)} checkpoints, "
              f"{len(result.events)} intervention(s))")


if __name__ == "__main__":
    main()
