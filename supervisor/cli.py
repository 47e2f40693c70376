"""Command line: ``supervisor demo``, ``chat``, ``generate``, ``eval``, ``score``, ``serve``."""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import textwrap
import time
from collections.abc import Sequence
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, TextIO

from supervisor.api import Supervisor
from supervisor.errors import InputError, SupervisorError
from supervisor.events import GenerationResult, InterventionEvent
from supervisor.messages import MAX_TOKENS_LIMIT, Message, check_unicode, decode_utf8
from supervisor.policy import Policy, as_policy
from supervisor.primaries import load_primary
from supervisor.primaries.base import LogitPrimary
from supervisor.primaries.chunk import ChunkPrimary
from supervisor.prompts import PromptItem, bundled_prompts, json_lines, read_jsonl
from supervisor.scorers import get_scorer
from supervisor.scorers.base import assess_checked


def _bounded(kind: type[int] | type[float], low: float, high: float, accepted: str) -> Any:
    """An argparse type: a finite number of ``kind`` within [low, high]; the error says what is accepted."""

    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number; accepted: {accepted}") from None
        if not (math.isfinite(value) and low <= value <= high):
            raise argparse.ArgumentTypeError(f"{text} is out of range; accepted: {accepted}")
        return value

    return parse


positive_int = _bounded(int, 1, 2**31, "an integer of at least 1")
max_tokens_int = _bounded(int, 1, MAX_TOKENS_LIMIT, f"an integer from 1 to {MAX_TOKENS_LIMIT}")
seed_int = _bounded(int, 0, 2**63 - 1, "an integer from 0 to 2**63 - 1")
probability = _bounded(float, 0.0, 1.0, "a number from 0 to 1")
temperature_float = _bounded(float, 0.0, 5.0, "a number from 0 (greedy) to 5")
top_p_float = _bounded(float, 1e-9, 1.0, "a number greater than 0, at most 1")


def _add_model_options(parser: argparse.ArgumentParser, *, max_tokens: int) -> None:
    parser.add_argument("--primary", default="smollm2",
                        help="primary model: smollm2 (default, embedded), a .gguf path, hf:NAME, openai:MODEL or "
                             "openai:MODEL@http://host:port/v1 (any OpenAI-compatible server)")
    parser.add_argument("--scorer", default=None, help="supervisor model (default: embedding; lexical needs no torch)")
    parser.add_argument("--policy", default=None, help="policy file (.toml or .json)")
    parser.add_argument("--max-tokens", type=max_tokens_int, default=max_tokens)
    parser.add_argument("--temperature", type=temperature_float, default=0.7)
    parser.add_argument("--top-p", type=top_p_float, default=0.95)
    parser.add_argument("--seed", type=seed_int, default=0)


def _supervisor(args: argparse.Namespace) -> Supervisor:
    return Supervisor(scorer=args.scorer, policy=args.policy)


def _request(primary: LogitPrimary | ChunkPrimary, item: PromptItem) -> tuple[Any, str | None]:
    """(messages, prompt) for ``item``; a chat API gets a text to continue as the user's message."""
    if item.prompt is not None and isinstance(primary, ChunkPrimary):
        return [{"role": "user", "content": item.prompt}], None
    return item.messages, item.prompt


def _run(sup: Supervisor, primary: LogitPrimary | ChunkPrimary, item: PromptItem, args: argparse.Namespace, *,
         supervise: bool, seed: int | None = None) -> GenerationResult:
    messages, prompt = _request(primary, item)
    return sup.generate(
        primary, messages, prompt=prompt, max_tokens=args.max_tokens, temperature=args.temperature,
        top_p=args.top_p, seed=args.seed if seed is None else seed, supervise=supervise,
    )


def _describe(event: InterventionEvent) -> str:
    text = f"{event.kind} at token {event.position} (risk {event.risk:.2f}"
    text += f", {event.category})" if event.category else ")"
    if event.removed_text:
        text += f" removed {event.removed_text!r}"
    if event.kind in ("scorer_error", "conversation"):
        text += f": {event.detail}"
    return text


def _columns(left: str, right: str, width: int) -> str:
    half = (width - 3) // 2
    left_lines = textwrap.wrap(left.replace("\n", " ") or "(empty)", half) or [""]
    right_lines = textwrap.wrap(right.replace("\n", " ") or "(empty)", half) or [""]
    rows = max(len(left_lines), len(right_lines))
    left_lines += [""] * (rows - len(left_lines))
    right_lines += [""] * (rows - len(right_lines))
    return "\n".join(f"{a:<{half}} | {b}" for a, b in zip(left_lines, right_lines))


