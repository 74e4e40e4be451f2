r"""ResNet-50 at ImageNet shape: measured ratios, projected to 8-256 devices.

Measures, on this machine, ResNet-50 (bottleneck 3-4-6-3, GroupNorm so that
examples are independent, 224x224x3, 1000 classes, 25.6M params) at a small
batch: the plain mean gradient, alpha with ghost norms and alpha with vmap
per-example gradients, in one interleaved run (time ratios), and XLA's
compiled memory (temp + output bytes) of each. Then prints the README's scale
table for a 50,000-example measurement sample at 8, 64 and 256 devices:
per-example memory, time per measurement and communication per step, for the
two estimators and each distributed aggregator (`aggregators.across_devices`).

What is measured and what is assumed:
  * measured: the time ratios ghost / plain and vmap / plain, the compiled
    memory per example, the parameter count P;
  * assumed (flag --examples_per_s_per_device): the plain-gradient training
    throughput of one accelerator for ResNet-50 (default 2,500 images/s, the
    order of published A100 / TPU v4 mixed-precision training figures);
  * derived: everything else, from P, B, c, k and the device count D; the
    communication by the rules of `aggregators.across_devices` (the scheme
    each distributed aggregator picks: `choose_scheme`,
    `median_of_means_scheme`), next to the all_gather schemes it replaced.
Every projected figure is an estimate. `--comm_only` prints the
communication table alone (P = ResNet-50's, nothing measured).

Run:
  .venv/bin/python -m benchmarks.bench_scale [--batch=4] [--reps=3]
  .venv/bin/python -m benchmarks.bench_scale --comm_only
"""

import math
from typing import Dict

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
from flax import nnx

import coherence_jax as cj
from benchmarks import harness
from coherence_jax.aggregators import across_devices
from coherence_jax.models import resnet

_BATCH = flags.DEFINE_integer('batch', 4, 'Examples per measured call.')
_REPS = flags.DEFINE_integer('reps', 3, 'Timed repetitions per method.')
_THROUGHPUT = flags.DEFINE_float(
    'examples_per_s_per_device', 2500.0,
    'Assumed plain-gradient ResNet-50 throughput of one accelerator.')
_SAMPLE = flags.DEFINE_integer('sample', 50_000, 'Measurement sample size.')
_DEVICES = flags.DEFINE_list('devices', ['8', '64', '256'], 'Device counts.')
_GLOBAL_BATCH = flags.DEFINE_integer(
    'global_batch', 1024, 'Training batch for the aggregators\' rows.')
_C = flags.DEFINE_integer('c', 4, 'Winsorized / trimmed c.')
_K = flags.DEFINE_integer('k', 8, 'Median of means: groups.')
_COMM_ONLY = flags.DEFINE_bool(
    'comm_only', False, 'Print the communication table only (P of '
    'ResNet-50, RESNET50_PARAMS; nothing measured).')

MIB = 2.0 ** 20
RESNET50_PARAMS = 25_557_032  # resnet50_problem's parameter count


def resnet50_problem(batch_size: int):
  """(loss_fn, params, batch) of ResNet-50-GN at 224x224x3."""
  model = resnet.ResNet(1000, 3, block='bottleneck', blocks=(3, 4, 6, 3),
                        stem='imagenet', norm='group', rngs=nnx.Rngs(0))
  loss_fn, params = cj.from_nnx(model, cj.models.cross_entropy_loss)
  k1, k2 = jax.random.split(jax.random.key(0))
  batch = {'image': jax.random.normal(k1, (batch_size, 224, 224, 3)),
           'label': jax.random.randint(k2, (batch_size,), 0, 1000)}
  return loss_fn, params, batch


def measure(batch_size: int, reps: int) -> Dict[str, Dict[str, float]]:
  """Per method: median ms, compiled MiB, and the ratios to the plain grad."""
  loss_fn, params, batch = resnet50_problem(batch_size)

  def alpha(method):
    return jax.jit(lambda p, b: cj.coherence_stats(
        loss_fn, p, b, method=method, check_independence=False).alpha())

  fns = {'plain grad': jax.jit(jax.grad(
             lambda p, b: jnp.mean(loss_fn(p, b)))),
         'alpha ghost': alpha('ghost'),
         'alpha vmap': alpha('vmap')}
  memory = {name: harness.compiled_bytes(fn, params, batch) / MIB
            for name, fn in fns.items()}
  times = harness.time_interleaved(
      {name: (lambda fn=fn: fn(params, batch)) for name, fn in fns.items()},
      reps=reps, warmup=1)
  plain = times['plain grad']['median_ms']
  out = {}
  for name in fns:
    out[name] = {'ms': times[name]['median_ms'], 'mib': memory[name],
                 'time_ratio': times[name]['median_ms'] / plain,
                 'memory_ratio': memory[name] / memory['plain grad']}
  out['params'] = {'count': sum(x.size for x in jax.tree.leaves(params))}
  return out


