r"""Sequence models, JAX vs PyTorch in one run: plain gradient and α methods.

  PYTHONPATH=/tmp/torchsite .venv/bin/python -m benchmarks.bench_sequence \
      [--configs=gpt:32,gpt:128,vit:32,vit:128] [--reps=3] [--rss_calls=2] \
      [--noagree] [--out_md=benchmarks/README_sequence.md] \
      [--out_png=benchmarks/sequence.png]
  PYTHONPATH=/tmp/torchsite .venv/bin/python -m benchmarks.bench_sequence \
      --tiny --configs=gpt:4 --reps=1 --rss_calls=1 --agree_batch=2 \
      --out_md=/tmp/seq.md --out_png=/tmp/seq.png          # smoke test

(PYTHONPATH: wherever CPU torch 2.13.0, opacus 1.6.0 and backpack 1.7.1 are,
unless the `bench` extra is installed in the venv.)

Models (sizes in `SIZES`; `--tiny` shrinks them for a smoke test):
  gpt  `models.transformer.Transformer`: 6 layers, d_model 256, 4 heads,
       T = 128, vocabulary 512, tied embeddings (`Embed.attend`), pre-LN,
       causal attention, GELU MLP; 4,902,912 params; next-token loss
       averaged over the 128 positions of each example.
  vit  `models.vit.ViT` on 28x28x1: patch 4 (49 patches + CLS), d_model 128,
       4 heads, 4 layers; 803,338 params; cross-entropy.
Torch twins: `benchmarks/torch_sequence.py`.

Per config, one fresh process times every method of both frameworks
round-robin (`harness.time_interleaved`: median and min-max over the reps,
after one warm-up call that includes compilation / hook set-up); then each
method runs alone in a fresh process (`--rss_calls` calls) for its peak RSS
(VmHWM), and, for JAX, XLA's compiled temp + output bytes. An agreement run
(`--noagree` skips it) copies the JAX weights into the torch twins, checks
the logits, and prints every method's m-coherence on the same batch.

Methods: JAX `jax.grad` of the mean loss; α = `coherence_stats(...).alpha()`
with method='vmap' and method='ghost' (falls back to 'auto', noted, if
'ghost' raises); torch `.backward()`; torch.func vmap(grad); Opacus
`GradSampleModuleFastGradientClipping` with ghost clipping and with fast
gradient clipping; BackPACK BatchL2Grad. A method that cannot handle a model
is reported 'unsupported: <reason>'; per-example methods whose gradients
(B x #params x 4 bytes, held about twice) exceed --max_gib are skipped.
"""

import json
import os
import platform
import subprocess
import sys

from absl import app
from absl import flags

from benchmarks import harness

HERE = os.path.dirname(os.path.abspath(__file__))
MODULE = 'benchmarks.bench_sequence'
MODES = ('driver', 'time', 'rss', 'agree')

# The benchmark sizes, shared by the JAX models and their torch twins.
SIZES = {
    'gpt': dict(vocab_size=512, d_model=256, num_heads=4, num_layers=6,
                max_len=128, mlp_ratio=4),
    'vit': dict(num_classes=10, image_size=28, patch_size=4, d_model=128,
                num_heads=4, num_layers=4, mlp_ratio=4),
}
TINY = {
    'gpt': dict(vocab_size=32, d_model=16, num_heads=2, num_layers=1,
                max_len=8, mlp_ratio=4),
    'vit': dict(num_classes=10, image_size=28, patch_size=7, d_model=16,
                num_heads=2, num_layers=1, mlp_ratio=4),
}
NUM_PARAMS = {'gpt': 4_902_912, 'vit': 803_338}  # printed by the agree mode

_CONFIGS = flags.DEFINE_list('configs', ['gpt:32', 'gpt:128', 'vit:32',
                                         'vit:128'],
                             'model:batch pairs; models: gpt, vit.')
_REPS = flags.DEFINE_integer('reps', 3, 'Interleaved timed rounds.',
                             lower_bound=1)
