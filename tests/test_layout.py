"""The layout the import-linter contracts keep (``make lint``): the runtime never imports the lab, and the contract
names every runtime module, so a new module cannot slip past it."""

from __future__ import annotations

import configparser
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DEPRECATED_ALIASES = {"train", "evaluation", "operating_points"}  # of the lab's modules, for one release


def test_the_contract_names_every_runtime_module() -> None:
    config = configparser.ConfigParser()
    config.read(ROOT / ".importlinter")
    listed = set(config["importlinter:contract:runtime-without-lab"]["source_modules"].split())
    runtime = {f"supervisor.{path.stem}" for path in (ROOT / "supervisor").glob("*.py")
               if path.stem not in {"__init__", *DEPRECATED_ALIASES}}
    runtime |= {f"supervisor.{path.parent.name}" for path in (ROOT / "supervisor").glob("*/__init__.py")
                if path.parent.name != "lab"}
    assert runtime - listed == set(), "add these runtime modules to .importlinter's source_modules"


def test_importing_the_runtime_loads_nothing_of_the_lab() -> None:
    code = ("import sys, supervisor, supervisor.cli, supervisor.scorers, supervisor.api; "
            "print(sorted(m for m in sys.modules if m.startswith(('supervisor.lab', 'tqdm', 'sklearn', 'scipy'))))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert done.stdout.strip() == "[]", done.stdout


@pytest.mark.parametrize("name", sorted(DEPRECATED_ALIASES))
def test_the_old_lab_names_still_work_and_say_where_they_moved(name: str) -> None:
    sys.modules.pop(f"supervisor.{name}", None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        module = __import__(f"supervisor.{name}", fromlist=["_"])
    assert any(issubclass(w.category, DeprecationWarning) and f"supervisor.lab.{name}" in str(w.message)
               for w in caught)
    assert module.__name__ == f"supervisor.{name}" and dir(module)


def test_the_lab_command_and_judge_come_through_entry_points() -> None:
    from importlib.metadata import entry_points

    assert "perspective-proxy" in {e.name for e in entry_points(group="supervisor.scorers")}
    done = subprocess.run([sys.executable, "-m", "supervisor.cli", "eval", "--help"], capture_output=True, text=True,
                          cwd=ROOT)
    assert done.returncode == 0 and "--judges" in done.stdout


def test_renamed_engine_names_still_resolve() -> None:
    from supervisor import chunk_drivers, chunk_session, session
    from supervisor.primaries.base import LogitPrimary

    assert chunk_session.ChunkSession is chunk_session.ChunkEngine and chunk_session.Step is chunk_session.Directive
    assert chunk_session.chunk_session is chunk_session.chunk_engine and session.Session is session.LogitEngine
    assert LogitPrimary.acquire is LogitPrimary.claim and LogitPrimary.release is LogitPrimary.free
    with pytest.warns(DeprecationWarning, match="supervisor.chunk_drivers.answer_checks"):
        assert chunk_session.settle is chunk_drivers.answer_checks
    with pytest.warns(DeprecationWarning):
        assert chunk_session.arun_chunked is chunk_drivers.arun_chunked
