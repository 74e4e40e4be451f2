"""The one micro-batching routine: exact remainders, every combine rule."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from coherence_jax.microbatch import microbatched

# Small integers: every square and sum below is exact in float32, in any
# order, so chunked and unchunked results are compared exactly.
X = {'x': jnp.arange(7.0), 'y': jnp.arange(14.0).reshape(7, 2)}


@pytest.mark.parametrize('size', [None, 1, 2, 3, 7, 10])
def test_concat_equals_unbatched(size):
  fn = lambda b: {'sq': b['x'] ** 2, 'row': b['y'].sum(1)}
  got = jax.jit(lambda b: microbatched(fn, b, size))(X)
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(a, b), got, fn(X))


@pytest.mark.parametrize('size', [None, 2, 3, 7])
def test_sum_and_mixed(size):
  fn = lambda b: (b['x'].sum(), b['x'] * 2)
  s, q = microbatched(fn, X, size, combine=('sum', 'concat'))
  assert float(s) == 21.0  # small integers: exact in float32
  np.testing.assert_array_equal(q, np.arange(7.0) * 2)


def test_fold_sees_chunks_in_order():
  order = microbatched(lambda c, b: c * 10 + b['x'].size, X, 3,
                       combine='fold', init=jnp.int32(0))
  assert int(order) == 331  # chunks of 3, 3, then the remainder 1


def test_bad_arguments_are_named():
  with pytest.raises(ValueError, match='microbatch_size'):
    microbatched(lambda b: b, X, 0)
  with pytest.raises(ValueError, match='combine'):
    microbatched(lambda b: b, X, 2, combine='mean')
  with pytest.raises(ValueError, match='init'):
    microbatched(lambda c, b: c, X, 2, combine='fold')
  with pytest.raises(ValueError, match='B = 0'):
    microbatched(lambda b: b, {'x': jnp.zeros((0,))}, 2)
