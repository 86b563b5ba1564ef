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

LLAMA="llama-cpp-python>=0.3.8,<0.4"
# llama.cpp's AMX kernels crash on the first prompt on some Intel CPUs (llama.cpp issue 20824),
# and a native build on a CPU with AMX has them: build without them there. pip's wheel cache
# does not know the flags, so such a build skips it, and a build that has them is replaced.
LLAMA_FLAGS=""
if grep -qw amx_int8 /proc/cpuinfo 2>/dev/null; then
    LLAMA_FLAGS="-DCMAKE_C_FLAGS=-mno-amx-int8 -DCMAKE_CXX_FLAGS=-mno-amx-int8"
    if .venv/bin/python -c "import llama_cpp, sys
sys.exit(b'AMX_INT8 = 1' not in llama_cpp.llama_print_system_info())" 2>/dev/null; then
        echo "sgtui: rebuilding llama-cpp-python without the AMX kernels (several minutes)"
        $PIP uninstall --quiet --yes llama-cpp-python
    fi
fi
NO_CACHE=${LLAMA_FLAGS:+--no-cache-dir}

if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then
    echo "sgtui: NVIDIA GPU found: installing CUDA builds and the GPU extras"
    $PIP install --quiet torch
    CMAKE_ARGS="-DGGML_CUDA=on $LLAMA_FLAGS" $PIP install --quiet $NO_CACHE "$LLAMA"
    EXTRAS="gpu${EXTRAS:+,$EXTRAS}"
else
    echo "sgtui: no GPU: CPU build of torch"
    $PIP install --quiet "torch==2.13.0"
    if ! .venv/bin/python -c "import llama_cpp" 2>/dev/null; then
        echo "sgtui: building llama-cpp-python from source (several minutes on 2 cores)"
        CMAKE_ARGS="$LLAMA_FLAGS" $PIP install --quiet $NO_CACHE "$LLAMA"
    fi
fi

if [ -n "$EXTRAS" ]; then
    $PIP install --quiet -e ".[$EXTRAS]"
else
    $PIP install --quiet -e .
fi
.venv/bin/sgtui doctor
