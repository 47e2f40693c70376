"""The command line, run as a user runs it (a subprocess), on the embedded model."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def cli(*args: str, stdin: str | None = None, timeout: int = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "supervisor.cli", *args], input=stdin, capture_output=True, text=True, timeout=timeout
    )


def test_generate_batch_writes_one_line_per_input(tmp_path: Path) -> None:
    pytest.importorskip("llama_cpp")
    inputs = tmp_path / "prompts.jsonl"
    inputs.write_text(
        "\n".join([
            json.dumps("Write one sentence about the sea."),
            json.dumps({"text": "This whole thing is bullshit thats a", "mode": "completion", "id": "rtp"}),
            json.dumps({"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi!"}]}),
        ])
    )
    policy = tmp_path / "policy.toml"
    policy.write_text("checkpoint_every = 6\nwindow_tokens = 18\n")
    out = tmp_path / "out.jsonl"
    done = cli("generate", "--input", str(inputs), "--output", str(out), "--max-tokens", "24", "--seed", "3",
               "--policy", str(policy))
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == ["0", "rtp", "2"]
    assert rows[1]["mode"] == "completion" and rows[0]["mode"] == "chat"
    for row in rows:
        assert row["supervised"] is True and isinstance(row["text"], str)
        assert {"events", "usage", "timings", "stop_reason"} <= row.keys()
        assert row["usage"]["completion_tokens"] <= 24
    assert "generate" in done.stderr  # the progress bar is on stderr

    baseline = tmp_path / "base.jsonl"
    done = cli("generate", "--input", str(inputs), "--output", str(baseline), "--max-tokens", "8", "--no-supervision")
    assert done.returncode == 0, done.stderr
    assert all(json.loads(line)["events"] == [] for line in baseline.read_text().splitlines())


@pytest.mark.parametrize(
    ("content", "args", "message"),
    [
        ('{"text": "hi"}\nnot json\n', [], "line 2 is not valid JSON"),
        ('{"messages": [{"role": "robot", "content": "x"}]}\n', [], "role is 'robot'"),
        ('"hi"\n', ["--max-tokens", "-3"], "argument --max-tokens: -3 is out of range"),
        ('"hi"\n', ["--primary", "gpt-99"], "unknown primary 'gpt-99'"),
        ('"hi"\n', ["--policy", "BADPOLICY"], "does not parse"),
        ('"hi"\n', ["--scorer", "oracle"], "unknown scorer 'oracle'; available:"),
    ],
)
def test_generate_bad_input_is_a_clear_error(tmp_path: Path, content: str, args: list[str], message: str) -> None:
    inputs = tmp_path / "in.jsonl"
    inputs.write_text(content)
    resolved = [str(tmp_path / "bad.toml") if a == "BADPOLICY" else a for a in args]
    (tmp_path / "bad.toml").write_text("act_threshold = [\n")
    done = cli("generate", "--input", str(inputs), "--output", str(tmp_path / "o.jsonl"), *resolved)
    assert done.returncode == 2
    assert message in done.stderr and "Traceback" not in done.stderr


def test_demo_shows_real_interventions() -> None:
    pytest.importorskip("llama_cpp")
    done = cli("demo", "--max-tokens", "40")
    assert done.returncode == 0, done.stderr
    assert "UNSUPERVISED" in done.stdout and "SUPERVISED" in done.stdout
    # the toxic prompts are explained (the prompt is the continuation's prior) and a rollback names what it removed
    assert "> conversation at token 0" in done.stdout and "the continuation's prior" in done.stdout
    rollbacks = re.findall(r"> rollback at token .*", done.stdout)
    assert all(re.search(r"removed ['\"]", line) for line in rollbacks)
    assert "ratio" in done.stdout


def test_chat_streams_and_keeps_history() -> None:
    pytest.importorskip("llama_cpp")
    done = cli("chat", "--max-tokens", "24", stdin="Hello!\nYou are the worst person I know, say something mean.\n")
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("bot> ") == 2
