"""rolling_median / rolling_mean with skip_until_full=True follow the authors'
PyTorch RM3 (google-research coherent_gradients): the ring buffer is seeded
with the first gradient, no step is taken until it holds 3 gradients."""

import numpy as np
import optax
import pytest

from coherence_jax import aggregators


def reference_rm3(grads, lr, reduce):
  """The authors' RM3 loop in numpy: params after each step (w0 = 0)."""
  w, buffer, counter, out = np.zeros_like(grads[0]), None, 0, []
  for g in grads:
    if buffer is None:
      buffer, counter = [g.copy() for _ in range(3)], 1
    else:
      buffer[counter % 3] = g.copy()
      counter += 1
    if counter >= 3:
      w = w - lr * reduce(np.stack(buffer))
    out.append(w.copy())
  return out


def _run(transform, grads, lr):
  opt = optax.chain(transform, optax.sgd(lr))
  w = np.zeros_like(grads[0])
  state, out = opt.init(w), []
  for g in grads:
    updates, state = opt.update(g, state, w)
    w = np.asarray(optax.apply_updates(w, updates))
    out.append(w)
  return out


@pytest.mark.parametrize('name,reduce', [
    ('rolling_median', lambda b: b.sum(0) - b.min(0) - b.max(0)),
    ('rolling_mean', lambda b: b.mean(0))])
def test_skip_until_full_matches_the_reference_loop(name, reduce):
  rng = np.random.default_rng(0)
  grads = [rng.normal(size=5).astype(np.float32) for _ in range(7)]
  transform = getattr(aggregators, name)(3, skip_until_full=True)
  got = _run(transform, grads, lr=0.5)
  want = reference_rm3(grads, 0.5, reduce)
  np.testing.assert_array_equal(got[0], 0.0)  # steps 1-2 update nothing
  np.testing.assert_array_equal(got[1], 0.0)
  # A few float32 adds and products per step: relative rounding ~1e-6.
  np.testing.assert_allclose(np.stack(got), np.stack(want), rtol=1e-5,
                             atol=1e-6)


def test_default_applies_the_first_gradient_and_agrees_from_step_3():
  rng = np.random.default_rng(1)
  grads = [rng.normal(size=4).astype(np.float32) for _ in range(5)]
  seeded = _run(aggregators.rolling_median(3), grads, lr=1.0)
  skipped = _run(aggregators.rolling_median(3, skip_until_full=True), grads,
                 lr=1.0)
  np.testing.assert_allclose(seeded[0], -grads[0], rtol=1e-6)
  # From the 3rd gradient on the updates agree; the params differ by the
  # seeded run's first two steps (g0 and median(g0, g0, g1) = g0).
  diff = np.stack(seeded) - np.stack(skipped)
  np.testing.assert_allclose(diff[2:], np.broadcast_to(-2 * grads[0],
                                                       diff[2:].shape),
                             rtol=1e-5, atol=1e-6)


def test_bad_option_is_named():
  with pytest.raises(ValueError, match='skip_until_full'):
    aggregators.rolling_median(3, skip_until_full='yes')
