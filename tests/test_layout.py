"""The layout the import-linter contracts keep (``make lint``): the runtime never imports the lab, and the contract
names every runtime module, so a new module cannot slip past it."""

from __future__ import annotations

import configparser
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_contract_names_every_runtime_module() -> None:
    config = configparser.ConfigParser()
    config.read(ROOT / ".importlinter")
    listed = set(config["importlinter:contract:runtime-without-lab"]["source_modules"].split())
    runtime = {f"supervisor.{path.stem}" for path in (ROOT / "supervisor").glob("*.py")
               if path.stem != "__init__"}
    runtime |= {f"supervisor.{path.parent.name}" for path in (ROOT / "supervisor").glob("*/__init__.py")
                if path.parent.name not in {"lab", "integrations"}}
    assert runtime - listed == set(), "add these runtime modules to .importlinter's source_modules"


def test_importing_the_runtime_loads_nothing_of_the_lab() -> None:
    code = ("import sys, supervisor, supervisor.cli, supervisor.scorers, supervisor.api; "
            "print(sorted(m for m in sys.modules if m.startswith(('supervisor.lab', 'tqdm', 'sklearn', 'scipy'))))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert done.stdout.strip() == "[]", done.stdout


def test_the_lab_command_and_judge_come_through_entry_points() -> None:
    from importlib.metadata import entry_points

    assert "perspective-proxy" in {e.name for e in entry_points(group="supervisor.scorers")}
    done = subprocess.run([sys.executable, "-m", "supervisor.cli", "eval", "--help"], capture_output=True, text=True,
                          cwd=ROOT)
    assert done.returncode == 0 and "--judges" in done.stdout


def test_the_package_is_on_disk_as_it_imports() -> None:
    import supervisor.integrations.openai as openai_integration

    assert Path(openai_integration.__file__).resolve().parent == ROOT / "supervisor" / "integrations" / "openai"
    assert not (ROOT / "integrations").exists()


def test_importing_the_runtime_cli_loads_no_integration() -> None:
    code = ("import sys, supervisor.cli; supervisor.cli.build_parser(); "
            "print(sorted(m for m in sys.modules if m.startswith(('supervisor.integrations.serve.app', 'starlette', "
            "'uvicorn', 'openai', 'langchain'))))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert done.stdout.strip() == "[]", done.stdout


def test_no_deprecated_names_are_left() -> None:
    for old in ("train", "evaluation", "operating_points", "session", "chunk_session"):
        assert not (ROOT / "supervisor" / f"{old}.py").exists(), old
    from supervisor import chunk_drivers, chunk_engine
    from supervisor.primaries.base import LogitPrimary

    assert not hasattr(chunk_engine, "ChunkSession") and not hasattr(chunk_drivers, "settle")
    assert not hasattr(LogitPrimary, "acquire")
