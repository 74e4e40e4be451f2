#!/usr/bin/env bash
# Side-by-side benchmark on one GPU (see README_side_by_side.md), the same for
# the sequence models (GPT-style transformer and ViT, README_sequence.md), plus
# examples/second of plain / α / robust-aggregation steps for the JAX models.
#
#   bash benchmarks/gpu.sh              # on a GPU machine: venv, installs, runs
#   INSTALL=0 bash benchmarks/gpu.sh    # offline GPU image that already has
#                                       # jax (CUDA), flax, optax, torch: no
#                                       # venv, no downloads (see below)
#   bash benchmarks/gpu.sh --dry-run    # here (CPU): tiny shapes, PY (default
#                                       # .venv/bin/python), never installs;
#                                       # checks the JAX throughput part runs
#                                       # and prints the table commands
#
# Env: PART (table | sequence | throughput | all, default all), PYTHON
# (interpreter, default python3), VENV (default .venv-gpu),
# JAX_SPEC (default "jax[cuda12]"), TORCH_INDEX (PyTorch wheel index for a
# CUDA torch, default https://download.pytorch.org/whl/cu126), TORCH_VERSION
# (default 2.13.0), OUT (default benchmarks/gpu_results).
# INSTALL=0: runs $PYTHON as it is with the repo on PYTHONPATH (the core needs
# only jax, flax, optax, numpy; the table also torch and matplotlib), after
# installing any wheels found in WHEELS (default .whl) into /tmp/gpu_site with
# --no-index. BackPACK and Opacus rows are skipped when those are missing; to
# have them offline, fetch their wheels beforehand where pip works, e.g. for a
# Python 3.12 image (BackPACK also needs einops, Opacus scipy and opt-einsum:
# add those wheels too if the image lacks them):
#   pip download --no-deps --only-binary=:all: --python-version 3.12 \
#     --implementation cp --platform manylinux2014_x86_64 -d .whl \
#     backpack-for-pytorch==1.7.1 opacus==1.6.0 unfoldNd einops
#
# Output: $OUT/README_side_by_side_gpu.md, $OUT/side_by_side_gpu.png,
# $OUT/README_sequence_gpu.md, $OUT/sequence_gpu.png, $OUT/throughput.md.
# The throughput part is benchmarks/gpu_throughput.py
# (`python -m benchmarks.gpu_throughput --help`): the CNN, ResNet-18-GN and
# ResNet-50 (ImageNet 224x224x3 synthetic data, batch 64 and 256, BatchNorm in
# inference mode as from_nnx sets it); for ResNet-50, α vmap and the
# winsorized step stream micro-batches of 32 examples so that they fit.
set -euo pipefail
cd "$(dirname "$0")/.."

DRY=0
[[ "${1:-}" == "--dry-run" ]] && DRY=1
OUT=${OUT:-benchmarks/gpu_results}
[[ $DRY == 1 ]] && OUT=${DRY_OUT:-/tmp/gpu_dry_run}
mkdir -p "$OUT"

# PART=table, sequence or throughput runs one part, to split the run over
# shorter commands (e.g. 10-minute slots on a lent machine); default all.
PART=${PART:-all}
case "$PART" in
  table|sequence|throughput|all) ;;
  *) echo "PART=$PART: use table, sequence, throughput or all" >&2; exit 2 ;;
esac

if [[ $DRY == 1 ]]; then
  INSTALL=0  # never installs; PY (or PYTHON) picks the interpreter
  PYTHON=${PY:-${PYTHON:-.venv/bin/python}}
  export JAX_PLATFORMS=cpu
fi
if [[ "${INSTALL:-1}" == 0 ]]; then
  PY=${PYTHON:-python3}
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
  WHEELS=${WHEELS:-.whl}
  if [[ $DRY == 0 && $PART != throughput ]] &&
      compgen -G "$WHEELS/*.whl" > /dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --upgrade \
        --target /tmp/gpu_site "$WHEELS"/*.whl
    export PYTHONPATH="/tmp/gpu_site:$PYTHONPATH"
  fi
else
  VENV=${VENV:-.venv-gpu}
  "${PYTHON:-python3}" -m venv "$VENV"
  PY="$VENV/bin/python"
  "$PY" -m pip install -U pip
  "$PY" -m pip install "${JAX_SPEC:-jax[cuda12]}"
  "$PY" -m pip install -e . matplotlib  # the core; matplotlib for the plot
  # CUDA torch from the PyTorch index; backpack/opacus without deps so that
  # they cannot swap torch (backpack's torchvision dependency is unused).
  "$PY" -m pip install "torch==${TORCH_VERSION:-2.13.0}" \
      --index-url "${TORCH_INDEX:-https://download.pytorch.org/whl/cu126}"
  "$PY" -m pip install --no-deps backpack-for-pytorch==1.7.1 opacus==1.6.0
  "$PY" -m pip install einops unfoldNd scipy opt-einsum
fi
"$PY" -c 'import jax, flax, optax; print("jax", jax.__version__, jax.devices(), "flax", flax.__version__, "optax", optax.__version__)'
if [[ $DRY == 0 ]]; then
  if [[ $PART != throughput ]]; then
    "$PY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available())'
  fi
  export BENCH_TORCH_DEVICE=cuda
  export XLA_PYTHON_CLIENT_PREALLOCATE=false  # let torch and JAX share the GPU
fi

# 1. The side-by-side table (same script as on CPU; bigger batches fit).
TABLE_CMD=(-m benchmarks.bench_side_by_side --reps=20 --max_gib=100
    --configs=cnn:128,cnn:512,resnet18gn:32,resnet18gn:128
    --out_md="$OUT/README_side_by_side_gpu.md"
    --out_png="$OUT/side_by_side_gpu.png")
# 1b. The sequence models: GPT-style (6 layers, d 256, T 128, V 512, tied)
# and ViT (28x28x1, patch 4, d 128, 4 layers) at batch 32 and 128; peak
# device memory per method comes from a fresh process each.
SEQUENCE_CMD=(-m benchmarks.bench_sequence --reps=20 --rss_calls=3
    --max_gib=100 --configs=gpt:32,gpt:128,vit:32,vit:128
    --out_md="$OUT/README_sequence_gpu.md" --out_png="$OUT/sequence_gpu.png")
# A dry run prints them only: they need torch, and take minutes even with
# --tiny on a shared CPU.
RUN=()
[[ $DRY == 1 ]] && RUN=(echo "would run:")
if [[ $PART == table || $PART == all ]]; then
  ${RUN[@]+"${RUN[@]}"} "$PY" "${TABLE_CMD[@]}"
fi
if [[ $PART == sequence || $PART == all ]]; then
  ${RUN[@]+"${RUN[@]}"} "$PY" "${SEQUENCE_CMD[@]}"
fi

# 2. JAX throughput: plain step, α vmap, α ghost, winsorized step, MoM step.
[[ $PART == table || $PART == sequence ]] && { echo "results in $OUT"; exit 0; }
DRY_FLAG=--nodry_run
[[ $DRY == 1 ]] && DRY_FLAG=--dry_run
"$PY" -m benchmarks.gpu_throughput --out="$OUT/throughput.md" "$DRY_FLAG"
echo "results in $OUT"
