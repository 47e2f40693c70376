"""Every example runs as a user would run it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = sorted((Path(__file__).parent.parent / "examples").glob("*.py"))


NEEDS_SERVER = {"openai_wrapper.py", "langchain_callback.py", "langchain_wrapper.py", "langchain_agent.py",
                "stream_check.py"}


@pytest.mark.integration
@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_runs(path: Path, request: pytest.FixtureRequest) -> None:
    env = dict(os.environ)
    if path.name in NEEDS_SERVER:
        env["SUPERVISOR_OPENAI_URL"] = request.getfixturevalue("llama_server_url")
    done = subprocess.run([sys.executable, str(path)], capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr
    assert "released:" in done.stdout and "stop:" in done.stdout
