#!/usr/bin/env bash
# `datagen generate --api local` end to end on a GPU: the slot engine against transformers' plain
# generate, same model, seed, target and settings, a fresh SQLite file each. Figures: the README
# (Benchmarks) and bench/results/gpu_e2e_h200*.txt.
#
#   bash bench/gpu_e2e.sh MODEL [N] [TIMEOUT]      # MODEL: a .gguf file or HF directory; N: target (300)
#
# Each run is cut at TIMEOUT seconds (default 180); a cut run is drained and its rate counts what
# it accepted. The GGUF is converted once before either run, so neither pays for it.
set -u
M=${1:?usage: bash bench/gpu_e2e.sh MODEL [N] [TIMEOUT]}; N=${2:-300}; T=${3:-180}
OUT=${OUT:-bench/results}
python -c "from datagen.backends.local import resolve_model, model_dir; print(model_dir(*resolve_model('$M')))"
for mode in slots dynamic; do
  rm -f /tmp/gpu_e2e_$mode.db
  t0=$(date +%s.%N)
  DATAGEN_CUDA_CACHE=$mode timeout -k 40 "$T" python -m api.cli generate --api local --engine transformers --model "$M" \
    -n "$N" --run e2e --seed 7 --batch-size 64 --concurrency 128 --no-progress --db "sqlite:////tmp/gpu_e2e_$mode.db"
  echo "mode=$mode rc=$? wall_s=$(python -c "print(round($(date +%s.%N) - $t0, 1))")"
  python -m api.cli runs --db "sqlite:////tmp/gpu_e2e_$mode.db"
done
