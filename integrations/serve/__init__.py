"""``supervisor serve``: an OpenAI-compatible supervising gateway (see :mod:`supervisor.integrations.serve.app`)."""

from __future__ import annotations

from supervisor.integrations.serve.app import Gateway, create_app
from supervisor.integrations.serve.config import GatewayConfig, Route, Tenant

__all__ = ["Gateway", "GatewayConfig", "Route", "Tenant", "create_app", "run"]


def run(config: GatewayConfig, *, host: str = "127.0.0.1", port: int = 8000, drain_s: int = 30) -> None:
    """Serve ``config`` with uvicorn until SIGINT/SIGTERM; open streams get ``drain_s`` seconds to finish."""
    import logging

    import uvicorn

    audit = logging.getLogger("supervisor.audit")  # one JSON line per request, for operators
    if not audit.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        audit.addHandler(handler)
    audit.setLevel(logging.INFO)
    uvicorn.run(create_app(config), host=host, port=port, timeout_graceful_shutdown=drain_s, log_level="info")
