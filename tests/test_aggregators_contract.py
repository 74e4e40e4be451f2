"""The per-example contract of the aggregators: checks, optax interfaces.

Updates are checked by path against the param shapes recorded at init; the
transforms are optax Aggregators (work in `optax.chain` and in
`aggregating.process`); `optax.apply_if_finite` goes after the aggregator,
and wrapping the aggregator raises a clear error.
"""

import numpy as np
import optax
import pytest

import jax
import jax.numpy as jnp

from coherence_jax import aggregators

RTOL, ATOL = 1e-5, 1e-6
B = 9

ALL = [lambda: aggregators.winsorized_mean(2),
       lambda: aggregators.trimmed_mean(1),
       lambda: aggregators.median_of_means(3),
       lambda: aggregators.coordinate_median()]


def params_and_grads(seed=0):
  rng = np.random.default_rng(seed)
  params = {'w': jnp.ones((3, 2)), 'b': jnp.zeros(2)}
  grads = {'w': jnp.asarray(rng.normal(size=(B, 3, 2)), jnp.float32),
           'b': jnp.asarray(rng.normal(size=(B, 2)), jnp.float32)}
  return params, grads


def optax_aggregating():
  try:
    from optax.experimental import aggregating  # pylint: disable=g-import-not-at-top
  except ImportError:
    pytest.skip('this optax has no optax.experimental.aggregating')
  return aggregating


def np_winsorized(x, c):
  s = np.sort(np.asarray(x, np.float64), axis=0)
  return np.clip(s, s[c], s[-c - 1]).mean(0)


# ------------------------------ updates checked by path against the params


@pytest.mark.parametrize('make', ALL)
def test_plain_gradients_are_rejected_even_without_params(make):
  # Before: with params=None plain [*param.shape] gradients were taken as
  # per-example gradients of a smaller model.
  tx = make()
  params, grads = params_and_grads()
  plain = jax.tree.map(lambda g: g[0], grads)
  with pytest.raises(ValueError, match=r"at 'b'.*needs \(B, 2\).*FIRST in "
                     r'optax.chain'):
    tx.update(plain, tx.init(params))


def test_after_momentum_is_rejected():
  params, grads = params_and_grads()
  tx = optax.chain(optax.sgd(0.1, momentum=0.9), aggregators.winsorized_mean(1))
  plain = jax.tree.map(lambda g: g[0], grads)
  with pytest.raises(ValueError, match='must be FIRST in optax.chain'):
    tx.update(plain, tx.init(params), params)


STATEFUL_BEFORE = {
    'sgd_momentum': lambda: optax.sgd(0.1, momentum=0.9),
    'adam': lambda: optax.adam(1e-3),
    'trace': lambda: optax.trace(0.9),
    'ema': lambda: optax.ema(0.9),
}


@pytest.mark.parametrize('before', sorted(STATEFUL_BEFORE))
@pytest.mark.parametrize('jit', [False, True])
def test_after_a_stateful_transform_per_example_grads_are_rejected(before,
                                                                   jit):
  # Before: accepted; the momentum trace took the [B, ...]
  # shape and the updates were wrong from step 2 on.
  params, grads = params_and_grads()
  tx = optax.chain(STATEFUL_BEFORE[before](), aggregators.winsorized_mean(1))
  update = jax.jit(tx.update) if jit else tx.update
  with pytest.raises(ValueError, match=r'winsorized_mean.*after transform 0 '
                     r'of optax.chain.*keeps state shaped like the params.*'
                     'must be FIRST in optax.chain'):
    update(grads, tx.init(params), params)


def test_after_momentum_in_a_nested_or_named_chain_is_rejected():
  params, grads = params_and_grads()
  nested = optax.chain(optax.sgd(0.1, momentum=0.9),
                       optax.chain(aggregators.trimmed_mean(1), optax.sgd(1.)))
  named = optax.named_chain(('momentum', optax.trace(0.9)),
                            ('agg', aggregators.coordinate_median()))
  for tx in (nested, named):
    with pytest.raises(ValueError, match='keeps state shaped like the params'):
      tx.update(grads, tx.init(params), params)


def test_after_stateless_or_scalar_state_transforms_is_accepted():
  # Scaling (even by a schedule, whose state is a scalar count) and weight
  # decay keep no per-param state: the aggregator after them is fine.
  params, grads = params_and_grads()
  tx = optax.chain(optax.scale_by_schedule(lambda n: 1.0),
                   optax.add_decayed_weights(0.0), optax.identity(),
                   aggregators.winsorized_mean(0),
                   optax.sgd(1.0, momentum=0.9))
  out, _ = tx.update(grads, tx.init(params), params)
  for k in params:
    # A mean of 9 float32 values, scaled by -1 (exact): 9 ε relative.
    np.testing.assert_allclose(out[k], -np.mean(np.asarray(grads[k],
                                                           np.float64), 0),
                               rtol=RTOL, atol=ATOL)


