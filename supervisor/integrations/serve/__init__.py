"""``supervisor serve``: an OpenAI-compatible supervising gateway (see :mod:`supervisor.integrations.serve.app`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from supervisor.integrations.serve.config import GatewayConfig, Route, Tenant

if TYPE_CHECKING:
    from supervisor.integrations.serve.app import Gateway, create_app

__all__ = ["Gateway", "GatewayConfig", "Route", "Tenant", "create_app", "run"]


def __getattr__(name: str) -> Any:
    # The app needs the ``gateway`` extra (starlette); the config and its validation do not.
    if name in ("Gateway", "create_app"):
        from supervisor.integrations.serve import app

        return getattr(app, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def run(config: GatewayConfig, *, host: str = "127.0.0.1", port: int = 8000, drain_s: int = 30) -> None:
    """Serve ``config`` with uvicorn until SIGINT/SIGTERM; open streams get ``drain_s`` seconds to finish."""
    import logging

    import uvicorn

    from supervisor.integrations.serve.app import create_app

    audit = logging.getLogger("supervisor.audit")  # one JSON line per request, for operators
    if not audit.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        audit.addHandler(handler)
    audit.setLevel(logging.INFO)
    uvicorn.run(create_app(config), host=host, port=port, timeout_graceful_shutdown=drain_s, log_level="info")
