#!/usr/bin/env bash
# Sets up .venv with sgtui and everything it needs, offline-safe after install.
# On a host where nvidia-smi works: CUDA llama.cpp and the GPU extras (unsloth, bitsandbytes).
# Elsewhere: a CPU build of torch, so no multi-GB CUDA wheels are pulled.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
EXTRAS=${SGTUI_EXTRAS:-}
for arg in "$@"; do
    case "$arg" in
        --with-tests) EXTRAS="${EXTRAS:+$EXTRAS,}test" ;;
        *) echo "usage: ./install.sh [--with-tests]" >&2; exit 2 ;;
    esac
done

if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
PIP=".venv/bin/python -m pip"
$PIP install --quiet --upgrade pip wheel setuptools

if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then
    echo "sgtui: NVIDIA GPU found: installing CUDA builds and the GPU extras"
    $PIP install --quiet torch
    CMAKE_ARGS="-DGGML_CUDA=on" $PIP install --quiet "llama-cpp-python>=0.3.8,<0.4"
    EXTRAS="gpu${EXTRAS:+,$EXTRAS}"
else
    echo "sgtui: no GPU: CPU build of torch"
    $PIP install --quiet "torch==2.13.0"
    if ! .venv/bin/python -c "import llama_cpp" 2>/dev/null; then
        echo "sgtui: building llama-cpp-python from source (several minutes on 2 cores)"
    fi
fi

if [ -n "$EXTRAS" ]; then
    $PIP install --quiet -e ".[$EXTRAS]"
else
    $PIP install --quiet -e .
fi
.venv/bin/sgtui doctor
