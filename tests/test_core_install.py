"""The core install (jax, jaxlib, flax, optax, numpy) is enough for the library.

The experiment dependencies (the `experiments` extra) are blocked in a fresh
interpreter; α and one robust-aggregation step must still work.
"""

import configparser
import pathlib
import re
import subprocess
import sys
import textwrap

ROOT = pathlib.Path(__file__).resolve().parent.parent

# Blocked in the child interpreter: any import of them fails.
BLOCKED = ('tensorflow_datasets', 'tensorflow', 'grain', 'orbax', 'matplotlib',
           'mlxtend', 'ml_collections')
# absl is a dependency of optax itself (optax.schedules imports absl.logging),
# so it cannot be blocked; instead no coherence_jax module may hold a name
# imported from it (or from the blocked ones).
NOT_IN_CORE = BLOCKED + ('absl',)

_CHILD = textwrap.dedent('''
    import sys
    import types

    BLOCKED = {blocked!r}
    NOT_IN_CORE = {not_in_core!r}


    class Block:
      def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in BLOCKED:
          raise ImportError(f'{{name}} is blocked: not a core dependency')
        return None


    def _origin(value):
      if isinstance(value, types.ModuleType):
        return value.__name__
      return getattr(value, '__module__', None) or ''


    def core_names_from(packages):
      """'module.attr' of coherence_jax names imported from `packages`."""
      found = []
      for name, module in list(sys.modules.items()):
        if name.split('.')[0] == 'coherence_jax' and module is not None:
          for attr, value in vars(module).items():
            if str(_origin(value)).split('.')[0] in packages:
              found.append(f'{{name}}.{{attr}}')
      return found


    sys.meta_path.insert(0, Block())

    import jax
    import jax.numpy as jnp
    import optax
    from flax import nnx

    import coherence_jax as cj
    from coherence_jax import aggregators
    # Cheap: the tfds, grain and mlxtend loaders import those when called.
    import coherence_jax.data
    import coherence_jax.data.tfds_source

    model = cj.models.MLP([12, 16, 3], rngs=nnx.Rngs(0))
    loss_fn, params = cj.from_nnx(model, cj.models.cross_entropy_loss)
    k1, k2 = jax.random.split(jax.random.key(0))
    batch = {{'image': jax.random.normal(k1, (8, 12)),
              'label': jax.random.randint(k2, (8,), 0, 3)}}

    alpha = float(cj.coherence_stats(loss_fn, params, batch).alpha())
    assert 0.0 < alpha <= 1.0 + 1e-6, alpha

    tx = optax.chain(aggregators.winsorized_mean(1), optax.sgd(0.1))
    grads = cj.per_example_grads(loss_fn, params, batch)
    updates, _ = tx.update(grads, tx.init(params), params)
    new_params = optax.apply_updates(params, updates)
    leaves = jax.tree.leaves(new_params)
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in leaves)
    moved = sum(float(jnp.abs(a - b).sum())
                for a, b in zip(leaves, jax.tree.leaves(params)))
    assert moved > 0.0, moved

    loaded = sorted({{m.split('.')[0] for m in sys.modules}} & set(BLOCKED))
    assert not loaded, loaded
    uses = core_names_from(NOT_IN_CORE)
    assert not uses, f'coherence_jax imports experiment dependencies: {{uses}}'
    print(f'OK alpha={{alpha:.6f}}')
''').format(blocked=BLOCKED, not_in_core=NOT_IN_CORE)


def test_library_runs_without_the_experiment_dependencies():
  out = subprocess.run([sys.executable, '-c', _CHILD], cwd=ROOT,
                       capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  assert out.stdout.strip().startswith('OK alpha='), out.stdout


def test_blocking_works():
  """The checks themselves can fail: a blocked import, an absl name."""
  code = _CHILD.split('import jax\n', 1)[0] + textwrap.dedent('''
      try:
        import mlxtend
      except ImportError as e:
        print('blocked:', e)
      fake = types.ModuleType('coherence_jax.fake')
      exec('from absl import logging', vars(fake))
      sys.modules['coherence_jax.fake'] = fake
      print('found:', core_names_from(NOT_IN_CORE))
  ''')
  out = subprocess.run([sys.executable, '-c', code], capture_output=True,
                       text=True, timeout=120)
  assert out.returncode == 0, out.stderr[-3000:]
  assert 'blocked: mlxtend is blocked' in out.stdout, out.stdout
  assert "found: ['coherence_jax.fake.logging']" in out.stdout, out.stdout


def _requirement_names(text: str):
  return {re.split(r'[<>=!~\[; ]', line.strip(), maxsplit=1)[0].lower()
          for line in text.strip().splitlines()
          if line.strip() and not line.strip().startswith('#')}


def test_setup_cfg_installs_only_the_core():
  cfg = configparser.ConfigParser()
  cfg.read(ROOT / 'setup.cfg')
  assert _requirement_names(cfg['options']['install_requires']) == {
      'jax', 'jaxlib', 'flax', 'optax', 'numpy'}
  extras = cfg['options.extras_require']
  experiments = _requirement_names(extras['experiments'])
  assert set(BLOCKED) - {'tensorflow', 'orbax', 'tensorflow_datasets'} <= {
      name.replace('-', '_') for name in experiments}
  assert experiments <= _requirement_names(extras['test'])  # tests cover both
  packages = cfg['options.packages.find']['include'].split()
  assert packages == ['coherence_jax', 'coherence_jax.*']
