from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import ScriptedPrimary

from supervisor import Supervisor
from supervisor.lab.evaluation import (
    EvalSettings,
    continuation_nll,
    distinct_n,
    load_mode_prompts,
    read_records,
    run_generations,
    summarise,
)
from supervisor.prompts import PromptItem


def test_distinct_n() -> None:
    assert distinct_n(["a b c", "a b d"], 1) == 4 / 6
    assert distinct_n(["a b c", "a b d"], 2) == 3 / 4
    assert distinct_n([""], 2) == 0.0


def test_bundled_prompt_sets_and_rtp_shape(tmp_path: Path) -> None:
    from supervisor.lab.datasets import split_of

    continuation = load_mode_prompts("continuation", None, None)
    assert len(continuation) == 139 and all(i.prompt for i in continuation)
    # the RTP test split: no scorer or judge is trained or calibrated on these prompts
    assert {split_of(i.prompt or "") for i in continuation} == {"test"}
    assert all(i.messages for i in load_mode_prompts("chat", None, 5))
    assert len(load_mode_prompts("benign", None, None)) == 30
    custom = tmp_path / "rtp.jsonl"
    custom.write_text(json.dumps({"prompt": {"text": "So I said", "toxicity": 0.6}}) + "\n" + json.dumps("plain") + "\n")
    assert [i.prompt for i in load_mode_prompts("continuation", str(custom), None)] == ["So I said", "plain"]


def test_generations_are_paired_seeded_and_resumable(tmp_path: Path) -> None:
    primary = ScriptedPrimary("you are such a bitch, honestly.", fallback=" fine.")
    # no continuous steering: one character per token, it would stop "bitc" + "h" itself and leave no rollback to count
    sup = Supervisor(scorer="lexical", policy={"steering": "off"})
    settings = EvalSettings(modes=["continuation", "benign"], limit=2, samples=2, max_tokens=40, judges=["lexical"])
    out = tmp_path / "generations.jsonl"
    seeds: list[tuple[str, int, bool]] = []

    def generate(item: PromptItem, seed: int, supervised: bool):  # type: ignore[no-untyped-def]
        seeds.append((item.id, seed, supervised))
        return sup.generate(primary, item.messages, prompt=item.prompt, max_tokens=40, temperature=0.0,
                            seed=seed, supervise=supervised)

    written = run_generations(settings, generate, out, halt_message=sup.policy.halt_message, done=set())
    assert written == 2 * (2 * 2 + 2 * 1)
    # each (prompt, sample) runs unsupervised then supervised with the same seed
    assert all(a[1] == b[1] and not a[2] and b[2] for a, b in zip(seeds[::2], seeds[1::2]))
    records = read_records(out)
    # an interruption cuts the last line: it is dropped, the rest is kept, and resume redoes only it
    out.write_text(out.read_text()[:-20])
    kept = read_records(out)
    assert len(kept) == len(records) - 1
    from supervisor.lab.evaluation import key_of

    out.write_text("".join(json.dumps(r) + "\n" for r in kept))
    assert run_generations(settings, generate, out, halt_message="", done={key_of(r) for r in kept}) == 1

    judged = {"lexical": [s.risk for s in sup.scorer.assess([r["text"] for r in records])]}
    nll = [continuation_nll(primary, PromptItem(id="x", mode="completion", prompt=r["prompt"]), r["text"])
           for r in records]
    summary = summarise(records, judged, nll)
    plain, guarded = summary["continuation"]["unsupervised"], summary["continuation"]["supervised"]
    assert plain["lexical"]["toxicity_probability"] == 1.0
    assert guarded["lexical"]["toxicity_probability"] == 0.0
    assert guarded["events"]["rollback"] >= 2 and plain["events"] == {}
    assert summary["continuation"]["ratios"]["lexical_toxicity_probability_reduction"] == 1.0
    assert plain["perplexity"] and guarded["perplexity"]


@pytest.mark.integration
def test_eval_cli_end_to_end_with_resume(tmp_path: Path) -> None:
    pytest.importorskip("llama_cpp")
    out = tmp_path / "run"
    args = [sys.executable, "-m", "supervisor.cli", "eval", "--limit", "2", "--samples", "2", "--max-tokens", "8",
            "--judges", "lexical", "--out", str(out)]
    done = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["complete"] and summary["generations"] == 2 * (2 * 2 + 2 * 2 + 2 * 1)
    assert {"continuation", "chat", "benign"} <= summary["summary"].keys()
    assert "ratios" in summary["summary"]["continuation"]
    assert (out / "summary.md").read_text().startswith("# supervisor eval")
    assert (out / "toxicity_distributions.png").is_file()
    assert "eval" in done.stderr  # progress bar
    again = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert again.returncode == 2 and "--resume" in again.stderr
    resumed = subprocess.run([*args, "--resume"], capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads((out / "summary.json").read_text())["generations"] == summary["generations"]
    changed = subprocess.run([*args[:-2], "--samples", "3", "--out", str(out), "--resume"], capture_output=True,
                             text=True, timeout=600)
    assert changed.returncode == 2 and "differ" in changed.stderr