_RSS_CALLS = flags.DEFINE_integer('rss_calls', 2, 'Calls in each peak-RSS '
                                  'process (the first compiles).',
                                  lower_bound=1)
_MAX_GIB = flags.DEFINE_float('max_gib', 16.0, 'Skip per-example methods whose '
                              'gradients would need more GiB than this.')
_AGREE_BATCH = flags.DEFINE_integer('agree_batch', 8, 'Batch of the agreement '
                                    'check (full-size models).', lower_bound=2)
_AGREE = flags.DEFINE_bool('agree', True, 'Run the agreement check (minutes '
                            'on a loaded CPU; one per report is enough).')
_TINY = flags.DEFINE_bool('tiny', False, 'Tiny models (smoke test, dry run).')
_TIMEOUT = flags.DEFINE_integer('timeout_s', 3600, 'Limit per fresh process.')
_OUT_MD = flags.DEFINE_string('out_md', os.path.join(HERE, 'README_sequence.md'),
                              'Markdown report (its results block is '
                              'replaced).')
_OUT_PNG = flags.DEFINE_string('out_png', os.path.join(HERE, 'sequence.png'),
                               'Bar plot.')
_MODE = flags.DEFINE_enum('mode', 'driver', MODES, 'driver: the whole report; '
                          'the others are the fresh processes it starts.')
_SPEC = flags.DEFINE_string('spec', '', 'Internal: the case of a time or rss '
                            'process.')

flags.register_validator(
    'configs', lambda configs: all(
        c.count(':') == 1 and c.split(':')[0] in SIZES
        and c.split(':')[1].isdigit() for c in configs),
    message='--configs: pass model:batch pairs, model gpt or vit, e.g. '
    'gpt:32,vit:128.')

JAX_METHODS = ('jax plain grad', 'jax alpha vmap', 'jax alpha ghost')
TORCH_METHODS = ('torch plain grad', 'torch alpha vmap (torch.func)',
                 'torch alpha opacus ghost clipping',
                 'torch alpha opacus fast gradient clipping',
                 'torch alpha backpack')  # == torch_sequence.TORCH_METHODS
ALL_METHODS = JAX_METHODS + TORCH_METHODS
PER_EXAMPLE = ('jax alpha vmap', 'torch alpha vmap (torch.func)')
NEEDS = {'torch alpha opacus ghost clipping': 'opacus',
         'torch alpha opacus fast gradient clipping': 'opacus',
         'torch alpha backpack': 'backpack'}


def sizes_of(model_name: str, tiny: bool) -> dict:
  return dict((TINY if tiny else SIZES)[model_name])


# ------------------------------------------------------------------ JAX ----

def jax_problem(model_name: str, batch_size: int, tiny: bool, seed: int = 0):
  """(loss_fn, params, batch) of the JAX model, random data."""
  import jax  # pylint: disable=g-import-not-at-top
  from flax import nnx  # pylint: disable=g-import-not-at-top
  import coherence_jax as cj  # pylint: disable=g-import-not-at-top
  from coherence_jax.models import losses  # pylint: disable=g-import-not-at-top
  from coherence_jax.models.transformer import Transformer  # pylint: disable=g-import-not-at-top
  from coherence_jax.models.vit import ViT  # pylint: disable=g-import-not-at-top
  sizes = sizes_of(model_name, tiny)
  k1, k2 = jax.random.split(jax.random.key(seed))
  if model_name == 'gpt':
    model = Transformer(**sizes, tie_embeddings=True, rngs=nnx.Rngs(seed))
    loss = losses.next_token_loss   # the model sees tokens[:, :-1]: T tokens
    batch = {'tokens': jax.random.randint(
        k1, (batch_size, sizes['max_len'] + 1), 0, sizes['vocab_size'])}
  else:
    model = ViT(**sizes, pool='cls', rngs=nnx.Rngs(seed))
    loss = losses.cross_entropy_loss
    side = sizes['image_size']
    batch = {'image': jax.random.uniform(k1, (batch_size, side, side, 1)),
             'label': jax.random.randint(k2, (batch_size,), 0,
                                         sizes['num_classes'])}
  loss_fn, params = cj.from_nnx(model, loss)
  return loss_fn, params, batch


