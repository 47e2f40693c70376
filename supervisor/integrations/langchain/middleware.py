"""SupervisorMiddleware: every model call of a LangChain 1.x agent (``langchain.agents.create_agent``)
supervised, and every tool result measured before it enters the conversation.

- Model calls go through :class:`SupervisedChatModel` (the chunk engine: hold back, roll back, re-prompt,
  halt; ``logit_bias`` when the model is ``ChatOpenAI``; full logit control when the agent's model is a
  ``SupervisedChatModel`` around a local primary). Only released, checked text reaches
  ``agent.stream(..., stream_mode="messages")``: the wrapped model's own raw calls are tagged ``nostream``.
- A halted model call ends the loop: its tool calls are dropped, so the last ``AIMessage`` ends with the
  policy's halt message and has no ``tool_calls``.
- Tool results are measured as text (windows and a whole-text check, like an answer); an unsafe one is
  redacted, ends the run, or is let through, per ``on_tool_result``.
- Each run's reports are in the agent state under ``"supervision"`` (a list of
  :class:`SupervisionRecord` dumps, one per model call and per tool result; read them with
  :func:`supervision_records`): they belong to that run (thread), so concurrent runs never mix.
"""

from __future__ import annotations

import operator
import threading
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

from langchain.agents.middleware import (
    AgentMiddleware,
    AgentState,
    ExtendedModelResponse,
    ModelRequest,
    ModelResponse,
    hook_config,
)
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, AnyMessage, BaseMessage, ToolMessage
from langgraph.prebuilt.tool_node import ToolCallRequest
from langgraph.runtime import Runtime
from langgraph.types import Command
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from typing_extensions import NotRequired

from supervisor.errors import InputError
from supervisor.events import EventObserver, GenerationResult, InterventionEvent
from supervisor.integrations.langchain.chat_model import SupervisedChatModel
from supervisor.policy import Policy, as_policy
from supervisor.scorers import Scorer, get_scorer
from supervisor.stream_check import StreamCheck, observe_only

#: Stop reasons of a report whose text may go on (anything else ends the agent's loop).
_PASSED_STOP_REASONS = frozenset({"stop", "length"})
#: Wrapped models kept per middleware (a dynamic-model middleware may hand over a new model per call).
_MODEL_CACHE_SIZE = 32

ToolResultPolicy = Literal["redact", "halt", "allow"]


class AgentSupervisionSettings(BaseModel):
    """What :class:`SupervisorMiddleware` does beyond the policy (which governs every model call)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    on_tool_result: ToolResultPolicy = Field(
        default="redact",
        description=(
            "An unsafe tool result: 'redact' replaces its content with tool_result_notice and the agent goes on "
            "(the model sees that the tool's answer was withheld); 'halt' redacts it too and ends the run with "
            "the policy's halt message before the model is called again; 'allow' lets it through unchanged and "
            "only records it. Default 'redact': the harmful text never enters the conversation, and the agent "
            "can still answer."
        ),
    )
    tool_result_notice: str = Field(
        default="[tool result withheld: the supervisor flagged it as unsafe]", min_length=1,
        description="Content of a redacted tool result, as the model and the state see it.",
    )


class SupervisionRecord(BaseModel):
    """One supervised step of an agent run: a model call or a tool result."""

    source: Literal["model_call", "tool_result"]
    outcome: Literal["passed", "halted", "redacted", "allowed_unsafe"] = Field(
        description=(
            "passed: checked and safe (a model call may still have been rolled back or re-prompted: see "
            "report.events); halted: the run ends here; redacted: an unsafe tool result was withheld; "
            "allowed_unsafe: an unsafe tool result let through by on_tool_result='allow'."
        ),
    )
    tool_name: str | None = Field(default=None, description="The tool, for a tool result.")
    tool_call_id: str | None = Field(default=None, description="The tool call, for a tool result.")
    report: GenerationResult = Field(
        description="The supervision report (events, trace, attempts, usage) of that step."
    )

    @property
    def events(self) -> list[InterventionEvent]:
        return self.report.events


class SupervisedAgentState(AgentState[Any]):
    """The agent state with the run's supervision records (JSON dumps of :class:`SupervisionRecord`)."""

    supervision: NotRequired[Annotated[list[dict[str, Any]], operator.add]]


