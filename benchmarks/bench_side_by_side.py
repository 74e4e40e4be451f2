r"""JAX vs PyTorch, one run: plain gradient and α (gradient coherence) methods.

  .venv/bin/python -m benchmarks.bench_side_by_side \
      [--configs=cnn:128,cnn:512,resnet18gn:32] [--reps=5] [--max_gib=16] \
      [--out_md=benchmarks/README_side_by_side.md] \
      [--out_png=benchmarks/side_by_side.png]
  .venv/bin/python -m benchmarks.bench_side_by_side --mode=xla_probe

Needs the `bench` extra (CPU torch 2.13.0, backpack-for-pytorch, opacus).
Per model/batch config, one fresh process times every method of both
frameworks round-robin (so load on the shared CPU hits all alike; median and
min-max over the reps, after one warm-up call that includes compilation);
then each method runs alone in its own fresh process (3 calls) for its peak
RSS (/proc/self/status VmHWM). An agreement check copies the JAX CNN weights
into the torch twin and prints the m-coherence of every method on the same
batch. Writes a markdown report and a PNG plot.

Methods: JAX plain `jax.grad` of the mean loss; α via `coherence_stats`
method='vmap' and method='auto' (ghost norms); torch plain `.backward()`;
torch.func vmap(grad); Opacus GradSampleModule; BackPACK BatchL2Grad.
Cases whose per-example gradients alone (B x #params x 4 bytes, held about
twice) would exceed --max_gib are skipped and reported as such.
"""

import json
import os
import platform
import time

from absl import app
from absl import flags

from benchmarks import harness

HERE = os.path.dirname(os.path.abspath(__file__))
MODULE = 'benchmarks.bench_side_by_side'
MODES = ('driver', 'time', 'rss', 'agree', 'xla_one', 'xla_probe')

_CONFIGS = flags.DEFINE_list('configs', ['cnn:128', 'cnn:512', 'resnet18gn:32'],
                             'model:batch pairs; models: cnn, resnet18gn.')
_REPS = flags.DEFINE_integer('reps', 5, 'Interleaved timed rounds.',
                             lower_bound=1)
_MAX_GIB = flags.DEFINE_float('max_gib', 16.0, 'Skip per-example methods whose '
                              'gradients would need more GiB than this.')
_OUT_MD = flags.DEFINE_string('out_md', os.path.join(
    HERE, 'README_side_by_side.md'), 'Markdown report (its results block is '
                              'replaced).')
_OUT_PNG = flags.DEFINE_string('out_png', os.path.join(HERE, 'side_by_side.png'),
                               'Bar plot.')
_MODE = flags.DEFINE_enum('mode', 'driver', MODES, 'driver: the whole report; '
                          'xla_probe: XLA:CPU flag sets; the others are the '
                          'fresh processes the driver starts.')
_SPEC = flags.DEFINE_string('spec', '', 'Internal: the case of a time or rss '
                            'process.')

flags.register_validator(
    'configs', lambda configs: all(
        c.count(':') == 1 and c.split(':')[0] in NUM_PARAMS
        and c.split(':')[1].isdigit() for c in configs),
    message='--configs: pass model:batch pairs, model cnn or resnet18gn, '
    'e.g. cnn:128,resnet18gn:32.')
JAX_METHODS = ('jax plain grad', 'jax alpha vmap', 'jax alpha ghost (auto)')
PER_EXAMPLE = ('jax alpha vmap', 'torch alpha vmap (torch.func)',
               'torch alpha opacus')
NUM_PARAMS = {'cnn': 421_642, 'resnet18gn': 11_173_962}


# ------------------------------------------------------------------ JAX ----

