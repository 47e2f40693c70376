"""What every benchmark ends with: its table printed, its results written as JSON with the machine they ran on."""

from __future__ import annotations

import json
import platform
import sys
from pathlib import Path
from typing import Any


def publish(lines: list[str], out: str | Path, payload: dict[str, Any]) -> None:
    """Print the Markdown ``lines``; write ``payload`` (plus the machine and Python) to ``out``."""
    print("\n".join(lines))
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {**payload, "machine": platform.platform(), "python": platform.python_version()}
    path.write_text(json.dumps(record, indent=1), encoding="utf-8")
    print(f"wrote {path}", file=sys.stderr)
