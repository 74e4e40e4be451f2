"""benchmarks/torch_sequence: the torch twins compute the JAX models' logits.

Skipped where torch is not importable (it is not a test dependency; the
benchmark runs with the `bench` extra), so `make test` in the default venv
only collects them. Tiny sizes: one forward per model in each framework, and
(slow tier) one torch-only α check of the tied-weight GPT: Opacus fast
gradient clipping against torch.func, which both handle tying, and Opacus
ghost clipping refusing it.

float32 tolerance: logits are sums of ≲ 64 products per layer through 1–2
layers with LayerNorm and softmax; JAX and torch order the sums differently,
so they differ by a few ulp of values of order 1 (~1e-6); 1e-5 absolute
leaves headroom, while a wrong weight layout (a transposed head kernel, a
missing 1/sqrt(d) scale, erf GELU for tanh GELU) is ≥ 1e-3 off.
"""

import copy

import numpy as np
import pytest

from benchmarks import bench_sequence

torch = pytest.importorskip('torch')
ts = pytest.importorskip('benchmarks.torch_sequence')

ATOL = 1e-5  # see the module docstring


def test_gpt_twin_logits_equal_jax():
  loss_fn, params, batch = bench_sequence.jax_problem('gpt', 3, tiny=True)
  tokens = batch['tokens'][:, :-1]
  model = ts.gpt_from_jax(params, bench_sequence.TINY['gpt'])
  assert model.head.weight is model.embed.weight  # tied, as Embed.attend
  with torch.no_grad():
    got = model(torch.from_numpy(np.asarray(tokens)).long()).numpy()
  np.testing.assert_allclose(got, np.asarray(loss_fn.model(params)(tokens)),
                             atol=ATOL, rtol=0)


def test_vit_twin_logits_equal_jax():
  loss_fn, params, batch = bench_sequence.jax_problem('vit', 3, tiny=True)
  model = ts.vit_from_jax(params, bench_sequence.TINY['vit'])
  with torch.no_grad():
    got = model(ts.images_nchw(batch['image'])).numpy()
  np.testing.assert_allclose(
      got, np.asarray(loss_fn.model(params)(batch['image'])), atol=ATOL,
      rtol=0)


@pytest.mark.slow  # importing opacus alone takes seconds
def test_opacus_norms_of_tied_gpt_equal_torch_func():
  pytest.importorskip('opacus')
  model, x, y = ts.problem('gpt', 3, bench_sequence.TINY['gpt'])
  want = ts.vmap_stats('gpt', model, x, y)
  # Each Opacus wrapper hooks its model for good: a copy each.
  got = ts.opacus_stats('gpt', ts.opacus_module(copy.deepcopy(model), False),
                        x, y)
  # S and Q are sums of ≲ 4k squares: ~1e-6 relative rounding.
  np.testing.assert_allclose([float(v) for v in got],
                             [float(v) for v in want], rtol=1e-4)
  with pytest.raises(ts.Unsupported, match='tying'):
    ts.opacus_stats('gpt', ts.opacus_module(copy.deepcopy(model), True), x, y)