def jax_problem(model_name: str, batch_size: int, seed: int = 0):
  import jax  # pylint: disable=g-import-not-at-top
  from flax import nnx  # pylint: disable=g-import-not-at-top
  import coherence_jax as cj  # pylint: disable=g-import-not-at-top
  model, shape = {
      'cnn': (lambda: cj.models.CNN(rngs=nnx.Rngs(seed)), (28, 28, 1)),
      'resnet18gn': (lambda: cj.models.ResNet18GN(rngs=nnx.Rngs(seed)),
                     (32, 32, 3)),
  }[model_name]
  loss_fn, params = cj.from_nnx(model(), cj.models.cross_entropy_loss)
  k1, k2 = jax.random.split(jax.random.key(seed))
  batch = {'image': jax.random.uniform(k1, (batch_size,) + shape),
           'label': jax.random.randint(k2, (batch_size,), 0, 10)}
  return loss_fn, params, batch


def jax_case(name: str, loss_fn):
  """name -> jitted f(params, batch)."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import coherence_jax as cj  # pylint: disable=g-import-not-at-top
  if name == 'jax plain grad':
    return jax.jit(jax.grad(lambda p, b: jnp.mean(loss_fn(p, b))))
  method = {'jax alpha vmap': 'vmap', 'jax alpha ghost (auto)': 'auto'}[name]
  return jax.jit(lambda p, b: cj.coherence_stats(
      loss_fn, p, b, method=method).alpha())


def jax_runner(name, model_name, batch_size):
  import jax  # pylint: disable=g-import-not-at-top
  loss_fn, params, batch = jax_problem(model_name, batch_size)
  fn = jax_case(name, loss_fn)
  return lambda: jax.block_until_ready(fn(params, batch))


def torch_runner(name, model_name, batch_size):
  from benchmarks import torch_methods as bt  # pylint: disable=g-import-not-at-top
  model, x, y = bt.problem(model_name, batch_size)
  return bt.make_case(name, model, x, y)


def runner(name, model_name, batch_size):
  if name.startswith('jax'):
    return jax_runner(name, model_name, batch_size)
  return torch_runner(name, model_name, batch_size)


def all_methods():
  from benchmarks import torch_methods as bt  # pylint: disable=g-import-not-at-top
  return list(JAX_METHODS) + list(bt.TORCH_METHODS)


# Optional torch libraries per method, so that a machine without them (e.g. an
# offline GPU image with torch alone) still gets the other rows.
NEEDS = {'torch alpha opacus': 'opacus', 'torch alpha backpack': 'backpack'}


def installed(module: str) -> bool:
  """Whether `module` imports (its own dependencies included)."""
  import importlib  # pylint: disable=g-import-not-at-top
  try:
    importlib.import_module(module)
  except ImportError:
    return False
  return True


def skip_reason(name, model_name, batch_size, max_gib):
  from benchmarks import torch_methods as bt  # pylint: disable=g-import-not-at-top
  if name in NEEDS and not installed(NEEDS[name]):
    return f'skipped: {NEEDS[name]} is not installed'
  if name == 'torch alpha backpack' and model_name == 'resnet18gn':
    return ('unsupported: BackPACK 1.7.1 BatchL2Grad has no GroupNorm '
            'extension')
  if name in PER_EXAMPLE:
    gib = 2 * batch_size * NUM_PARAMS[model_name] * 4 / 2**30
    if gib > max_gib:
      return f'skipped: per-example grads ~{gib:.0f} GiB > {max_gib:g} GiB'
  del bt
  return None


# -------------------------------------------------------- subprocess modes ----

def max_rss_mib() -> float:
  return harness.max_rss_mib()


def mode_rss(spec):
  name, model_name, batch_size = spec.split('|')
  fn = runner(name, model_name, int(batch_size))
  for _ in range(3):
    fn()
  print(json.dumps({'peak_rss_mib': max_rss_mib()}))


def mode_time(spec, reps, max_gib):
  model_name, batch_size = spec.split('|')
  batch_size = int(batch_size)
  fns, skipped = {}, {}
  for name in all_methods():
    reason = skip_reason(name, model_name, batch_size, max_gib)
    if reason:
      skipped[name] = reason
      continue
    fns[name] = runner(name, model_name, batch_size)
  from benchmarks import torch_methods  # pylint: disable=g-import-not-at-top
  # warm-up once (compilation, opacus/backpack hooks), then round-robin reps.
  out = torch_methods.time_interleaved(fns, reps)
  for timing in out.values():
    timing['reps'] = reps
  print(json.dumps({'times': out, 'skipped': skipped}))


def mode_agree(batch_size=128):
  """m-coherence of the JAX CNN and its torch twin with identical weights."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  from benchmarks import torch_methods as bt  # pylint: disable=g-import-not-at-top
  import coherence_jax as cj  # pylint: disable=g-import-not-at-top
  loss_fn, params, batch = jax_problem('cnn', batch_size)
  out = {}
  for method in ('vmap', 'auto'):
    stats = cj.coherence_stats(loss_fn, params, batch, method=method)
    out[f'jax {method}'] = float(stats.m_coherence())
  model = bt.cnn_from_jax(jax.device_get(params))
  # NCHW with standard strides. A C=1 array from numpy (or permute of NHWC)
  # has strides (HW, 1, W, 1), which torch takes as channels_last, and with
  # such an input Opacus 1.6.0 returns an all-zero grad_sample for conv2,
  # silently (m-coherence 2.116 instead of 2.129 here).
  x = torch.empty(batch['image'].shape[0], 1, 28, 28)
  x.copy_(torch.from_numpy(np.asarray(batch['image'])).permute(0, 3, 1, 2))
  y = torch.from_numpy(np.asarray(batch['label'])).long()
  jax_logits = np.asarray(loss_fn.model(params)(batch['image']))
  with torch.no_grad():
    out['max |logits jax - torch|'] = float(
        np.abs(model(x).numpy() - jax_logits).max())
  import copy  # pylint: disable=g-import-not-at-top
  s2, q = bt.vmap_stats(copy.deepcopy(model), x, y)
  out['torch vmap'] = float(s2 / q)
  if installed('opacus'):
    from opacus import GradSampleModule  # pylint: disable=g-import-not-at-top
    s2, q = bt.opacus_stats(
        GradSampleModule(copy.deepcopy(model), loss_reduction='sum'), x, y)
    out['torch opacus'] = float(s2 / q)
  if installed('backpack'):
    s2, q = bt.backpack_stats(*bt.backpack_extend(copy.deepcopy(model)), x, y)
    out['torch backpack'] = float(s2 / q)
  ref = out['jax auto']
  out['max rel diff vs jax auto'] = max(
      abs(v - ref) / abs(ref) for k, v in out.items()
      if k.startswith(('jax', 'torch')) and not k.startswith('max'))
  print(json.dumps(out))


