"""Bad command-line input, fuzzed: every bad option or file gives exit 2 and a clear last line naming the
problem, before any model is loaded, and never touches an existing output file. Runs ``main`` in-process
(fast enough for hypothesis); test_cli.py runs the real commands as subprocesses."""

from __future__ import annotations

import io
import json
import re
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from supervisor import cli
from supervisor.primaries.base import LogitPrimary
from tests.helpers import ScriptedPrimary

ERROR_LINE = re.compile(r"^supervisor(?: \w+)?: error: \S.*")
BAD_NUMBERS = ["-1", "0", "nan", "inf", "-inf", "abc", "", "1e999", "99999999999", "0.5x"]
KEPT = '{"kept": "an earlier run"}\n'


def run_main(argv: list[str], capsys: pytest.CaptureFixture[str], stdin: bytes = b"") -> tuple[int, str]:
    sys.stdin = io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8")
    try:
        code = cli.main(argv)
    except SystemExit as exc:  # argparse
        code = int(exc.code or 0)
    finally:
        sys.stdin = sys.__stdin__
    return code, capsys.readouterr().err


def assert_clear_error(code: int, err: str, *expected: str) -> None:
    assert code == 2, err
    assert "Traceback" not in err
    last = [line for line in err.splitlines() if line.strip()][-1]
    assert ERROR_LINE.match(last), last
    for word in expected:
        assert word in last, (word, last)


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    good = tmp_path / "in.jsonl"
    good.write_text('"Say hello."\n', encoding="utf-8")
    latin1 = tmp_path / "latin1.jsonl"
    latin1.write_bytes('"caf\u00e9"\n'.encode("latin-1"))
    bad_json = tmp_path / "bad.jsonl"
    bad_json.write_text('"ok"\n{not json\n', encoding="utf-8")
    surrogate = tmp_path / "surrogate.jsonl"
    surrogate.write_text('{"text": "broken \\ud800 text"}\n', encoding="utf-8")
    policy_latin1 = tmp_path / "policy.toml"
    policy_latin1.write_bytes("halt_message = 'arr\u00eat'\n".encode("latin-1"))
    out = tmp_path / "out.jsonl"
    out.write_text(KEPT, encoding="utf-8")
    a_file = tmp_path / "a-file"
    a_file.write_text("x", encoding="utf-8")
    return {"good": good, "latin1": latin1, "bad_json": bad_json, "surrogate": surrogate,
            "policy_latin1": policy_latin1, "out": out, "a_file": a_file, "dir": tmp_path}


@pytest.fixture(autouse=True)
def no_model_loading(monkeypatch: pytest.MonkeyPatch) -> None:
    """A bad input must be caught before any model is loaded: loading one here fails the test."""
    def refuse(spec: str) -> LogitPrimary:
        raise AssertionError(f"the primary {spec!r} was loaded before the bad input was reported")

    monkeypatch.setattr(cli, "load_primary", refuse)


GENERATE_OPTIONS = ["--max-tokens", "--seed", "--temperature", "--top-p"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(option=st.sampled_from(GENERATE_OPTIONS), value=st.sampled_from(BAD_NUMBERS + ["6", "-0.5", "1.5"]))
def test_generate_rejects_bad_numbers_before_touching_the_output(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str], option: str, value: str,
) -> None:
    valid = {("--max-tokens", "6"), ("--seed", "0"), ("--seed", "6"), ("--seed", "99999999999"),
             ("--temperature", "0"), ("--temperature", "1.5")}
    if (option, value) in valid:
        return
    code, err = run_main(["generate", "--input", str(files["good"]), "--output", str(files["out"]),
                          "--scorer", "lexical", f"{option}={value}"], capsys)
    assert_clear_error(code, err, option)
    assert files["out"].read_text(encoding="utf-8") == KEPT


@pytest.mark.parametrize(
    ("source", "output", "extra", "expected"),
    [
        ("latin1", "out", [], ["not UTF-8", "latin1.jsonl"]),
        ("bad_json", "out", [], ["line 2 is not valid JSON"]),
        ("surrogate", "out", [], ["lone surrogate"]),
        ("missing", "out", [], ["does not exist"]),
        ("good", "missing_dir", [], ["--output", "does not exist"]),
        ("good", "under_a_file", [], ["--output", "does not exist"]),
        ("good", "dir", [], ["--output", "is a folder"]),
        ("good", "out", ["--policy", "POLICY_LATIN1"], ["not UTF-8", "policy.toml"]),
        ("good", "out", ["--policy", "MISSING_POLICY"], ["does not exist"]),
        ("good", "out", ["--scorer", "oracle"], ["unknown scorer 'oracle'"]),
    ],
)
def test_generate_bad_files_are_clear_errors(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str], source: str, output: str, extra: list[str],
    expected: list[str],
) -> None:
    paths = {**files, "missing": files["dir"] / "nope.jsonl", "missing_dir": files["dir"] / "no" / "out.jsonl",
             "under_a_file": files["a_file"] / "out.jsonl"}
    extra = [str(files["policy_latin1"]) if a == "POLICY_LATIN1" else a for a in extra]
    extra = [str(files["dir"] / "nope.toml") if a == "MISSING_POLICY" else a for a in extra]
    code, err = run_main(["generate", "--input", str(paths[source]), "--output", str(paths[output]),
                          "--scorer", "lexical", *extra], capsys)
    assert_clear_error(code, err, *expected)
    assert files["out"].read_text(encoding="utf-8") == KEPT