def test_extra_and_missing_keys_are_named_by_path():
  params, grads = params_and_grads()
  tx = aggregators.winsorized_mean(1)
  state = tx.init(params)
  with pytest.raises(ValueError, match=r"leaves 'extra' at paths that are not "
                     'params'):
    tx.update({**grads, 'extra': jnp.zeros((B, 4))}, state)
  # Before: a missing key surfaced as a shape mismatch of ANOTHER leaf
  # (leaves were compared by position).
  with pytest.raises(ValueError, match=r"no update for the param\(s\) 'b' "
                     r'\(shape \(2,\)\)'):
    tx.update({'w': grads['w']}, state, params)


def test_nested_paths_and_leading_sizes():
  params = {'dense': {'kernel': jnp.zeros((3, 2)), 'bias': jnp.zeros(2)}}
  tx = aggregators.trimmed_mean(1)
  state = tx.init(params)
  bad = {'dense': {'kernel': jnp.zeros((B, 2, 3)), 'bias': jnp.zeros((B, 2))}}
  with pytest.raises(ValueError, match="'dense/kernel'.*needs \\(B, 3, 2\\)"):
    tx.update(bad, state)
  uneven = {'dense': {'kernel': jnp.zeros((B, 3, 2)), 'bias': jnp.zeros((4, 2))}}
  with pytest.raises(ValueError, match='leading axes that differ'):
    tx.update(uneven, state)
  with pytest.raises(ValueError, match='B = 0'):
    aggregators.coordinate_median().update(
        jax.tree.map(lambda p: jnp.zeros((0,) + p.shape), params),
        aggregators.coordinate_median().init(params))


def test_state_records_shapes_and_params_none_is_fine_under_jit():
  params, grads = params_and_grads()
  tx = aggregators.winsorized_mean(2)
  state = tx.init(params)
  # The shapes are static (no array leaves): free, jit-able, checkpointable
  # (test_aggregators.py saves and restores it with Orbax).
  assert not jax.tree.leaves(state)
  assert state.param_shapes.as_dict() == {('w',): (3, 2), ('b',): (2,)}
  out, new_state = jax.jit(tx.update)(grads, state)  # params=None
  for k in params:
    np.testing.assert_allclose(out[k], np_winsorized(grads[k], 2), RTOL, ATOL)
  assert jax.tree.structure(new_state) == jax.tree.structure(state)


def test_init_needs_params():
  with pytest.raises(ValueError, match='params: trimmed_mean.init'):
    aggregators.trimmed_mean(1).init(None)


# ------------------------------------------- optax.experimental Aggregator


def test_per_example_transforms_are_optax_aggregators():
  aggregating = optax_aggregating()
  for make in ALL:
    tx = make()
    assert isinstance(tx, aggregating.Aggregator)
    assert isinstance(tx, optax.GradientTransformation)
  assert not isinstance(aggregators.rolling_median(3), aggregating.Aggregator)


@pytest.mark.parametrize('make', ALL)
def test_works_in_aggregating_process_and_first_in_chain(make):
  aggregating = optax_aggregating()
  params, grads = params_and_grads(seed=3)
  agg = make()
  ref, _ = agg.update(grads, agg.init(params))
  ref = jax.tree.map(lambda g: -0.1 * g, ref)
  for opt in (aggregating.process(optax.identity(), make(), optax.sgd(0.1)),
              optax.chain(make(), optax.sgd(0.1))):
    state = opt.init(params)
    out, state = jax.jit(opt.update)(grads, state, params)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, RTOL, ATOL),
                 out, ref)
    out, _ = jax.jit(opt.update)(grads, state)  # params=None
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, RTOL, ATOL),
                 out, ref)
  assert isinstance(
      aggregating.process(optax.identity(), make(), optax.sgd(0.1)),
      aggregating.Aggregator)


# --------------------------------------------------------- apply_if_finite


@pytest.mark.parametrize('jit', [False, True])
def test_wrapping_the_aggregator_in_apply_if_finite_explains_the_fix(jit):
  # Before: "cond branches must have equal output types", even on finite input.
  params, grads = params_and_grads()
  opt = optax.apply_if_finite(
      optax.chain(aggregators.winsorized_mean(1), optax.sgd(0.1)), 3)
  update = jax.jit(opt.update) if jit else opt.update
  with pytest.raises(ValueError, match=r'cannot run inside optax.apply_if_'
                     r'finite.*optax.chain\(winsorized_mean\(\.\.\.\), '
                     r'optax.apply_if_finite\(optax.sgd'):
    update(grads, opt.init(params), params)