def supervision_records(state: Mapping[str, Any]) -> list[SupervisionRecord]:
    """The supervision records of an agent run, from its final state (what ``invoke`` returns) or any
    state snapshot. In a thread with a checkpointer they accumulate over the thread's runs."""
    return [SupervisionRecord.model_validate(record) for record in state.get("supervision") or []]


def _report_of(message: BaseMessage) -> GenerationResult | None:
    report = message.response_metadata.get("supervision") if isinstance(message, AIMessage) else None
    return GenerationResult.model_validate(report) if isinstance(report, dict) else None


def _halted_message(message: AIMessage, content: Any) -> AIMessage:
    """``message`` as the end of the run: the same id (so a stream does not show it twice), no tool calls."""
    return AIMessage(content=content, id=message.id, name=message.name,
                     response_metadata=message.response_metadata, usage_metadata=message.usage_metadata)


class SupervisorMiddleware(AgentMiddleware[SupervisedAgentState, Any, Any]):
    """Supervises a LangChain 1.x agent: each model call through the supervisor's chunk engine (rollback,
    re-prompt, ``logit_bias`` where the model has it, halt), each tool result measured before the model
    reads it. Put it last in ``middleware=[...]`` so that it wraps the model call itself.

    ``scorer``: name or :class:`~supervisor.scorers.Scorer` (default: the default scorer);
    ``policy``: :class:`~supervisor.Policy`, dict of its fields or path; ``on_tool_result``: see
    :class:`AgentSupervisionSettings`; ``on_event``: called with every intervention, as it happens.
    """

    state_schema = SupervisedAgentState

    def __init__(
        self,
        scorer: str | Scorer | None = None,
        policy: Policy | str | Path | dict[str, Any] | None = None,
        *,
        on_tool_result: ToolResultPolicy = "redact",
        tool_result_notice: str | None = None,
        on_event: EventObserver | None = None,
    ) -> None:
        super().__init__()
        given: dict[str, Any] = {"on_tool_result": on_tool_result}
        if tool_result_notice is not None:
            given["tool_result_notice"] = tool_result_notice
        try:
            self.settings = AgentSupervisionSettings(**given)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            raise InputError(
                f"SupervisorMiddleware: {problems} (on_tool_result accepts 'redact', 'halt' or 'allow'; "
                f"tool_result_notice a non-empty string)"
            ) from None
        self.scorer: Scorer = get_scorer(scorer)
        self.policy: Policy = as_policy(policy)
        self.on_event = on_event
        self._tool_result_policy = observe_only(self.policy)
        self._models: OrderedDict[int, tuple[BaseChatModel, SupervisedChatModel]] = OrderedDict()
        self._models_lock = threading.Lock()

    # -- model calls --------------------------------------------------------------------------------
    def supervised_model(self, model: BaseChatModel) -> SupervisedChatModel:
        """The supervised stand-in for ``model`` (made once per model object and reused)."""
        with self._models_lock:
            cached = self._models.get(id(model))
            if cached is not None and cached[0] is model:
                self._models.move_to_end(id(model))
                return cached[1]
        if isinstance(model, SupervisedChatModel):  # e.g. around a local primary: supervise once, with ours
            own_fields = set(SupervisedChatModel.model_fields) - set(BaseChatModel.model_fields)
            settings = {name: getattr(model, name) for name in own_fields}  # max_tokens, temperature, ...
            inner = model.inner
            supervised = SupervisedChatModel(**{**settings, "inner": inner, "scorer": self.scorer,
                                                "policy": self.policy, "on_event": self.on_event})
        elif isinstance(model, BaseChatModel):
            supervised = SupervisedChatModel(inner=model, scorer=self.scorer, policy=self.policy,
                                             on_event=self.on_event)
        else:
            raise InputError(f"SupervisorMiddleware supervises LangChain chat models; the agent's model is a "
                             f"{type(model).__name__}")
        with self._models_lock:
            self._models[id(model)] = (model, supervised)  # the model is kept, so its id is not reused
            while len(self._models) > _MODEL_CACHE_SIZE:
                self._models.popitem(last=False)
        return supervised

    def wrap_model_call(
        self,
        request: ModelRequest[Any],
        handler: Callable[[ModelRequest[Any]], ModelResponse[Any]],
    ) -> ModelResponse[Any] | AIMessage | ExtendedModelResponse[Any]:
        response = handler(request.override(model=self.supervised_model(request.model)))
        answer = _answer_of(response)
        unchecked = self._check_text(answer.text) if answer is not None and _report_of(answer) is None else None
        return self._settle_model_response(response, unchecked)

    async def awrap_model_call(
        self,
        request: ModelRequest[Any],
        handler: Callable[[ModelRequest[Any]], Awaitable[ModelResponse[Any]]],
    ) -> ModelResponse[Any] | AIMessage | ExtendedModelResponse[Any]:
        response = await handler(request.override(model=self.supervised_model(request.model)))
        answer = _answer_of(response)
        unchecked = await self._acheck_text(answer.text) if answer is not None and _report_of(answer) is None else None
        return self._settle_model_response(response, unchecked)

    def _settle_model_response(
        self, response: ModelResponse[Any], measured_now: GenerationResult | None
    ) -> ExtendedModelResponse[Any]:
        """Record the call's report; a halted call loses its tool calls (and any structured output), which
        ends the loop. An answer without a report (another middleware replaced the model after this one)
        was measured now (``measured_now``) and is halted if unsafe: fail closed."""
        answer = _answer_of(response)
        if answer is None:
            raise InputError("SupervisorMiddleware: the model call returned no AIMessage; cannot supervise it")
        report = _report_of(answer)
        if report is None:
            if measured_now is None:
                raise InputError("SupervisorMiddleware: an answer without a supervision report was not measured")
            report = measured_now
            if report.stop_reason not in _PASSED_STOP_REASONS:
                answer = _halted_message(answer, report.text or self.policy.halt_message)
        passed = report.stop_reason in _PASSED_STOP_REASONS
        if passed:
            model_response = response
        else:
            model_response = ModelResponse(result=[_halted_message(answer, answer.content)], structured_response=None)
        record = SupervisionRecord(source="model_call", outcome="passed" if passed else "halted", report=report)
        return ExtendedModelResponse(model_response=model_response,
                                     command=Command(update={"supervision": [record.model_dump(mode="json")]}))

    # -- tool results -------------------------------------------------------------------------------
    def _tool_check(self) -> StreamCheck:
        return StreamCheck(self.scorer, self._tool_result_policy, on_event=self.on_event)

    def _check_text(self, text: str) -> GenerationResult:
        """Measure ``text`` as the supervisor measures an answer (windows, then the whole): stop_reason
        'stop' when safe; 'halt' or 'scorer_error' (fail closed) when not."""
        check = self._tool_check()
        if not check.feed(text).stopped:
            check.end()
        assert check.result is not None
        return check.result

    async def _acheck_text(self, text: str) -> GenerationResult:
        check = self._tool_check()
        if not (await check.afeed(text)).stopped:
            await check.aend()
        assert check.result is not None
        return check.result

    def wrap_tool_call(
        self,
        request: ToolCallRequest,
        handler: Callable[[ToolCallRequest], ToolMessage | Command[Any]],
    ) -> ToolMessage | Command[Any]:
        outcome = handler(request)
        return self._settle_tool_outcome(request, outcome, [self._check_text(t) for t in _tool_texts(outcome)])

    async def awrap_tool_call(
        self,
        request: ToolCallRequest,
        handler: Callable[[ToolCallRequest], Awaitable[ToolMessage | Command[Any]]],
    ) -> ToolMessage | Command[Any]:
        outcome = await handler(request)
        reports = [await self._acheck_text(t) for t in _tool_texts(outcome)]
        return self._settle_tool_outcome(request, outcome, reports)

    def _settle_tool_outcome(self, request: ToolCallRequest, outcome: ToolMessage | Command[Any],
                             reports: list[GenerationResult]) -> ToolMessage | Command[Any]:
        """Apply ``on_tool_result`` to each ToolMessage of the outcome (in the order of ``_tool_texts``)."""
        messages = _tool_messages(outcome)
        if not messages:
            return outcome  # nothing textual comes back into the conversation
        records: list[dict[str, Any]] = []
        settled: list[ToolMessage] = []
        for message, report in zip(messages, reports):
            record = self._tool_record(request, message, report)
            records.append(record.model_dump(mode="json"))
            if record.outcome in ("redacted", "halted"):
                message = message.model_copy(update={
                    "content": self.settings.tool_result_notice, "artifact": None,
                    "response_metadata": {**message.response_metadata, "supervision": records[-1]},
                })
            settled.append(message)
        if isinstance(outcome, ToolMessage):
            return Command(update={"messages": settled, "supervision": records})
        update = dict(outcome.update) if isinstance(outcome.update, dict) else {}
        others = [m for m in update.get("messages", []) if not isinstance(m, ToolMessage)]
        update["messages"] = [*others, *settled]
        update["supervision"] = [*update.get("supervision", []), *records]
        return Command(graph=outcome.graph, update=update, resume=outcome.resume, goto=outcome.goto)

    def _tool_record(self, request: ToolCallRequest, message: ToolMessage,
                     report: GenerationResult) -> SupervisionRecord:
        unsafe = report.stop_reason not in _PASSED_STOP_REASONS
        outcome: Literal["passed", "halted", "redacted", "allowed_unsafe"] = "passed"
        if unsafe:
            outcome = {"redact": "redacted", "halt": "halted", "allow": "allowed_unsafe"}[  # type: ignore[assignment]
                self.settings.on_tool_result]
        return SupervisionRecord(source="tool_result", outcome=outcome, report=report,
                                 tool_name=message.name or request.tool_call.get("name"),
                                 tool_call_id=message.tool_call_id)

    # -- a halt on a tool result ends the run before the model reads on -------------------------------
    @hook_config(can_jump_to=["end"])
    def before_model(self, state: SupervisedAgentState, runtime: Runtime[Any]) -> dict[str, Any] | None:
        return self._halt_after_tools(state["messages"])

    @hook_config(can_jump_to=["end"])
    async def abefore_model(self, state: SupervisedAgentState, runtime: Runtime[Any]) -> dict[str, Any] | None:
        return self._halt_after_tools(state["messages"])

    def _halt_after_tools(self, messages: Sequence[AnyMessage]) -> dict[str, Any] | None:
        """The tool results since the last model answer: if one was halted, the run ends with the halt
        message (an AIMessage without tool calls)."""
        for message in reversed(messages):
            if not isinstance(message, ToolMessage):
                return None
            record = message.response_metadata.get("supervision")
            if isinstance(record, dict) and record.get("outcome") == "halted":
                halt = AIMessage(content=self.policy.halt_message,
                                 response_metadata={"supervision": record, "finish_reason": "content_filter"})
                return {"messages": [halt], "jump_to": "end"}
        return None


def _answer_of(response: ModelResponse[Any]) -> AIMessage | None:
    return next((m for m in response.result if isinstance(m, AIMessage)), None)


def _tool_messages(outcome: ToolMessage | Command[Any]) -> list[ToolMessage]:
    if isinstance(outcome, ToolMessage):
        return [outcome]
    update = outcome.update if isinstance(outcome.update, dict) else {}
    return [m for m in update.get("messages", []) if isinstance(m, ToolMessage)]


def _tool_texts(outcome: ToolMessage | Command[Any]) -> list[str]:
    """The text each tool message brings into the conversation (what the model will read)."""
    return [m.text for m in _tool_messages(outcome)]
