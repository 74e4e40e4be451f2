"""The public functions: jit at the boundary, plus checks that need values.

Everything below `coherence_jax` is a plain traceable function (compose them
inside your own `jax.jit`, `jax.shard_map` or `jax.pmap`); this module jits
them once, with the configuration arguments static, and runs a one-time,
cheap probe that a loss does not couple the examples of a batch (skipped for
traced inputs, and with `check_independence=False`).

Example:
  >>> centered = lambda w, b: (b['x'] - b['x'].mean(0)) @ w   # couples examples
  >>> xs = {'x': jnp.arange(8.).reshape(4, 2)}
  >>> per_example_grads(centered, jnp.ones(2), xs)
  Traceback (most recent call last):
  ValueError: loss_fn: example 0's loss changed (-2.0 -> -3.75) when only ...
  >>> per_example_grads(centered, jnp.ones(2), xs,
  ...                   check_independence=False).shape
  (4, 2)
"""

import functools
import weakref
import jax

from coherence_jax import _checks
from coherence_jax import coherence
from coherence_jax import explicit_batch
from coherence_jax import own_loop
from coherence_jax._tree import LossFn
from coherence_jax._tree import PyTree
from coherence_jax.aggregators import streaming
from coherence_jax.per_example import ghost
from coherence_jax.per_example import vmap_grads
from coherence_jax.stats import CoherenceStats

_PROBED: 'weakref.WeakKeyDictionary' = weakref.WeakKeyDictionary()


def _probe_independence(loss_fn: LossFn, params: PyTree, batch: PyTree) -> None:
  """`_checks.check_examples_independent`, once per loss_fn and batch layout.

  Also runs `_checks.check_per_example_loss` first, so a wrong output shape
  is reported before the probe evaluates the loss. A layout is remembered
  only after it passed, and only for weak-referenceable loss functions.
  """
  layout = (jax.tree.structure(batch),
            tuple((jax.numpy.shape(x), jax.numpy.result_type(x))
                  for x in jax.tree.leaves(batch)))
  try:
    seen = _PROBED.setdefault(loss_fn, set())
  except TypeError:  # not weak-referenceable: probe every time
    seen = set()
  if layout in seen:
    return
  # Shapes only (the functions run an Explicit-sharded batch per device,
  # `explicit_batch`).
  _checks.check_per_example_loss(loss_fn, params, _checks.unsharded(batch))
  _checks.check_examples_independent(loss_fn, params, batch)
  seen.add(layout)


def _jit_with_probe(fn, static_argnames, output=None):
  """jax.jit(fn) behind an independence probe controlled by a keyword.

  With `output` ('global' or 'per_example'), the jitted function also takes
  a batch sharded over Explicit mesh axes (`explicit_batch.per_device`).
  """
  if output is not None:
    fn = explicit_batch.per_device(fn, output)
  jitted = jax.jit(fn, static_argnames=static_argnames)

  @functools.wraps(fn)
  def wrapper(loss_fn, params, batch, *args, check_independence: bool = True,
              **kwargs):
    if check_independence:
      _probe_independence(loss_fn, params, batch)
    return jitted(loss_fn, params, batch, *args, **kwargs)

  wrapper.jitted = jitted
  return wrapper


def _doc_note(fn, references=''):
  fn.__doc__ = (fn.__doc__ or '') + '''
  Jitted (`loss_fn` and the configuration arguments are static). With
  `check_independence=True` (default) the first call per loss_fn and batch
  layout checks that example 0's loss does not depend on example 1 (a
  ValueError explains coupled losses such as train-mode BatchNorm).
  ''' + references
  return fn


# The coherence metric α = ‖E g‖² / E‖g‖² and its m-coherence.
_COHERENCE_REFERENCES = '''
  References:
    S. Chatterjee, P. Zielinski, "On the Generalization Mystery in Deep
    Learning", arXiv:2203.10036 (2022): the coherence metric α, α⊥ and
    m-coherence. S. Chatterjee, P. Zielinski, "Making Coherence Out of
    Nothing At All: Measuring the Evolution of Gradient Alignment",
    arXiv:2008.01217.
  '''


