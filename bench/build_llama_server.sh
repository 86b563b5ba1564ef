#!/usr/bin/env bash
# Build llama.cpp's own `llama-server` for bench/throughput.py's server paths, from the
# llama.cpp source that the installed llama-cpp-python's sdist vendors (same version as the
# in-process backend). A benchmark step, not a dependency: it writes bench/.work/llama-server.
#
#   bash bench/build_llama_server.sh [SDIST.tar.gz]
#
# Without an argument the sdist is fetched with pip (network needed once).
set -euo pipefail
cd "$(dirname "$0")/.."
work=bench/.work/llama-server-build
mkdir -p "$work"
version=$(.venv/bin/python -c 'import llama_cpp; print(llama_cpp.__version__)')
sdist=${1:-}
if [ -z "$sdist" ]; then
  .venv/bin/pip download --no-deps --no-binary :all: -d "$work" "llama-cpp-python==$version" >/dev/null
  sdist="$work/llama_cpp_python-$version.tar.gz"
fi
src="$work/llama_cpp_python-$version"
[ -d "$src" ] || tar -xzf "$sdist" -C "$work"
# without llama.cpp's AMX kernels on a CPU that has them (install.sh says why)
amx=()
grep -qw amx_int8 /proc/cpuinfo && amx=(-DCMAKE_C_FLAGS=-mno-amx-int8 -DCMAKE_CXX_FLAGS=-mno-amx-int8)
cmake -S "$src/vendor/llama.cpp" -B "$work/build" -DCMAKE_BUILD_TYPE=Release "${amx[@]}" \
  -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
  -DLLAMA_CURL=OFF -DBUILD_SHARED_LIBS=OFF >/dev/null
cmake --build "$work/build" --target llama-server -j "$(nproc)" >/dev/null
cp "$work/build/bin/llama-server" bench/.work/llama-server
echo "bench/.work/llama-server (llama.cpp from llama-cpp-python $version)"
