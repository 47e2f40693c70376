"""The lab's commands for ``supervisor``: ``supervisor eval`` (registered through the ``supervisor.commands`` entry
point, so the runtime CLI never imports the lab)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from supervisor.api import Supervisor
from supervisor.cli import _add_model_options, _request, positive_int
from supervisor.errors import InputError
from supervisor.events import GenerationResult
from supervisor.primaries import load_primary
from supervisor.primaries.base import LogitPrimary
from supervisor.primaries.chunk import ChunkPrimary
from supervisor.prompts import PromptItem
from supervisor.scorers import DEFAULT_SCORER, get_scorer


def add_commands(commands: Any) -> None:
    """Add ``eval`` to the ``supervisor`` command's subparsers."""
    evaluate = commands.add_parser("eval", help="toxicity, fluency and cost, unsupervised vs supervised")
    _add_model_options(evaluate, max_tokens=20)
    evaluate.set_defaults(temperature=1.0, top_p=0.9)
    evaluate.add_argument("--mode", choices=("continuation", "chat", "benign", "all"), default="all")
    evaluate.add_argument("--prompts", default=None, help="JSONL replacing the bundled prompts of --mode")
    evaluate.add_argument("--limit", type=positive_int, default=None, help="prompts per mode")
    evaluate.add_argument("--samples", type=positive_int, default=25, help="generations per prompt and condition")
    evaluate.add_argument("--judges", default="perspective-proxy,lexical,embedding",
                          help="comma-separated judge scorers; perspective-proxy shares no model or data with the "
                          "shipped scorers (each table says which judge is the supervisor itself)")
    evaluate.add_argument("--reference-lm", default="primary",
                          help="LM for perplexity: 'primary', 'none', or a primary name (e.g. hf:gpt2)")
    evaluate.add_argument("--out", default="eval-results", help="output folder")
    evaluate.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    evaluate.add_argument("--quick", action="store_true", help="20 prompts per mode, 5 samples (see README)")
    evaluate.set_defaults(handler=cmd_eval)


def cmd_eval(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from supervisor.lab.evaluation import (
        MODES,
        QUICK,
        EvalSettings,
        key_of,
        plan,
        read_records,
        report,
        run_generations,
    )

    values: dict[str, Any] = {
        "modes": list(MODES) if args.mode == "all" else [args.mode],
        "samples": args.samples, "max_tokens": args.max_tokens, "temperature": args.temperature,
        "top_p": args.top_p, "seed": args.seed, "primary": args.primary, "scorer": args.scorer or DEFAULT_SCORER,
        "judges": [j for j in args.judges.split(",") if j], "reference_lm": args.reference_lm,
        "policy": args.policy, "limit": args.limit,
    }
    if args.prompts:
        if args.mode == "all":
            raise InputError("--prompts needs a single --mode (continuation, chat or benign)")
        values["prompts"] = {args.mode: args.prompts}
    if args.quick:
        values.update({k: v for k, v in QUICK.items() if k != "limit" or args.limit is None})
    settings = EvalSettings(**values)
    total = 2 * len(plan(settings))  # reads the prompts: a bad prompts file is reported before any work
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    generations, settings_file = out_dir / "generations.jsonl", out_dir / "settings.json"
    records = read_records(generations)
    if records and not args.resume:
        raise InputError(f"{out_dir} already holds {len(records)} generations; pass --resume to continue "
                         "that run, or choose another --out")
    if args.resume and settings_file.is_file():
        previous = EvalSettings.model_validate_json(settings_file.read_text(encoding="utf-8"))
        if previous != settings:
            raise InputError(f"--resume with settings that differ from {settings_file}; rerun with the same options")
    if records:  # rewrite without a line cut by an interruption
        generations.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    settings_file.write_text(settings.model_dump_json(indent=1), encoding="utf-8")

    sup = Supervisor(scorer=settings.scorer, policy=settings.policy)
    judges = {name: get_scorer(name) for name in settings.judges}  # a missing judge fails now, not after generating
    primary = load_primary(settings.primary)
    done = {key_of(r) for r in records}

    def generate(item: PromptItem, seed: int, supervised: bool) -> GenerationResult:
        messages, prompt = _request(primary, item)
        return sup.generate(primary, messages, prompt=prompt, max_tokens=settings.max_tokens,
                            temperature=settings.temperature, top_p=settings.top_p, seed=seed, supervise=supervised)

    started = time.perf_counter()
    interrupted = False
    with tqdm(total=total, desc="eval", unit="gen", file=sys.stderr) as bar:
        try:
            run_generations(settings, generate, generations, halt_message=sup.policy.halt_message, done=done,
                            progress=bar.update)
        except KeyboardInterrupt:
            interrupted = True
    records = read_records(generations)
    if interrupted:
        print(f"interrupted: {len(records)} of {total} generations are kept in {generations}; "
              "rerun the same command with --resume to finish", file=sys.stderr)
    reference: LogitPrimary | ChunkPrimary | None = None
    if settings.reference_lm == "primary":
        reference = primary
    elif settings.reference_lm != "none":
        reference = load_primary(settings.reference_lm)
    if isinstance(reference, ChunkPrimary):
        print(f"perplexity skipped: {reference.name!r} gives no token log-probabilities; pass --reference-lm with "
              "a local model (e.g. smollm2) to measure it", file=sys.stderr)
        reference = None
    payload = report(settings, records, out_dir, reference, interrupted=interrupted,
                     elapsed_s=time.perf_counter() - started, judges=judges)
    print(payload["markdown"])
    print(f"wrote {out_dir / 'summary.json'}, {out_dir / 'summary.md'} and plots in {out_dir} "
          f"({time.perf_counter() - started:.0f} s in all)")
    return 130 if interrupted else 0
