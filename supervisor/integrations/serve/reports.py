"""What the gateway tells clients about a supervised answer, and what it records for operators.

Clients see what happened (kind, category, risk, positions, how much was removed), never the removed text: it is
what the supervisor judged unsafe, and an app that renders the raw stream would show it. A route may reveal it
(``Route.reveal_removed_text``, for demos). Operators get the full record as one JSON line per request on the
``supervisor.audit`` logger (and in ``GatewayConfig.audit_log`` when set), with the tenant and the request id."""

from __future__ import annotations

import json
import logging
import re
import time
from typing import Any

from supervisor.events import GenerationResult, InterventionEvent

audit_log = logging.getLogger("supervisor.audit")

#: Client-facing detail for events whose own detail is an internal error message.
_PUBLIC_DETAIL = {"upstream_retry": "the upstream failed; retried from the checked text",
                  "scorer_error": "the scorer failed"}
_STATUS = re.compile(r"HTTP \d{3}")


def public_event(event: InterventionEvent, *, reveal: bool) -> dict[str, Any]:
    """An event as a client may see it."""
    data = event.model_dump(mode="json")
    if reveal:
        return data
    removed = data.pop("removed_text")
    data["removed_chars"] = len(removed)
    if event.kind in _PUBLIC_DETAIL:
        data["detail"] = _PUBLIC_DETAIL[event.kind] + (
            " (fail open: released unchecked)" if "fail_open" in event.detail else "")
    return data


def public_report(result: GenerationResult | None, *, reveal: bool) -> dict[str, Any] | None:
    """The supervision report a client may see: the result without its text (sent already) and, unless revealed,
    without removed text or upstream error messages."""
    if result is None:
        return None
    data = result.model_dump(mode="json", exclude={"text"})
    data["events"] = [public_event(event, reveal=reveal) for event in result.events]
    if not reveal:
        for attempt in data["attempts"]:
            if attempt["error"]:
                attempt["error"] = fault_summary(attempt["error"])
        if data["error"]:
            data["error"] = fault_summary(data["error"])
    return data


def fault_summary(message: str) -> str:
    """An upstream error message without the upstream's own words (validation dumps, file paths): its HTTP status,
    or what kind of transport failure it was."""
    status = _STATUS.search(message)
    if status:
        return f"upstream error ({status.group(0)})"
    if "without a finish reason" in message:
        return "upstream error (the stream ended before the answer did)"
    return "upstream error (no answer: the connection failed, dropped or timed out)"


def audit(request_id: str, tenant: str, route: str, *, status: int, result: GenerationResult | None,
          sent_chars: int, outcome: str, error: str | None = None, started: float) -> None:
    """One JSON line for operators: everything about the request, removed text included; never a key."""
    record: dict[str, Any] = {
        "request_id": request_id, "tenant": tenant, "route": route, "status": status, "outcome": outcome,
        "sent_chars": sent_chars, "seconds": round(time.perf_counter() - started, 4), "error": error,
    }
    if result is not None:
        record["supervision"] = result.model_dump(mode="json", exclude={"text"})
    audit_log.info(json.dumps(record, ensure_ascii=False))