def cmd_demo(args: argparse.Namespace) -> int:
    sup = _supervisor(args)
    started = time.perf_counter()
    primary = load_primary(args.primary)
    print(f"primary {primary.name!r} ({type(primary).__name__}) loaded in {time.perf_counter() - started:.1f} s; "
          f"scorer {sup.scorer.name!r}; act threshold {sup.policy.act_threshold}, "
          f"checkpoint every {sup.policy.checkpoint_every} tokens")
    width = min(shutil.get_terminal_size((120, 20)).columns, 160)
    totals = {"unsupervised_s": 0.0, "supervised_s": 0.0, "interventions": 0}
    for item in bundled_prompts("demo"):
        plain = _run(sup, primary, item, args, supervise=False)
        guarded = _run(sup, primary, item, args, supervise=True)
        risks = sup.scorer.assess([plain.text, guarded.text])
        print("=" * width)
        print(f"[{item.mode}] {item.text}")
        print(f"  source: {item.source}")
        print("-" * width)
        print(_columns(
            f"UNSUPERVISED ({plain.timings.total_s:.2f} s, risk {risks[0].risk:.2f})",
            f"SUPERVISED ({guarded.timings.total_s:.2f} s, risk {risks[1].risk:.2f}, {guarded.stop_reason})", width))
        print(_columns(plain.text, guarded.text, width))
        for event in guarded.events:
            print(f"  > {_describe(event)}")
        totals["unsupervised_s"] += plain.timings.total_s
        totals["supervised_s"] += guarded.timings.total_s
        totals["interventions"] += len(guarded.events)
    print("=" * width)
    ratio = totals["supervised_s"] / max(totals["unsupervised_s"], 1e-9)
    print(f"total: unsupervised {totals['unsupervised_s']:.1f} s, supervised {totals['supervised_s']:.1f} s "
          f"(ratio {ratio:.2f}), {totals['interventions']} interventions")
    return 0


def cmd_chat(args: argparse.Namespace) -> int:
    sup = _supervisor(args)
    primary = load_primary(args.primary)
    tty = sys.stdout.isatty()
    dim, reset = ("\033[2m", "\033[0m") if tty else ("", "")

    def show(event: InterventionEvent) -> None:
        print(f"{dim}[{_describe(event)}]{reset}", end="", flush=True)

    history: list[Message] = []
    if args.system:
        history.append({"role": "system", "content": args.system})
    print("Supervised chat. Interventions appear [in brackets]; they are not part of the answer. Ctrl-D to quit.")
    turn = 0
    while True:
        try:
            user = input("you> ")
        except (EOFError, KeyboardInterrupt):
            print()
            return 0
        if not user.strip():
            continue
        history.append({"role": "user", "content": user})
        dropped = fit_history(primary, history, args.max_tokens)
        if dropped:
            print(f"{dim}[the conversation outgrew the model's context: the oldest {dropped} messages are no longer "
                  f"sent]{reset}")
        print("bot> ", end="", flush=True)
        try:
            stream = sup.stream(primary, history, max_tokens=args.max_tokens, temperature=args.temperature,
                                top_p=args.top_p, seed=args.seed + turn, on_event=show)
            for delta in stream:
                print(delta, end="", flush=True)
        except SupervisorError as exc:  # one failed turn; the conversation goes on
            print(f"\n{dim}[this turn failed: {exc}]{reset}")
            history.pop()
            continue
        print()
        assert stream.result is not None
        history.append({"role": "assistant", "content": stream.result.text})
        turn += 1


def fit_history(primary: LogitPrimary | ChunkPrimary, history: list[Message], max_tokens: int) -> int:
    """Drop the oldest turns (never the system message or the last user message) until the conversation and
    ``max_tokens`` fit a local primary's context; returns how many messages were dropped. Hosted primaries
    report their own limit."""
    if not isinstance(primary, LogitPrimary):
        return 0
    dropped = 0
    first = 1 if history and history[0]["role"] == "system" else 0
    while len(history) - first > 1 and len(primary.chat_prompt(history)) + max_tokens > primary.context_length:
        del history[first]
        dropped += 1
    return dropped


def _write_result(out: TextIO, index: int, item: PromptItem, result: GenerationResult, supervised: bool) -> None:
    record: dict[str, Any] = {
        "index": index,
        "id": item.id,
        "mode": item.mode,
        "input": item.messages if item.messages is not None else item.prompt,
        "supervised": supervised,
        **result.model_dump(),
    }
    out.write(json.dumps(record, ensure_ascii=False) + "\n")
    out.flush()


def writable_output(path: str) -> Path:
    """``path`` as an output file, checked before any work: its folder exists and can be written, and it is
    not a folder itself. Nothing is opened (an existing file is left as it is)."""
    output = Path(path)
    folder = output.parent
    if output.is_dir():
        raise InputError(f"--output {path!r} is a folder; give a file path")
    if not folder.is_dir():
        raise InputError(f"--output {path!r}: the folder {str(folder)!r} does not exist")
    if not os.access(folder, os.W_OK) or (output.exists() and not os.access(output, os.W_OK)):
        raise InputError(f"--output {path!r} cannot be written (permission denied)")
    return output