def ghost_method(loss_fn, params, batch):
  """('ghost', None), or ('auto', why) if method='ghost' raises for a layer."""
  import jax  # pylint: disable=g-import-not-at-top
  import coherence_jax as cj  # pylint: disable=g-import-not-at-top
  try:
    jax.eval_shape(lambda p, b: cj.coherence_stats(
        loss_fn, p, b, method='ghost').alpha(), params, batch)
  except ValueError as e:
    return 'auto', 'ghost raised, ran auto: ' + ' '.join(str(e).split())[:150]
  return 'ghost', None


def jax_case(name, loss_fn, params, batch):
  """(jitted f(params, batch), note)."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import coherence_jax as cj  # pylint: disable=g-import-not-at-top
  if name == 'jax plain grad':
    return jax.jit(jax.grad(lambda p, b: jnp.mean(loss_fn(p, b)))), None
  method, note = ('vmap', None) if name == 'jax alpha vmap' else ghost_method(
      loss_fn, params, batch)
  return jax.jit(lambda p, b: cj.coherence_stats(
      loss_fn, p, b, method=method).alpha()), note


def jax_runner(name, model_name, batch_size, tiny):
  """(call, note, jitted, args); call() blocks until the result is ready."""
  import jax  # pylint: disable=g-import-not-at-top
  loss_fn, params, batch = jax_problem(model_name, batch_size, tiny)
  fn, note = jax_case(name, loss_fn, params, batch)
  return (lambda: jax.block_until_ready(fn(params, batch))), note, fn, (
      params, batch)


def torch_runner(name, model_name, batch_size, tiny):
  from benchmarks import torch_sequence as ts  # pylint: disable=g-import-not-at-top
  model, x, y = ts.problem(model_name, batch_size, sizes_of(model_name, tiny))
  return ts.make_case(name, model_name, model, x, y), None, None, None


def runner(name, model_name, batch_size, tiny):
  if name.startswith('jax'):
    return jax_runner(name, model_name, batch_size, tiny)
  return torch_runner(name, model_name, batch_size, tiny)


def installed(module: str) -> bool:
  import importlib  # pylint: disable=g-import-not-at-top
  try:
    importlib.import_module(module)
  except ImportError:
    return False
  return True


def skip_reason(name, model_name, batch_size, max_gib, tiny):
  if name in NEEDS and not installed(NEEDS[name]):
    return f'skipped: {NEEDS[name]} is not installed'
  if name in PER_EXAMPLE and not tiny:
    gib = 2 * batch_size * NUM_PARAMS[model_name] * 4 / 2**30
    if gib > max_gib:
      return f'skipped: per-example grads ~{gib:.0f} GiB > {max_gib:g} GiB'
  return None


def first_call(name, fn):
  """Runs fn once (the warm-up); a reason string if the method cannot."""
  if name.startswith('jax'):
    fn()
    return None
  from benchmarks import torch_sequence as ts  # pylint: disable=g-import-not-at-top
  try:
    fn()
  except ts.Unsupported as e:
    return f'unsupported: {e}'
  return None


# -------------------------------------------------------- subprocess modes ----

def mode_time(spec, reps, max_gib, tiny):
  model_name, batch_size = spec.split('|')
  batch_size = int(batch_size)
  fns, skipped, notes = {}, {}, {}
  for name in ALL_METHODS:
    reason = skip_reason(name, model_name, batch_size, max_gib, tiny)
    if not reason:
      fn, note, _, _ = runner(name, model_name, batch_size, tiny)
      reason = first_call(name, fn)   # warm-up: compile, hooks
    if reason:
      skipped[name] = reason
      continue
    fns[name] = fn
    if note:
      notes[name] = note
  out = harness.time_interleaved(fns, reps, warmup=0, sync=lambda r: r)
  print(json.dumps({'times': out, 'skipped': skipped, 'notes': notes,
                    'load': _loadavg()}))


def mode_rss(spec, calls, tiny):
  name, model_name, batch_size = spec.split('|')
  fn, _, jitted, args = runner(name, model_name, int(batch_size), tiny)
  setup = harness.max_rss_mib()
  for _ in range(calls):
    fn()
  out = {'peak_rss_mib': harness.max_rss_mib(), 'setup_rss_mib': setup}
  device_peak = _device_peak_bytes(name)
  if device_peak:
    out['peak_dev_mib'] = device_peak / 2**20
  if jitted is not None:
    out['xla_bytes'] = harness.compiled_bytes(jitted, *args)
  print(json.dumps(out))


def _device_peak_bytes(name):
  """Peak accelerator memory of this process (None on CPU)."""
  if name.startswith('jax'):
    import jax  # pylint: disable=g-import-not-at-top
    stats = jax.local_devices()[0].memory_stats()
    return (stats or {}).get('peak_bytes_in_use')
  from benchmarks import torch_sequence as ts  # pylint: disable=g-import-not-at-top
  if ts.DEVICE.startswith('cuda'):
    return ts.torch.cuda.max_memory_allocated()
  return None


def mode_agree(batch_size, tiny):
  """Logits and m-coherence of each model and its torch twin, same weights."""
  import copy  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  from benchmarks import torch_sequence as ts  # pylint: disable=g-import-not-at-top
  import coherence_jax as cj  # pylint: disable=g-import-not-at-top
  result = {}
  for model_name in ('gpt', 'vit'):
    sizes = sizes_of(model_name, tiny)
    loss_fn, params, batch = jax_problem(model_name, batch_size, tiny, seed=1)
    out = {'params': int(sum(p.size for p in jax.tree.leaves(params)))}
    method, note = ghost_method(loss_fn, params, batch)
    if note:
      out['jax ghost note'] = note
    for name, m in (('jax vmap', 'vmap'), (f'jax {method}', method)):
      out[name] = float(cj.coherence_stats(loss_fn, params, batch,
                                           method=m).m_coherence())
    host = jax.device_get(params)
    if model_name == 'gpt':
      model = ts.gpt_from_jax(host, sizes)
      tokens = torch.from_numpy(np.asarray(batch['tokens'])).long()
      x, y = tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous()
      jax_logits = loss_fn.model(params)(batch['tokens'][:, :-1])
    else:
      model = ts.vit_from_jax(host, sizes)
      x = ts.images_nchw(batch['image'])
      y = torch.from_numpy(np.asarray(batch['label'])).long()
      jax_logits = loss_fn.model(params)(batch['image'])
    out['torch params'] = ts.num_params(model)
    with torch.no_grad():
      out['max |logits jax - torch|'] = float(
          np.abs(model(x).numpy() - np.asarray(jax_logits)).max())
    for name in TORCH_METHODS[1:]:
      if name in NEEDS and not installed(NEEDS[name]):
        continue
      short = name.replace('torch alpha ', 'torch ').replace(
          ' (torch.func)', '')
      try:
        stats = {
            'torch alpha vmap (torch.func)': ts.vmap_stats,
            'torch alpha backpack': lambda *a: ts.backpack_stats(
                a[0], ts.backpack_extend(a[1]), *a[2:]),
            'torch alpha opacus ghost clipping': lambda *a: ts.opacus_stats(
                a[0], ts.opacus_module(a[1], True), *a[2:]),
            'torch alpha opacus fast gradient clipping':
                lambda *a: ts.opacus_stats(
                    a[0], ts.opacus_module(a[1], False), *a[2:]),
        }[name]
        s_sq, q = stats(model_name, copy.deepcopy(model), x, y)
        out[short] = float(s_sq / q)
      except ts.Unsupported as e:
        out[short + ' note'] = f'unsupported: {e}'
    ref = out[f'jax {method}']
    values = [v for k, v in out.items() if k.startswith(('jax ', 'torch '))
              and isinstance(v, float)]
    out['max rel diff vs jax ghost'] = max(abs(v - ref) / abs(ref)
                                           for v in values)
    result[model_name] = out
  print(json.dumps(result))


# ------------------------------------------------------------------ driver ----

def _loadavg():
  with open('/proc/loadavg') as f:
    return ' '.join(f.read().split()[:3])


def _sub(args, timeout_s):
  """A fresh `python -m MODULE args` (repo root); its last JSON line."""
  try:
    res = subprocess.run([sys.executable, '-m', MODULE, *args],
                         capture_output=True, text=True, cwd=harness.REPO_ROOT,
                         timeout=timeout_s, check=False)
  except subprocess.TimeoutExpired:
    return {'error': f'timed out after {timeout_s} s'}
  if res.returncode:
    return {'error': (res.stderr.strip().splitlines() or ['?'])[-1][:200]}
  return harness.last_json_line(res.stdout)


def _ratio(value, base):
  return f'{value / base:.2f}x' if value and base else '-'


def table(rows):
  """The markdown table: time, peak RSS and XLA bytes, each / own plain."""
  def base(r):
    plain = 'jax plain grad' if r['method'].startswith('jax') \
        else 'torch plain grad'
    return next((b for b in rows if b['config'] == r['config']
                 and b['method'] == plain and 'median_ms' in b), {})
  device = any(r.get('peak_dev_mib') for r in rows)  # on an accelerator
  head = ['config', 'method', 'median ms', 'min-max ms', 'time / own plain',
          'peak RSS MiB', 'RSS / own plain']
  head += ['peak device MiB', 'device / own plain'] if device else []
  head += ['XLA temp+out MiB', 'XLA / plain', 'note']
  lines = ['| ' + ' | '.join(head) + ' |',
           '|---|---|' + '---:|' * (len(head) - 3) + '---|']
  for r in rows:
    if 'median_ms' not in r:
      lines.append(f"| {r['config']} | {r['method']} | "
                   + '- | ' * (len(head) - 3) + f"{r.get('note', '')} |")
      continue
    b = base(r)
    cells = [r['config'], r['method'], f"{r['median_ms']:.0f}",
             f"{r['min_ms']:.0f}-{r['max_ms']:.0f}",
             _ratio(r['median_ms'], b.get('median_ms'))]
    keys = ['peak_rss_mib'] + (['peak_dev_mib'] if device else [])
    for key in keys:
      cells += [f'{r[key]:.0f}' if r.get(key) else '-',
                _ratio(r.get(key), b.get(key))]
    xla = r.get('xla_bytes') if (r.get('xla_bytes') or 0) > 0 else None
    cells += [f'{xla / 2**20:.0f}' if xla else '-',
              _ratio(xla, b.get('xla_bytes')) if xla else '-',
              r.get('note', '')]
    lines.append('| ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def goal_table(rows):
  """Per config: JAX ghost α vs the target, and the best torch α."""
  lines = ['| config | JAX ghost α time / plain | peak RSS / plain | '
           'XLA bytes / plain | best torch α (time / torch plain, RSS / '
           'torch plain) | ghost α ms vs best torch α ms |',
           '|---|---:|---:|---:|---|---|']
  for config in dict.fromkeys(r['config'] for r in rows):
    get = {r['method']: r for r in rows if r['config'] == config}
    jp, jg, tp = (get.get(k, {}) for k in ('jax plain grad', 'jax alpha ghost',
                                            'torch plain grad'))
    torch_alpha = [get[k] for k in TORCH_METHODS[1:]
                   if k in get and 'median_ms' in get[k]]
    best = min(torch_alpha, key=lambda r: r['median_ms'], default=None)
    if 'median_ms' not in jg or 'median_ms' not in jp:
      lines.append(f'| {config} | - | - | - | - | - |')
      continue
    best_cell = best_ms = '-'
    if best and tp.get('median_ms'):
      best_cell = (f"{best['method'].replace('torch alpha ', '')}: "
                   f"{_ratio(best['median_ms'], tp['median_ms'])}, "
                   f"{_ratio(best.get('peak_rss_mib'), tp.get('peak_rss_mib'))}")
      best_ms = f"{jg['median_ms']:.0f} vs {best['median_ms']:.0f}"
    xla = (_ratio(jg.get('xla_bytes'), jp.get('xla_bytes'))
           if (jg.get('xla_bytes') or 0) > 0 else '-')
    lines.append(
        f"| {config} | {_ratio(jg['median_ms'], jp['median_ms'])} | "
        f"{_ratio(jg.get('peak_rss_mib'), jp.get('peak_rss_mib'))} | {xla} | "
        f'{best_cell} | {best_ms} |')
  return '\n'.join(lines)


def plot(rows, path):
  """Per config: time and peak RSS of each method / its framework's plain."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  configs = list(dict.fromkeys(r['config'] for r in rows))
  fig, axes = plt.subplots(2, len(configs), figsize=(4.6 * len(configs), 7.6),
                           squeeze=False)
  for col, config in enumerate(configs):
    sub = [r for r in rows if r['config'] == config and 'median_ms' in r]
    base = {fw: next((r for r in sub if r['method'] == f'{fw} plain grad'), {})
            for fw in ('jax', 'torch')}
    names = [r['method'].replace('torch alpha ', 'torch α ').replace(
        'jax alpha ', 'jax α ').replace('fast gradient clipping', 'FGC')
             .replace(' (torch.func)', '') for r in sub]
    colors = ['tab:blue' if n.startswith('jax') else 'tab:orange'
              for n in names]
    for row, (key, label) in enumerate((('median_ms', 'time'),
                                        ('peak_rss_mib', 'peak RSS'))):
      ax = axes[row][col]
      vals = [(r.get(key) or 0) / (base[r['method'].split()[0]].get(key) or 1)
              if r.get(key) else 0 for r in sub]
      ax.barh(range(len(sub)), vals, color=colors)
      for i, (v, r) in enumerate(zip(vals, sub)):
        text = (f"{r['median_ms']:.0f} ms" if key == 'median_ms'
                else f'{r.get(key) or 0:.0f} MiB')
        ax.text(v, i, ' ' + text, va='center', fontsize=7)
      ax.axvline(1.0, color='gray', lw=0.8, ls='--')
      ax.set_yticks(range(len(sub)))
      ax.set_yticklabels(names, fontsize=8)
      ax.invert_yaxis()
      ax.set_xlim(0, max(vals + [1]) * 1.35)
      ax.set_xlabel(f'{label} / own framework plain gradient')
      ax.set_title(config, fontsize=10)
  fig.suptitle('α of a GPT-style model and a ViT: JAX (ghost, vmap) vs torch '
               '(torch.func, Opacus, BackPACK), CPU')
  fig.tight_layout()
  fig.savefig(path, dpi=100)


