"""``supervisor serve``: the gateway's command (registered through the ``supervisor.commands`` entry point, so the
runtime CLI never imports an integration; starlette and uvicorn are imported only when the command runs)."""

from __future__ import annotations

import argparse
from typing import Any

from supervisor.cli import _bounded, positive_int


def add_commands(commands: Any) -> None:
    """Add ``serve`` to the ``supervisor`` command's subparsers."""
    serve = commands.add_parser("serve", help="an OpenAI-compatible supervising gateway (HTTP)")
    source = serve.add_mutually_exclusive_group()
    source.add_argument("--primary", default=None, help="a local primary with full logit control (default: smollm2)")
    source.add_argument("--upstream", default=None, help="an OpenAI-compatible base URL, e.g. http://127.0.0.1:8080/v1")
    serve.add_argument("--upstream-api-key-env", default=None,
                       help="environment variable holding the upstream's API key (never logged or returned)")
    serve.add_argument("--continuation", default=None, choices=("instruction", "prefill", "vllm", "completions"),
                       help="how the upstream continues a checked prefix (vllm: exact, on vLLM)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=_bounded(int, 1, 65535, "a port from 1 to 65535"), default=8000)
    serve.add_argument("--scorer", default=None, help="scorer name (default: embedding)")
    serve.add_argument("--policy", default=None, help="policy file (.toml or .json)")
    serve.add_argument("--config", default=None, help="gateway config (.toml or .json): tenants, limits, routes")
    serve.add_argument("--api-key", action="append", default=None,
                       help="a client API key (repeatable); with any, requests need 'Authorization: Bearer KEY'")
    serve.add_argument("--workers", type=positive_int, default=None, help="local primaries loaded (concurrency)")
    serve.add_argument("--allow-unsupervised-compare", action="store_true",
                       help="let clients ask for the unsupervised answer (supervise=false): demos only")
    serve.add_argument("--reveal-removed-text", action="store_true",
                       help="send the text rollbacks removed to clients (events, report, chat page): demos only")
    serve.set_defaults(handler=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        from supervisor.integrations.serve import GatewayConfig, run
    except ImportError as exc:
        from supervisor.errors import MissingDependencyError

        raise MissingDependencyError("supervisor serve", exc.name or "starlette", "gateway") from exc
    overrides: dict[str, Any] = {
        "upstream": args.upstream, "primary": args.primary, "scorer": args.scorer, "policy": args.policy,
        "continuation": args.continuation, "upstream_api_key_env": args.upstream_api_key_env,
        "workers": args.workers,
        **({"allow_unsupervised_compare": True} if args.allow_unsupervised_compare else {}),
        **({"reveal_removed_text": True} if args.reveal_removed_text else {}),
        **({"tenants": [{"api_key": key, "name": f"key{i}"} for i, key in enumerate(args.api_key)]}
           if args.api_key else {}),
    }
    if args.config:
        config = GatewayConfig.from_file(args.config, **overrides)
    else:
        if args.upstream is None and args.primary is None:
            overrides["primary"] = "smollm2"
        config = GatewayConfig.build({k: v for k, v in overrides.items() if v is not None}, source="options")
    run(config, host=args.host, port=args.port)
    return 0
