r"""Examples/second of plain / α / robust-aggregation steps for the JAX models.

  .venv/bin/python -m benchmarks.gpu_throughput --out=benchmarks/gpu_results/throughput.md
  .venv/bin/python -m benchmarks.gpu_throughput --dry_run --out=/tmp/throughput.md

The second part of `gpu.sh` (see README_side_by_side.md). Per model and batch:
the median wall time of a jitted plain SGD step, α by vmap and by ghost norms
(`auto`), a winsorized(4) SGD step and a median-of-means(3) SGD step, with
examples/s and the time per example relative to the plain step. Writes a
markdown table to --out and prints it. The CNN, ResNet-18-GN and ResNet-50
(ImageNet 224x224x3 synthetic data, batch 64 and 256, BatchNorm in inference
mode as from_nnx sets it); for ResNet-50, α vmap and the winsorized step
stream micro-batches of 32 examples so that they fit. --dry_run: tiny shapes
and 2 reps, to check on a CPU that it runs.
"""

import statistics
import time

from absl import app
from absl import flags
from flax import nnx
import jax
import jax.numpy as jnp
import optax

import coherence_jax as cj
from coherence_jax import aggregators

_OUT = flags.DEFINE_string('out', 'benchmarks/gpu_results/throughput.md',
                           'Markdown table written here.')
_DRY_RUN = flags.DEFINE_bool('dry_run', False, 'Tiny shapes and 2 reps (a '
                             'check that it runs, e.g. on CPU).')
_REPS = flags.DEFINE_integer('reps', None, 'Timed calls per step (median); '
                             'default 20, 2 with --dry_run.', lower_bound=1)


def _cnn(rngs):
  return cj.models.CNN(rngs=rngs)


def _resnet18gn(rngs):
  return cj.models.ResNet18GN(rngs=rngs)


def _resnet50(rngs):
  return cj.models.ResNet50(rngs=rngs)


# (name, model factory, image shape, batch, micro-batch). MoM needs B divisible
# by 3: it uses the largest multiple of 3 <= B and examples/s counts those.
# With a micro-batch size, α vmap streams micro-batches of that many examples
# and the winsorized step is the streamed `winsorized_mean_grad` (two passes,
# memory bounded by the micro-batch) instead of the [B, P] per-example grads.
# ResNet-50 is BatchNorm in inference mode (from_nnx), 1000 classes.
DRY_CONFIGS = (('cnn', _cnn, (28, 28, 1), 9, None),
               ('resnet18gn', _resnet18gn, (16, 16, 3), 9, None),
               ('resnet50', _resnet50, (32, 32, 3), 9, 4))
CONFIGS = (('cnn', _cnn, (28, 28, 1), 512, None),
           ('resnet18gn', _resnet18gn, (32, 32, 3), 128, None),
           ('resnet18gn', _resnet18gn, (32, 32, 3), 512, None),
           ('resnet50', _resnet50, (224, 224, 3), 64, 32),
           ('resnet50', _resnet50, (224, 224, 3), 256, 32))


def make(model_fn, shape, b):
  loss_fn, params = cj.from_nnx(model_fn(nnx.Rngs(0)),
                                cj.models.cross_entropy_loss)
  k1, k2 = jax.random.split(jax.random.key(0))
  batch = {'image': jax.random.uniform(k1, (b,) + shape),
           'label': jax.random.randint(k2, (b,), 0, 10)}
  return loss_fn, params, batch


def steps(loss_fn, mb=None):
  """Step name -> f(params, batch)."""
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


def table(configs, reps):
  """Markdown lines, one row per model, batch and step (printed as they come)."""
  lines = [f'jax {jax.__version__} on {jax.devices()[0].device_kind}; '
           f'{reps} reps, median', '',
           '| model | batch | step | median ms | examples/s | / plain |',
           '|---|---|---|---|---|---|']
  for name, model_fn, shape, b, mb in configs:
    base = None
    for step_name in steps(None, mb):
      bb = b - b % 3 if step_name.startswith('median') else b
      loss_fn, params, batch = make(model_fn, shape, bb)
      f = jax.jit(steps(loss_fn, mb)[step_name])
      try:
        jax.block_until_ready(f(params, batch))
        ts = []
        for _ in range(reps):
          t = time.perf_counter()
          jax.block_until_ready(f(params, batch))
          ts.append(time.perf_counter() - t)
        med_s = statistics.median(ts)
        base = base or med_s / bb
        lines.append(f'| {name} | {bb} | {step_name} | {med_s * 1e3:.1f} | '
                     f'{bb / med_s:.0f} | {(med_s / bb) / base:.2f}x |')
      except Exception as e:  # pylint: disable=broad-except
        # e.g. out of memory for per-example grads
        lines.append(f'| {name} | {bb} | {step_name} | failed: '
                     f'{type(e).__name__}: {str(e)[:80]} | | |')
      print(lines[-1], flush=True)
      del f, params, batch
  lines.append('')
  lines.append('Synthetic data. ResNet-50: 25,557,032 params, BatchNorm in '
               'inference mode (running statistics) for every step, as '
               'per-example gradients need; "mb N" rows stream micro-batches '
               'of N examples.')
  return lines


def main(argv):
  del argv
  dry = _DRY_RUN.value
  reps = _REPS.value or (2 if dry else 20)
  lines = table(DRY_CONFIGS if dry else CONFIGS, reps)
  with open(_OUT.value, 'w') as f:
    f.write('\n'.join(lines) + '\n')
  print('\n'.join(lines))


if __name__ == '__main__':
  app.run(main)