def write_report(out_md, generated):
  start, end = '<!-- results:start -->', '<!-- results:end -->'
  block = start + '\n' + generated + end
  if os.path.exists(out_md):
    text = open(out_md).read()
    if start in text and end in text:
      head, rest = text.split(start, 1)
      text = head + block + rest.split(end, 1)[1]
    else:
      text = text + '\n' + block + '\n'
  else:
    text = ('# Sequence models: JAX vs PyTorch, plain gradient and α\n\n'
            + block + '\n')
  with open(out_md, 'w') as f:
    f.write(text)


def driver(configs, reps, rss_calls, max_gib, agree_batch, tiny, timeout_s,
           out_md, out_png, run_agree=True):
  """Times every config in fresh processes; writes out_md and out_png."""
  import jax  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  common = ['--tiny' if tiny else '--notiny']
  header = (f'jax {jax.__version__} ({jax.default_backend()}), torch '
            f'{torch.__version__} ({torch.get_num_threads()} threads), Python '
            f'{platform.python_version()}, {os.cpu_count()} CPUs (shared); '
            f'{reps} reps interleaved, {rss_calls} calls per RSS process'
            f'{"; TINY models" if tiny else ""}; load average at start '
            f'{_loadavg()}')
  print(header, flush=True)
  agree = (_sub(['--mode=agree', f'--agree_batch={agree_batch}', *common],
                timeout_s) if run_agree else {'error': 'not run (--noagree)'})
  print('agreement:', json.dumps(agree), flush=True)
  rows, loads = [], []
  for config in configs:
    model_name, batch_size = config.split(':')
    label = f'{model_name} B={batch_size}'
    timing = _sub(['--mode=time', f'--spec={model_name}|{batch_size}',
                   f'--reps={reps}', f'--max_gib={max_gib}', *common],
                  timeout_s)
    if 'error' in timing:
      print(label, 'timing failed:', timing['error'], flush=True)
      timing = {'times': {}, 'skipped': {}, 'notes': {},
                'error': timing['error']}
    loads.append(f"{label}: {timing.get('load', '?')}")
    for name in ALL_METHODS:
      row = {'config': label, 'method': name}
      if name in timing['skipped']:
        row['note'] = timing['skipped'][name]
      elif name in timing['times']:
        row.update(timing['times'][name])
        if name in timing['notes']:
          row['note'] = timing['notes'][name]
        rss = _sub(['--mode=rss', f'--spec={name}|{model_name}|{batch_size}',
                    f'--rss_calls={rss_calls}', *common], timeout_s)
        row.update({k: v for k, v in rss.items() if k != 'error'})
        if 'error' in rss:
          row['note'] = 'RSS run failed: ' + rss['error']
      else:
        row['note'] = 'timing run failed: ' + timing.get('error', '?')
      rows.append(row)
      print(json.dumps(row), flush=True)
  tail = (f'load average after each timing run: {"; ".join(loads)}; at end '
          f'{_loadavg()}')

  def agree_lines(model_name):
    res = agree.get(model_name, {}) if 'error' not in agree else {}
    if not res:
      return [f"    failed: {agree.get('error', '?')}"]
    return [f'    {k}: {v:.6g}' if isinstance(v, float) else f'    {k}: {v}'
            for k, v in res.items()]
  generated = '\n'.join([
      '<!-- generated by benchmarks/bench_sequence.py -->',
      '```', header, tail, '```', '', table(rows), '',
      'Against the target (JAX ghost α ≤ 1.2x the plain gradient '
      'in time and ≤ 1.15x in memory, ahead of every torch α):', '',
      goal_table(rows), '',
      f'Agreement (batch {agree_batch}, JAX weights copied into the torch '
      'twins; m-coherence = ‖S‖²/Q):', '',
      '```', 'gpt', *agree_lines('gpt'), 'vit', *agree_lines('vit'), '```',
      ''])
  print(generated)
  write_report(out_md, generated)
  plot(rows, out_png)


def main(argv):
  del argv
  mode, tiny = _MODE.value, _TINY.value
  if mode == 'rss':
    return mode_rss(_SPEC.value, _RSS_CALLS.value, tiny)
  if mode == 'time':
    return mode_time(_SPEC.value, _REPS.value, _MAX_GIB.value, tiny)
  if mode == 'agree':
    return mode_agree(_AGREE_BATCH.value, tiny)
  return driver(_CONFIGS.value, _REPS.value, _RSS_CALLS.value, _MAX_GIB.value,
                _AGREE_BATCH.value, tiny, _TIMEOUT.value, _OUT_MD.value,
                _OUT_PNG.value, _AGREE.value)


if __name__ == '__main__':
  app.run(main)