coherence_stats = _doc_note(_jit_with_probe(
    coherence.coherence_stats,
    ('loss_fn', 'microbatch_size', 'axis_name', 'method', 'ghost_form'),
    'global'), _COHERENCE_REFERENCES)
per_example_grads = _doc_note(_jit_with_probe(
    vmap_grads.per_example_grads, ('loss_fn', 'microbatch_size', 'axis_name'),
    'per_example'))
per_example_sq_norms = _doc_note(_jit_with_probe(
    ghost.per_example_sq_norms,
    ('loss_fn', 'method', 'microbatch_size', 'axis_name', 'ghost_form'),
    'per_example'))
per_group_grads = _doc_note(_jit_with_probe(
    vmap_grads.per_group_grads, ('loss_fn', 'num_groups', 'axis_name')))
winsorized_mean_grad = _doc_note(_jit_with_probe(
    streaming.winsorized_mean_grad,
    ('loss_fn', 'c', 'microbatch_size', 'axis_name'), 'global'))
trimmed_mean_grad = _doc_note(_jit_with_probe(
    streaming.trimmed_mean_grad,
    ('loss_fn', 'c', 'microbatch_size', 'axis_name'), 'global'))

value_and_grad_stats = _doc_note(_jit_with_probe(
    own_loop.value_and_grad_stats,
    ('loss_fn', 'microbatch_size', 'axis_name', 'method', 'ghost_form'),
    'global'))


def value_and_grad(loss_fn: LossFn, *, method: str = 'auto',
                   microbatch_size=None, axis_name=None, ghost_form=None,
                   check_independence: bool = True):
  """`jax.value_and_grad` of the mean loss, with coherence stats as the aux.

  `f = value_and_grad(loss_fn)` is `f(params, batch) -> ((mean_loss, stats),
  mean_grads)`, the layout of `jax.value_and_grad(..., has_aux=True)`, from
  ONE backward pass (ghost norms yield S = Σ g_i, and mean_grads = S / m):
  a training step that also measures the batch's coherence at about the
  cost of the step (`own_loop.value_and_grad_stats`). `mean_grads` equal
  `jax.grad` of the mean loss, `stats` equal `coherence_stats` (float32
  summation order aside). Works under `jax.jit`, inside `jax.shard_map` /
  `jax.pmap` with `axis_name` (loss, grads and stats are then global: the
  means over every device's examples), with `microbatch_size` (grads
  accumulated over chunks) and on batches sharded over Explicit mesh axes.

  The gradient is that of the model in inference mode (`from_nnx` calls
  `model.eval()`): per-example gradients need examples that do not interact
  (no dropout keyed per batch, no train-mode BatchNorm).

  Args:
    loss_fn: `loss_fn(params, batch) -> [B]`, e.g. from `from_nnx` (ghost
      norms; params without a ghost rule take per-example vmap gradients).
    method, microbatch_size, axis_name, ghost_form: as for `coherence_stats`.
    check_independence: probe once per batch layout that examples do not
      interact (see `coherence_stats`).

  Returns:
    `f(params, batch) -> ((mean_loss, stats), mean_grads)`, jitted.

  Raises:
    ValueError: a bad method, form or microbatch_size (here); the call raises
      what `coherence_stats` raises.

  Example:
    >>> grad_fn = cj.value_and_grad(loss_fn)
    >>> (loss, stats), grads = grad_fn(params, batch)
    >>> float(stats.m_coherence()) > 0, grads['layers'][1]['bias'].shape
    (True, (10,))
    >>> (loss2, _), _ = jax.jit(grad_fn)(params, batch)   # inside your jit
    >>> bool(jnp.allclose(loss, loss2))
    True
  """
  ghost.check_ghost_args(loss_fn, method, ghost_form)
  _checks.check_microbatch_size(microbatch_size)

  def value_grads_and_stats(params, batch):
    return value_and_grad_stats(
        loss_fn, params, batch, microbatch_size=microbatch_size,
        axis_name=axis_name, method=method, ghost_form=ghost_form,
        check_independence=check_independence)

  return value_grads_and_stats


__all__ = ['CoherenceStats', 'coherence_stats', 'per_example_grads',
           'per_example_sq_norms', 'per_group_grads',
           'trimmed_mean_grad', 'value_and_grad', 'value_and_grad_stats',
           'winsorized_mean_grad']