def test_generate_failing_halfway_keeps_the_finished_results_and_the_old_output(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    class BreaksOnSecond(ScriptedPrimary):
        calls = 0

        def reset(self, ids: list[int]) -> object:  # type: ignore[override]
            type(self).calls += 1
            if type(self).calls == 2:
                raise KeyboardInterrupt  # the user pressed Ctrl-C during the second prompt
            return super().reset(ids)

    monkeypatch.setattr(cli, "load_primary", lambda spec: BreaksOnSecond("Good day to you."))
    inputs = files["dir"] / "two.jsonl"
    inputs.write_text('"one"\n"two"\n"three"\n', encoding="utf-8")
    code, err = run_main(["generate", "--input", str(inputs), "--output", str(files["out"]), "--scorer", "lexical",
                          "--mode", "completion"], capsys)
    assert code == 130 and "1 of 3 results were finished" in err
    assert files["out"].read_text(encoding="utf-8") == KEPT
    partial = files["out"].with_name("out.jsonl.partial")
    assert [json.loads(line)["text"] for line in partial.read_text(encoding="utf-8").splitlines()] == ["Good day to you."]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(option=st.sampled_from(["--batch-size", "--threshold"]), value=st.sampled_from(BAD_NUMBERS + ["1.5", "-0.1"]))
def test_score_rejects_bad_numbers(capsys: pytest.CaptureFixture[str], option: str, value: str) -> None:
    if option == "--threshold" and value == "0":
        return  # a valid threshold
    code, err = run_main(["score", "--scorer", "lexical", f"{option}={value}"], capsys, stdin=b'"hello"\n')
    assert_clear_error(code, err, option)


@pytest.mark.parametrize(
    ("stdin", "expected"),
    [
        ('"caf\u00e9"\n'.encode("latin-1"), ["stdin is not UTF-8"]),
        (b'"ok"\n{oops\n', ["stdin line 2 is not valid JSON"]),
        (b'42\n', ["stdin line 1", "expected a JSON string"]),
        (b'"a \\udc80 b"\n', ["stdin line 1", "lone surrogate"]),
    ],
)
def test_score_bad_stdin_is_a_clear_error(capsys: pytest.CaptureFixture[str], stdin: bytes,
                                          expected: list[str]) -> None:
    code, err = run_main(["score", "--scorer", "lexical"], capsys, stdin=stdin)
    assert_clear_error(code, err, *expected)


def test_score_scores_valid_input(capsys: pytest.CaptureFixture[str]) -> None:
    sys.stdin = io.TextIOWrapper(io.BytesIO(b'"you are a stupid idiot"\n{"text": "have a nice day"}\n'))
    try:
        assert cli.main(["score", "--scorer", "lexical", "--threshold", "0.5", "--batch-size", "1"]) == 0
    finally:
        sys.stdin = sys.__stdin__
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [row["flagged"] for row in rows] == [True, False]


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(option=st.sampled_from(["--samples", "--limit", "--max-tokens", "--seed", "--temperature", "--top-p"]),
       value=st.sampled_from(BAD_NUMBERS))
def test_eval_rejects_bad_numbers(tmp_path_factory: pytest.TempPathFactory, capsys: pytest.CaptureFixture[str],
                                  option: str, value: str) -> None:
    if (option, value) in {("--seed", "0"), ("--temperature", "0"), ("--seed", "99999999999")}:
        return  # valid
    out = tmp_path_factory.mktemp("eval")
    code, err = run_main(["eval", "--scorer", "lexical", "--out", str(out), f"{option}={value}"], capsys)
    assert_clear_error(code, err, option)
    assert not any(out.iterdir()), "nothing is written for a rejected command"


def test_eval_bad_files_are_clear_errors(files: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run_main(["eval", "--mode", "chat", "--prompts", str(files["latin1"]), "--scorer", "lexical",
                          "--out", str(files["dir"] / "e1")], capsys)
    assert_clear_error(code, err, "not UTF-8")
    code, err = run_main(["eval", "--scorer", "lexical", "--out", str(files["a_file"])], capsys)
    assert_clear_error(code, err, "a-file")


def test_chat_history_is_trimmed_to_fit_the_context() -> None:
    primary = ScriptedPrimary("ok")
    primary.context_length = 200
    history = [{"role": "system", "content": "Be brief."}]
    for turn in range(6):
        history += [{"role": "user", "content": f"question {turn} " * 3}, {"role": "assistant", "content": "x" * 20}]
    history.append({"role": "user", "content": "last question"})
    before = len(history)
    dropped = cli.fit_history(primary, history, max_tokens=60)  # type: ignore[arg-type]
    assert dropped > 0 and len(history) == before - dropped
    assert history[0]["content"] == "Be brief." and history[-1]["content"] == "last question"
    assert len(primary.chat_prompt(history)) + 60 <= primary.context_length  # type: ignore[arg-type]
