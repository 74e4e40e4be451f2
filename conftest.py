"""The names every `>>>` example of the package sees (--doctest-modules).

Examples may use, without importing them: jax, jnp, np, optax, nnx, cj
(coherence_jax), the public functions and classes (from_nnx, MLP, CNN,
cross_entropy_loss, coherence_stats, CoherenceStats, per_example_grads,
per_group_grads, per_example_sq_norms, winsorized_mean_grad,
trimmed_mean_grad, aggregators), and a small ready model:

  loss_fn, params = from_nnx(MLP([784, 32, 10], rngs=nnx.Rngs(0)),
                             cross_entropy_loss)
  batch, other_batch: {'image': float32 [16, 784], 'label': int32 [16]}

The public names are the jitted functions of `coherence_jax`; in a module
that defines a plain function of the same name (e.g. `coherence.py`) the
example runs the public one. Nothing here runs a JAX operation at import, and
the model is built once per session, when the first doctest asks for the
namespace, so ordinary test runs pay nothing. Do not mutate these objects in
an example: they are shared by every doctest of the session.

Like tests/conftest.py, this sets 8 simulated CPU devices before JAX
initialises (this file is loaded first when both are).
"""

import os

os.environ.setdefault('TFDS_DATA_DIR', '/nonexistent-tfds-never-download')
# Tests compile with most of XLA's optimizations off: compiling is most of a
# test's time and the values under test do not depend on the optimizations
# (every tolerance is derived from float32 rounding of the computation, not of
# a kernel). Subprocesses inherit it. JAX_DISABLE_MOST_OPTIMIZATIONS=0 runs the
# same tests on the optimized programs.
os.environ.setdefault('JAX_DISABLE_MOST_OPTIMIZATIONS', '1')

# One XLA compilation cache per pytest session, shared by the xdist workers and
# the subprocess tests (they inherit the environment; the controller sets it
# before it starts them): ~12 % of the default tier's CPU time is the same small
# programs compiled in more than one process. A fresh empty folder each
# session, so nothing is reused between runs; removed at the end.
_XLA_CACHE_ENV = 'JAX_COMPILATION_CACHE_DIR'
if _XLA_CACHE_ENV not in os.environ and 'PYTEST_XDIST_WORKER' not in os.environ:
  import tempfile  # pylint: disable=g-import-not-at-top
  os.environ[_XLA_CACHE_ENV] = tempfile.mkdtemp(prefix='coherence-jax-tests-xla-')
  os.environ['COHERENCE_JAX_TESTS_OWN_XLA_CACHE'] = '1'
  os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0')
  os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES', '0')

import jax  # pylint: disable=g-import-not-at-top

jax.config.update('jax_num_cpu_devices', 8)
jax.config.update('jax_platforms', 'cpu')

import pytest  # pylint: disable=g-import-not-at-top,g-bad-import-order


def _random_batch(seed: int, size: int = 16):
  import numpy as np  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)
  return {'image': rng.standard_normal((size, 784)).astype(np.float32),
          'label': rng.integers(0, 10, size).astype(np.int32)}


def _doctest_names():
  """The doctest namespace: modules, public API and the small MLP."""
  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp
  import numpy as np
  import optax
  from flax import nnx
  import coherence_jax as cj
  from coherence_jax.models import CNN
  from coherence_jax.models import MLP
  from coherence_jax.models import cross_entropy_loss
  # pylint: enable=g-import-not-at-top
  loss_fn, params = cj.from_nnx(MLP([784, 32, 10], rngs=nnx.Rngs(0)),
                                cross_entropy_loss)
  return {
      'jax': jax, 'jnp': jnp, 'np': np, 'optax': optax, 'nnx': nnx, 'cj': cj,
      'aggregators': cj.aggregators,
      'from_nnx': cj.from_nnx, 'MLP': MLP, 'CNN': CNN,
      'cross_entropy_loss': cross_entropy_loss,
      'coherence_stats': cj.coherence_stats,
      'CoherenceStats': cj.CoherenceStats,
      'per_example_grads': cj.per_example_grads,
      'per_group_grads': cj.per_group_grads,
      'per_example_sq_norms': cj.per_example_sq_norms,
      'winsorized_mean_grad': cj.winsorized_mean_grad,
      'trimmed_mean_grad': cj.trimmed_mean_grad,
      'loss_fn': loss_fn, 'params': params,
      'batch': jax.tree.map(jnp.asarray, _random_batch(0)),
      'other_batch': jax.tree.map(jnp.asarray, _random_batch(1)),
  }


@pytest.fixture(scope='session')
def doctest_namespace():
  """pytest's `doctest_namespace`, filled with the names above.

  Overrides the built-in session fixture of the same name (an empty dict),
  which only doctests request: ordinary tests never build the model, and no
  autouse fixture is needed (a function-scoped autouse fixture would also
  trip Hypothesis' function_scoped_fixture health check in tests/).
  """
  return _doctest_names()


def pytest_unconfigure(config):
  """Removes the session's XLA cache folder (controller or serial run only)."""
  del config  # unused
  if (os.environ.get('COHERENCE_JAX_TESTS_OWN_XLA_CACHE') == '1'
      and 'PYTEST_XDIST_WORKER' not in os.environ):
    import shutil  # pylint: disable=g-import-not-at-top
    shutil.rmtree(os.environ[_XLA_CACHE_ENV], ignore_errors=True)
