#!/usr/bin/env bash
# Side-by-side benchmark on one GPU (see README_side_by_side.md), plus
# examples/second of plain / α / robust-aggregation steps for the JAX models.
#
#   bash benchmarks/gpu.sh              # on a GPU machine: venv, installs, runs
#   INSTALL=0 bash benchmarks/gpu.sh    # offline GPU image that already has
#                                       # jax (CUDA), flax, optax, torch: no
#                                       # venv, no downloads (see below)
#   bash benchmarks/gpu.sh --dry-run    # here (CPU): tiny shapes, PY (default
#                                       # .venv/bin/python), never installs;
#                                       # checks the JAX throughput part runs
#
# Env: PART (table | throughput | all, default all), PYTHON (interpreter,
# default python3), VENV (default .venv-gpu),
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
# $OUT/throughput.md. The throughput part runs the CNN, ResNet-18-GN and
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

# PART=table or PART=throughput runs one half, to split the run over shorter
# commands (e.g. 10-minute slots on a lent machine); default both.
PART=${PART:-all}
case "$PART" in
  table|throughput|all) ;;
  *) echo "PART=$PART: use table, throughput or all" >&2; exit 2 ;;
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
  "$PY" -m pip install -e .
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
if [[ $DRY == 0 && $PART != throughput ]]; then
  "$PY" benchmarks/bench_side_by_side.py --reps=20 --max_gib=100 \
      --configs=cnn:128,cnn:512,resnet18gn:32,resnet18gn:128 \
      --out_md="$OUT/README_side_by_side_gpu.md" \
      --out_png="$OUT/side_by_side_gpu.png"
fi

# 2. JAX throughput: plain step, α vmap, α ghost, winsorized step, MoM step.
[[ $PART == table ]] && { echo "results in $OUT"; exit 0; }
DRY=$DRY "$PY" - "$OUT/throughput.md" <<'PYEOF'
import os, sys, time, statistics
import jax, jax.numpy as jnp, optax
from flax import nnx
import coherence_jax as cj
from coherence_jax import aggregators

DRY = os.environ.get('DRY') == '1'
REPS = 2 if DRY else 20
# (name, model factory, image shape, batch, micro-batch). MoM needs B divisible
# by 3: it uses the largest multiple of 3 <= B and examples/s counts those.
# With a micro-batch size, α vmap streams micro-batches of that many examples
# and the winsorized step is the streamed `winsorized_mean_grad` (two passes,
# memory bounded by the micro-batch) instead of the [B, P] per-example grads.
# ResNet-50 is BatchNorm in inference mode (from_nnx), 1000 classes.
R50 = lambda r: cj.models.ResNet50(rngs=r)
CONFIGS = ([('cnn', lambda r: cj.models.CNN(rngs=r), (28, 28, 1), 9, None),
            ('resnet18gn', lambda r: cj.models.ResNet18GN(rngs=r), (16, 16, 3), 9, None),
            ('resnet50', R50, (32, 32, 3), 9, 4)]
           if DRY else
           [('cnn', lambda r: cj.models.CNN(rngs=r), (28, 28, 1), 512, None),
            ('resnet18gn', lambda r: cj.models.ResNet18GN(rngs=r), (32, 32, 3), 128, None),
            ('resnet18gn', lambda r: cj.models.ResNet18GN(rngs=r), (32, 32, 3), 512, None),
            ('resnet50', R50, (224, 224, 3), 64, 32),
            ('resnet50', R50, (224, 224, 3), 256, 32)])

def make(model_fn, shape, b):
  loss_fn, params = cj.from_nnx(model_fn(nnx.Rngs(0)), cj.models.cross_entropy_loss)
  k1, k2 = jax.random.split(jax.random.key(0))
  batch = {'image': jax.random.uniform(k1, (b,) + shape),
           'label': jax.random.randint(k2, (b,), 0, 10)}
  return loss_fn, params, batch

def steps(loss_fn, mb=None):
  sgd = optax.sgd(0.1)
  mean_loss = lambda p, b: jnp.mean(loss_fn(p, b))
  def plain(p, b):
    g = jax.grad(mean_loss)(p, b)
    u, _ = sgd.update(g, sgd.init(p), p)
    return optax.apply_updates(p, u)
  def alpha(method, mb=None):
    return lambda p, b: cj.coherence_stats(loss_fn, p, b, method=method,
                                           microbatch_size=mb).alpha()
  win = optax.chain(aggregators.winsorized_mean(4), sgd)
  def winsorized(p, b):
    g = cj.per_example_grads(loss_fn, p, b)
    u, _ = win.update(g, win.init(p), p)
    return optax.apply_updates(p, u)
  def winsorized_streamed(p, b):
    g = cj.winsorized_mean_grad(loss_fn, p, b, c=4, microbatch_size=mb)
    u, _ = sgd.update(g, sgd.init(p), p)
    return optax.apply_updates(p, u)
  med = optax.chain(aggregators.coordinate_median(), sgd)
  def mom(p, b):
    g = cj.per_group_grads(loss_fn, p, b, 3)
    u, _ = med.update(g, med.init(p), p)
    return optax.apply_updates(p, u)
  if mb is None:
    return {'plain step': plain, 'alpha vmap': alpha('vmap'),
            'alpha ghost (auto)': alpha('auto'),
            'winsorized(4) step': winsorized, 'median-of-means(3) step': mom}
  return {'plain step': plain, f'alpha vmap (mb {mb})': alpha('vmap', mb),
          'alpha ghost (auto)': alpha('auto'),
          f'winsorized(4) step (streamed, mb {mb})': winsorized_streamed,
          'median-of-means(3) step': mom}

lines = [f'jax {jax.__version__} on {jax.devices()[0].device_kind}; {REPS} reps, median',
         '', '| model | batch | step | median ms | examples/s | / plain |', '|---|---|---|---|---|---|']
for name, model_fn, shape, b, mb in CONFIGS:
  base = None
  for step_name in steps(None, mb):
    bb = b - b % 3 if step_name.startswith('median') else b
    loss_fn, params, batch = make(model_fn, shape, bb)
    f = jax.jit(steps(loss_fn, mb)[step_name])
    try:
      jax.block_until_ready(f(params, batch))
      ts = []
      for _ in range(REPS):
        t = time.perf_counter(); jax.block_until_ready(f(params, batch))
        ts.append(time.perf_counter() - t)
      med_s = statistics.median(ts)
      base = base or med_s / bb
      lines.append(f'| {name} | {bb} | {step_name} | {med_s * 1e3:.1f} | '
                   f'{bb / med_s:.0f} | {(med_s / bb) / base:.2f}x |')
    except Exception as e:  # e.g. out of memory for per-example grads
      lines.append(f'| {name} | {bb} | {step_name} | failed: {type(e).__name__}: {str(e)[:80]} | | |')
    print(lines[-1], flush=True)
    del f, params, batch
lines.append('')
lines.append('Synthetic data. ResNet-50: 25,557,032 params, BatchNorm in inference '
             'mode (running statistics) for every step, as per-example gradients '
             'need; "mb N" rows stream micro-batches of N examples.')
open(sys.argv[1], 'w').write('\n'.join(lines) + '\n')
print('\n'.join(lines))
PYEOF
echo "results in $OUT"