def test_apply_if_finite_after_the_aggregator_skips_a_nan_step():
  params, grads = params_and_grads()
  opt = optax.chain(aggregators.winsorized_mean(1),
                    optax.apply_if_finite(optax.sgd(0.1, momentum=0.9), 3))
  state = opt.init(params)
  step = jax.jit(opt.update)
  out, state = step(grads, state, params)
  want = jax.tree.map(lambda g: -0.1 * np_winsorized(g, 1), grads)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, RTOL, ATOL),
               out, want)
  bad = {**grads, 'b': grads['b'].at[4, 1].set(jnp.nan)}
  out, state = step(bad, state, params)
  assert all(np.all(np.asarray(u) == 0) for u in jax.tree.leaves(out))
  finite_state = state[1]
  assert int(finite_state.total_notfinite) == 1
  # +-inf in one example is clipped by winsorized_mean(1): not skipped.
  inf = {**grads, 'b': grads['b'].at[4, 1].set(jnp.inf)}
  out, state = step(inf, state, params)
  assert all(np.isfinite(np.asarray(u)).all() and np.any(np.asarray(u) != 0)
             for u in jax.tree.leaves(out))
  assert int(state[1].total_notfinite) == 1


# ------------------------------------------- unclear failures made clear


def test_numpy_integers_are_accepted_and_bools_refused():
  # Before: winsorized_mean(c=np.int64(2)) was refused as no int.
  params, grads = params_and_grads()
  for make, args in ((aggregators.winsorized_mean, (2,)),
                     (aggregators.trimmed_mean, (1,)),
                     (aggregators.median_of_means, (3,))):
    want = make(*args).update(grads, make(*args).init(params))[0]
    tx = make(*(np.int64(a) for a in args))
    got = tx.update(grads, tx.init(params))[0]
    for k in params:   # the same program: bit-identical
      np.testing.assert_array_equal(got[k], want[k])
    for bad in (True, np.bool_(True)):
      with pytest.raises(ValueError, match='int'):
        make(bad)
  tx = aggregators.rolling_median(np.int32(3))
  assert tx.init(params).buffer['w'].shape == (3, 3, 2)
  with pytest.raises(ValueError, match='window must be a positive int'):
    aggregators.rolling_median(True)


def test_rolling_median_names_a_missing_leaf():
  # Before: a raw pytree structure error.
  params, _ = params_and_grads()
  tx = aggregators.rolling_median(3)
  with pytest.raises(ValueError, match=r"rolling_median got no update for the "
                     r"param\(s\) 'b'"):
    tx.update({'w': jnp.ones((3, 2))}, tx.init(params))
  with pytest.raises(ValueError, match=r"rolling_mean got update leaves "
                     r"'extra' at paths that are not params"):
    tx = aggregators.rolling_mean(3)
    tx.update({**params, 'extra': jnp.ones(2)}, tx.init(params))


def test_rolling_median_says_per_example_updates_need_aggregating_first():
  # Before: "Cannot broadcast to shape with fewer dimensions".
  params, grads = params_and_grads()
  tx = aggregators.rolling_median(3)
  # 'b' comes first in flattening order.
  with pytest.raises(ValueError, match=r"rolling_median got shape \(9, 2\) "
                     r"at 'b' for a param of shape \(2,\).*per-example"
                     r'.*ordinary \(params-shaped\) gradients'):
    tx.update(grads, tx.init(params))


def np_trimmed(x, c):
  s = np.sort(np.asarray(x, np.float64), axis=0)
  return s[c:len(s) - c].mean(0)


@pytest.mark.parametrize('name,reference', [('trimmed_mean', np_trimmed),
                                            ('winsorized_mean', np_winsorized)])
def test_integer_updates_are_averaged_in_float32(name, reference):
  # Before: "lax.lt requires arguments to have the same dtypes". Means of
  # integers are float32, as median_of_means and optax.sgd give.
  tx = getattr(aggregators, name)(1)
  params = {'w': jnp.zeros(3)}
  ints = jnp.array([[0, 5, 9], [1, 2, 3], [7, 7, 7], [2, 9, 4], [3, 3, 3]],
                   jnp.int32)
  out = tx.update({'w': ints}, tx.init(params))[0]['w']
  assert out.dtype == jnp.float32
  # Small integers are exact in float32; their mean of <= 5 rounds at most
  # twice: 1e-6 relative.
  np.testing.assert_allclose(out, reference(ints, 1), rtol=1e-6)