# ------------------------------------------------ XLA:CPU conv probe ----

XLA_FLAG_SETS = (
    '',
    '--xla_cpu_use_onednn=true',
    '--xla_cpu_experimental_onednn_fusion_type=dot',
    '--xla_cpu_experimental_xnn_fusion_type=dot',
    '--xla_cpu_experimental_ynn_fusion_type=dot',
    '--xla_cpu_enable_fast_math=true',
    '--xla_cpu_multi_thread_eigen=false',
)


def _conv_dot_reference(x, w, v):
  """float64 numpy: SAME 3x3 conv (NHWC, HWIO) -> relu -> flatten -> dot."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  x, w, v = (np.asarray(a, np.float64) for a in (x, w, v))
  b, h, wd, _ = x.shape
  xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  y = np.zeros((b, h, wd, w.shape[-1]))
  for i in range(3):
    for j in range(3):
      y += np.einsum('bhwc,co->bhwo', xp[:, i:i + h, j:j + wd], w[i, j])
  return np.maximum(y, 0).reshape(b, -1) @ v


def mode_xla_one(reps=7):
  """Under the current XLA_FLAGS: conv->dot and CNN-gradient errors, times."""
  import statistics  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  from benchmarks import torch_methods as bt  # pylint: disable=g-import-not-at-top
  out = {}
  # 1. A small conv -> dot program against float64 numpy.
  ks = jax.random.split(jax.random.key(3), 3)
  x = jax.random.normal(ks[0], (8, 12, 12, 4))
  w = jax.random.normal(ks[1], (3, 3, 4, 8))
  v = jax.random.normal(ks[2], (12 * 12 * 8, 10))
  def conv_dot(x, w, v):
    y = jax.lax.conv_general_dilated(x, w, (1, 1), 'SAME',
                                     dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
    return jax.nn.relu(y).reshape(x.shape[0], -1) @ v
  got = np.asarray(jax.jit(conv_dot)(x, w, v), np.float64)
  ref = _conv_dot_reference(x, w, v)
  out['conv_dot_rel_err'] = float(np.abs(got - ref).max() / np.abs(ref).max())
  # 2. CNN gradient (B=128) against torch with the same weights and data.
  loss_fn, params, batch = jax_problem('cnn', 128)
  grad = jax.jit(jax.grad(lambda p, b: jnp.mean(loss_fn(p, b))))
  g = jax.device_get(grad(params, batch))
  model = bt.cnn_from_jax(jax.device_get(params))
  xt = torch.empty(128, 1, 28, 28)
  xt.copy_(torch.from_numpy(np.asarray(batch['image'])).permute(0, 3, 1, 2))
  yt = torch.from_numpy(np.asarray(batch['label'])).long()
  torch.nn.functional.cross_entropy(model(xt), yt).backward()
  gt = bt.cnn_from_jax(g)  # JAX grads mapped into torch layout
  errs = [float((a.grad - b).abs().max() / a.grad.abs().max())
          for a, b in zip(model.parameters(), gt.parameters())]
  out['cnn_grad_rel_err_vs_torch'] = max(errs)
  # 3. Times: NNX CNN grad (NHWC), forward only, a pure-lax NCHW twin.
  def cnn_nchw(p, b):
    dn = ('NCHW', 'OIHW', 'NCHW')
    h = jnp.transpose(b['image'], (0, 3, 1, 2))
    for name in ('conv1', 'conv2'):
      k = jnp.transpose(p[name]['kernel'], (3, 2, 0, 1))
      h = jax.lax.conv_general_dilated(h, k, (1, 1), 'SAME',
                                       dimension_numbers=dn)
      h = jax.nn.relu(h + p[name]['bias'][None, :, None, None])
      h = jax.lax.reduce_window(h, -jnp.inf, jax.lax.max, (1, 1, 2, 2),
                                (1, 1, 2, 2), 'VALID')
    h = jnp.transpose(h, (0, 2, 3, 1)).reshape(h.shape[0], -1)
    h = jax.nn.relu(h @ p['dense1']['kernel'] + p['dense1']['bias'])
    logits = h @ p['dense2']['kernel'] + p['dense2']['bias']
    lse = jax.nn.logsumexp(logits, axis=-1)
    return jnp.mean(lse - jnp.take_along_axis(
        logits, b['label'][:, None], axis=-1)[:, 0])
  fns = {
      'grad_nhwc_ms': grad,
      'grad_nchw_ms': jax.jit(jax.grad(cnn_nchw)),
      'forward_ms': jax.jit(lambda p, b: jnp.mean(loss_fn(p, b))),
  }
  gn = jax.device_get(fns['grad_nchw_ms'](params, batch))
  out['nchw_vs_nhwc_grad_rel_err'] = max(
      float(np.abs(a - b).max() / np.abs(b).max())
      for a, b in zip(jax.tree.leaves(gn), jax.tree.leaves(g)))
  for f in fns.values():
    jax.block_until_ready(f(params, batch))
  times = {k: [] for k in fns}
  for _ in range(reps):
    for k, f in fns.items():
      t = time.perf_counter()
      jax.block_until_ready(f(params, batch))
      times[k].append((time.perf_counter() - t) * 1e3)
    t = time.perf_counter()
    model.zero_grad()
    torch.nn.functional.cross_entropy(model(xt), yt).backward()
    times.setdefault('torch_grad_ms', []).append(
        (time.perf_counter() - t) * 1e3)
  out.update({k: statistics.median(t) for k, t in times.items()})
  print(json.dumps(out))


def mode_xla_probe(rounds=2):
  """Each flag set in a fresh process, `rounds` times round-robin."""
  results = {f: [] for f in XLA_FLAG_SETS}
  for _ in range(rounds):
    for xla_flags in XLA_FLAG_SETS:
      env = dict(os.environ, XLA_FLAGS=xla_flags)
      res = harness.run_module(MODULE, ['--mode=xla_one'], check=False,
                               env=env)
      if res.returncode:
        results[xla_flags].append(
            {'error': (res.stderr.strip().splitlines() or ['?'])[-1][:160]})
      else:
        results[xla_flags].append(json.loads(res.stdout.strip().splitlines()[-1]))
      print(xla_flags or '(default)', json.dumps(results[xla_flags][-1]), flush=True)
  print(f'load average {_loadavg()}')
  print(json.dumps(results))


# ------------------------------------------------------------------ driver ----

def _sub(args):
  res = harness.run_module(MODULE, args, check=False)
  if res.returncode:
    return {'error': (res.stderr.strip().splitlines() or ['?'])[-1][:200]}
  return json.loads(res.stdout.strip().splitlines()[-1])


def _loadavg():
  with open('/proc/loadavg') as f:
    return ' '.join(f.read().split()[:3])


def plot(rows, path):
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  configs = list(dict.fromkeys(r['config'] for r in rows))
  fig, axes = plt.subplots(1, len(configs), figsize=(5.2 * len(configs), 4.6),
                           squeeze=False)
  for ax, config in zip(axes[0], configs):
    sub = [r for r in rows if r['config'] == config and 'median_ms' in r]
    names = [r['method'].replace('torch alpha ', 'torch α ').replace(
        'jax alpha ', 'jax α ') for r in sub]
    med = [r['median_ms'] for r in sub]
    lo = [r['median_ms'] - r['min_ms'] for r in sub]
    hi = [r['max_ms'] - r['median_ms'] for r in sub]
    colors = ['tab:blue' if n.startswith('jax') else 'tab:orange'
              for n in names]
    ax.barh(range(len(sub)), med, xerr=[lo, hi], color=colors)
    ax.set_yticks(range(len(sub)))
    ax.set_yticklabels(names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel('ms per call (median, min-max)')
    ax.set_title(config)
  fig.suptitle('α (gradient coherence) vs plain gradient, XLA:CPU vs '
               'torch CPU (2 shared cores)')
  fig.tight_layout()
  fig.savefig(path, dpi=110)


def main(argv):
  del argv
  mode = _MODE.value
  if mode == 'rss':
    return mode_rss(_SPEC.value)
  if mode == 'time':
    return mode_time(_SPEC.value, _REPS.value, _MAX_GIB.value)
  if mode == 'agree':
    return mode_agree()
  if mode == 'xla_one':
    return mode_xla_one()
  if mode == 'xla_probe':
    return mode_xla_probe()
  return driver(_CONFIGS.value, _REPS.value, _MAX_GIB.value, _OUT_MD.value,
                _OUT_PNG.value)


def driver(configs, reps, max_gib, out_md, out_png):
  """Times every config in fresh processes; writes out_md and out_png."""
  import jax  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  header = (f'jax {jax.__version__} (XLA:CPU), torch {torch.__version__} '
            f'({torch.get_num_threads()} threads), Python '
            f'{platform.python_version()}, {os.cpu_count()} CPUs (shared); '
            f'{reps} reps interleaved; load average at start '
            f'{_loadavg()}')
  print(header, flush=True)
  agree = _sub(['--mode=agree'])
  print('agreement:', json.dumps(agree), flush=True)
  rows = []
  for config in configs:
    model_name, batch_size = config.split(':')
    label = f'{model_name} B={batch_size}'
    timing = _sub(['--mode=time', f'--spec={model_name}|{batch_size}',
                   f'--reps={reps}', f'--max_gib={max_gib}'])
    if 'error' in timing:
      print(label, 'timing failed:', timing['error'], flush=True)
      timing = {'times': {}, 'skipped': {}}
    for name in all_methods():
      row = {'config': label, 'method': name}
      if name in timing['skipped']:
        row['note'] = timing['skipped'][name]
      elif name in timing['times']:
        row.update(timing['times'][name])
        rss = _sub(['--mode=rss', f'--spec={name}|{model_name}|{batch_size}'])
        row['peak_rss_mib'] = rss.get('peak_rss_mib')
        if 'error' in rss:
          row['note'] = 'RSS run failed: ' + rss['error']
      rows.append(row)
      print(json.dumps(row), flush=True)
    print('load average', _loadavg(), flush=True)
  tail = f'load average at end {_loadavg()}'
  table = ['| config | method | median ms | min-max ms | / own plain | '
           'peak RSS MiB (fresh process) | note |', '|---|---|---|---|---|---|---|']
  for r in rows:
    base_name = 'jax plain grad' if r['method'].startswith('jax') \
        else 'torch plain grad'
    base = next((b for b in rows if b['config'] == r['config']
                 and b['method'] == base_name and 'median_ms' in b), None)
    if 'median_ms' in r:
      ratio = f"{r['median_ms'] / base['median_ms']:.2f}x" if base else '-'
      rss = r.get('peak_rss_mib')
      table.append(
          f"| {r['config']} | {r['method']} | {r['median_ms']:.0f} | "
          f"{r['min_ms']:.0f}-{r['max_ms']:.0f} | {ratio} | "
          f"{rss:.0f} | {r.get('note', '')} |" if rss else
          f"| {r['config']} | {r['method']} | {r['median_ms']:.0f} | "
          f"{r['min_ms']:.0f}-{r['max_ms']:.0f} | {ratio} | - | "
          f"{r.get('note', '')} |")
    else:
      table.append(f"| {r['config']} | {r['method']} | - | - | - | - | "
                   f"{r.get('note', '')} |")
  agree_lines = [f'    {k}: {v:.6g}' for k, v in agree.items()] \
      if 'error' not in agree else [f"    failed: {agree['error']}"]
  generated = '\n'.join([
      '<!-- generated by benchmarks/bench_side_by_side.py -->',
      '```', header, tail, '```', '', '\n'.join(table), '',
      'Agreement (benchmark CNN, batch 128, JAX weights copied into the torch '
      'twin; m-coherence = ‖S‖²/Q):', '', '```', *agree_lines, '```', ''])
  print(generated)
  marker_start = '<!-- results:start -->'
  marker_end = '<!-- results:end -->'
  if os.path.exists(out_md):
    text = open(out_md).read()
    if marker_start in text and marker_end in text:
      head, rest = text.split(marker_start, 1)
      text = head + marker_start + '\n' + generated + marker_end + \
          rest.split(marker_end, 1)[1]
    else:
      text = text + '\n' + marker_start + '\n' + generated + marker_end + '\n'
  else:
    text = ('# JAX vs PyTorch side by side: plain gradient and α\n\n' +
            marker_start + '\n' + generated + marker_end + '\n')
  with open(out_md, 'w') as f:
    f.write(text)
  plot(rows, out_png)
  with open(os.path.join('/tmp', 'side_by_side_rows.json'), 'w') as f:
    json.dump({'rows': rows, 'agree': agree, 'header': header}, f)


if __name__ == '__main__':
  app.run(main)