def cmd_generate(args: argparse.Namespace) -> int:
    output = writable_output(args.output)
    items = read_jsonl(args.input, default_mode=args.mode)
    sup = _supervisor(args)
    primary = load_primary(args.primary)
    # Results go to a file beside the output, renamed over it once all are written: an existing output is
    # replaced only by a complete one, and a run that fails halfway keeps what it finished.
    partial = output.with_name(output.name + ".partial")
    written = 0
    try:
        with partial.open("w", encoding="utf-8") as out:
            for index, item in enumerate(items):
                result = _run(sup, primary, item, args, supervise=not args.no_supervision, seed=args.seed + index)
                _write_result(out, index, item, result, not args.no_supervision)
                written += 1
                print(f"\rgenerate: {written}/{len(items)} prompts", end="\n" if written == len(items) else "",
                      file=sys.stderr, flush=True)
    except BaseException:
        if written:
            print(f"supervisor: {written} of {len(items)} results were finished; they are in {partial}",
                  file=sys.stderr)
        else:
            partial.unlink(missing_ok=True)
        raise
    partial.replace(output)
    print(f"wrote {len(items)} results to {output}", file=sys.stderr)
    return 0


def cmd_score_conversations(args: argparse.Namespace) -> int:
    """``supervisor score --conversation``: one JSON line per ``{"messages": [...]}`` line, with every turn."""
    from supervisor.conversation import ConversationMeasure

    scorer = get_scorer(args.scorer)
    policy = Policy() if args.policy is None else as_policy(args.policy)
    for where, record in json_lines(decode_utf8(sys.stdin.buffer.read(), "stdin").splitlines(), "stdin"):
        if not isinstance(record, dict) or not isinstance(record.get("messages"), list):
            raise InputError(f'{where}: expected {{"messages": [{{"role": ..., "content": ...}}, ...]}}')
        messages = [m for m in record["messages"] if isinstance(m, dict)]
        for index, message in enumerate(messages):
            if isinstance(message.get("content"), str):
                check_unicode(message["content"], f"{where}: messages[{index}].content")
        measure = ConversationMeasure(messages, scorer, policy)
        state = measure.state(assess_checked(scorer, measure.pending, None) if measure.pending else [])
        print(json.dumps({**({"id": record["id"]} if "id" in record else {}), **state.model_dump(mode="json")}))
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    if args.conversation:
        return cmd_score_conversations(args)
    texts: list[str] = []
    for where, record in json_lines(decode_utf8(sys.stdin.buffer.read(), "stdin").splitlines(), "stdin"):
        if isinstance(record, dict) and isinstance(record.get("text"), str):
            record = record["text"]
        if not isinstance(record, str):
            raise InputError(f'{where}: expected a JSON string or {{"text": ...}}')
        texts.append(check_unicode(record, where))
    scorer = get_scorer(args.scorer)
    for start in range(0, len(texts), args.batch_size):
        for assessment in assess_checked(scorer, texts[start : start + args.batch_size], None):
            print(json.dumps({
                "risk": round(assessment.risk, 4),
                "categories": {k: round(v, 4) for k, v in assessment.categories.items()},
                "flagged": assessment.risk >= args.threshold,
            }))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="supervisor", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="bundled provocative prompts, unsupervised vs supervised, side by side")
    _add_model_options(demo, max_tokens=48)
    demo.set_defaults(handler=cmd_demo)

    chat = commands.add_parser("chat", help="interactive chat under supervision")
    _add_model_options(chat, max_tokens=256)
    chat.add_argument("--system", default=None, help="system message")
    chat.set_defaults(handler=cmd_chat)

    generate = commands.add_parser("generate", help="batch generation from a JSONL file")
    _add_model_options(generate, max_tokens=128)
    generate.add_argument("--input", required=True, help="JSONL: a string, or {prompt|text|messages, mode?, id?} per line")
    generate.add_argument("--output", required=True, help="JSONL output, one result per input line")
    generate.add_argument("--mode", choices=("chat", "completion"), default="chat",
                          help="how string inputs are used (default chat)")
    generate.add_argument("--no-supervision", action="store_true", help="same decoding, unchecked (baseline)")
    generate.set_defaults(handler=cmd_generate)

    for entry in entry_points(group="supervisor.commands"):  # commands of extensions: serve, the lab's eval
        entry.load()(commands)

    score = commands.add_parser("score", help="score texts from stdin (JSON strings or {\"text\": ...} per line)")
    score.add_argument("--scorer", default=None, help="scorer name (default: embedding)")
    score.add_argument("--threshold", type=probability, default=Policy().act_threshold,
                       help="flagged from this risk, 0 to 1 (default: the default policy's act_threshold, where the "
                       "embedding probe is calibrated)")
    score.add_argument("--batch-size", type=positive_int, default=32)
    score.add_argument("--conversation", action="store_true",
                       help='read {"messages": [...]} per line; print each conversation\'s turns and its state')
    score.add_argument("--policy", default=None, help="policy file for --conversation's zones (default: Policy())")
    score.set_defaults(handler=cmd_score)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except SupervisorError as exc:
        print(f"supervisor: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a file that cannot be read or written: say which, without a traceback
        print(f"supervisor: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("supervisor: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