WINSORIZED = 'winsorized / trimmed (default: all_to_all)'
WINSORIZED_GATHER = 'winsorized (gather summaries, the old default)'
MEDIAN_OF_MEANS = 'median of means (default: all_to_all)'
MEDIAN_OF_MEANS_GATHER = 'median of means (gather chunk sums)'
STEP_METHODS = ('mean', WINSORIZED, WINSORIZED_GATHER, MEDIAN_OF_MEANS,
                MEDIAN_OF_MEANS_GATHER, 'gather per-example grads')


def communication_values(method: str, params: int, devices: int,
                         global_batch: int, c: int, k: int) -> int:
  """Values received per device per step, by across_devices' own rules.

  The all_to_all schemes pad the coordinates to a multiple of D (one dtype
  here); the figures are the collectives' output sizes (module docstring of
  coherence_jax/aggregators/across_devices.py, checked there against the
  compiled HLO).
  """
  local = global_batch // devices
  padded = -(-params // devices) * devices
  chunk = math.gcd(local, global_batch // k)
  if method == 'coherence (sharded)':
    return params + 2  # psum of sum_grads, sum of squared norms, count
  if method == 'mean':
    return params
  if method == WINSORIZED:
    scheme = across_devices.choose_scheme(local, c, devices)
    per = across_devices.values_per_coordinate(scheme, local, c, devices)
    return per * (params if scheme == 'gather_summaries' else padded)
  if method == WINSORIZED_GATHER:
    return across_devices.values_per_coordinate('gather_summaries', local, c,
                                                devices) * params
  if method == MEDIAN_OF_MEANS:
    if across_devices.median_of_means_scheme(local, k, devices) == 'gather':
      return global_batch // chunk * params
    return (local // chunk + 1) * padded
  if method == MEDIAN_OF_MEANS_GATHER:
    return global_batch // chunk * params
  if method == 'gather per-example grads':
    return global_batch * params
  raise ValueError(f'method: got {method!r}.')


def communication_mib(method: str, params: int, devices: int,
                      global_batch: int, c: int, k: int) -> float:
  """MiB received per device per step (float32), as across_devices states."""
  return communication_values(method, params, devices, global_batch, c,
                              k) * 4 / MIB


def projection(measured, devices, sample, throughput, global_batch, c, k):
  """Rows of the scale table (strings), one per (device count, method)."""
  params = measured['params']['count']
  rows = []
  for d in devices:
    per_device = math.ceil(sample / d)
    for name in ('alpha ghost', 'alpha vmap'):
      seconds = per_device * measured[name]['time_ratio'] / throughput
      per_example = (measured[name]['mib'] - measured['plain grad']['mib']
                     ) / _BATCH.value
      rows.append([d, name, f'{per_device:,}', f'{seconds:.1f} s',
                   f'{max(per_example, 0):.0f} MiB over plain',
                   f'{communication_mib("coherence (sharded)", params, d, 0, c, k):.0f} MiB once'])
    for name in STEP_METHODS:
      rows.append([d, f'step: {name}', f'{global_batch // d} / device', '-',
                   '-', f'{communication_mib(name, params, d, global_batch, c, k):,.0f} MiB'])
  return rows


def communication_table(params, devices, global_batch, c, k):
  """Rows [method, MiB at each device count] (strings)."""
  return [[name] + [
      f'{communication_mib(name, params, d, global_batch, c, k):,.0f}'
      for d in devices] for name in STEP_METHODS]


def main(argv):
  del argv
  if _COMM_ONLY.value:
    devices = [int(d) for d in _DEVICES.value]
    print(f'Communication per device and step, MiB (float32), P = '
          f'{RESNET50_PARAMS:,}, training batch {_GLOBAL_BATCH.value}, '
          f'c = {_C.value}, k = {_K.value}.')
    print(harness.markdown_table(
        ['step'] + [f'D = {d}' for d in devices],
        communication_table(RESNET50_PARAMS, devices, _GLOBAL_BATCH.value,
                            _C.value, _K.value)))
    return
  measured = measure(_BATCH.value, _REPS.value)
  print(f'ResNet-50-GN, 224x224x3, {measured["params"]["count"]:,} params, '
        f'B = {_BATCH.value}, backend {jax.default_backend()}')
  print(harness.markdown_table(
      ['method', 'median ms', 'time / plain', 'compiled MiB', 'memory / plain'],
      [[name, m['ms'], m['time_ratio'], m['mib'], m['memory_ratio']]
       for name, m in measured.items() if name != 'params']))
  print()
  print(f'Estimates: {_SAMPLE.value:,}-example measurement, assumed '
        f'{_THROUGHPUT.value:,.0f} plain-gradient examples/s per device, '
        f'training batch {_GLOBAL_BATCH.value}, c = {_C.value}, '
        f'k = {_K.value}.')
  print(harness.markdown_table(
      ['devices', 'what', 'examples per device', 'time (est.)',
       'memory per example (est.)', 'communication per device (est.)'],
      projection(measured, [int(d) for d in _DEVICES.value], _SAMPLE.value,
                 _THROUGHPUT.value, _GLOBAL_BATCH.value, _C.value, _K.value)))


if __name__ == '__main__':
  app.run(main)
