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
