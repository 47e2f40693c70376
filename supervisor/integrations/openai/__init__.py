"""A drop-in wrapper around the OpenAI client: same calls, same return types, supervised text.

```python
from openai import OpenAI
from supervisor.integrations.openai import supervise

client = supervise(OpenAI(), scorer="lexical")
for chunk in client.chat.completions.create(model="gpt-4o-mini", messages=[...], stream=True):
    print(chunk.choices[0].delta.content or "", end="")
```

``chat.completions.create`` (sync and async, ``stream=True`` or not) and ``responses.create`` are
supervised at chunk level (see :mod:`supervisor.chunk_engine`); every other attribute of the
client passes through untouched. The upstream request is always streamed, so that the supervisor
can abort it; the caller receives real ``ChatCompletionChunk`` / ``ChatCompletion`` objects that
carry only released (checked) text. What the supervisor did is on ``.supervision`` (a
:class:`~supervisor.events.GenerationResult`: events, attempts, usage) of the ``ChatCompletion``, of
the last streamed chunk, and of the stream object; ``on_event`` is called for each intervention.
"""

from __future__ import annotations

from supervisor.integrations.openai.client import (
    AsyncSupervisedChatStream,
    AsyncSupervisedOpenAI,
    SupervisedChatStream,
    SupervisedOpenAI,
    supervise,
)

__all__ = ["supervise", "SupervisedOpenAI", "AsyncSupervisedOpenAI", "SupervisedChatStream",
           "AsyncSupervisedChatStream"]
