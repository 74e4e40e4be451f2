"""Dataflow in a jaxpr: which inputs reach the outputs.

Ghost norms and factored Dense gradients trace the loss with a layer's params
passed twice: once through the hooked layer, once as the model's own copy. If
the model's copy reaches the loss, the params are also used outside the
layer's hooked calls (e.g. a kernel read directly as an array).

Example (the second input is traced but never used):
  >>> closed = jax.make_jaxpr(lambda p, q, x: p * x)(1., 2., 3.)
  >>> inputs_reaching_outputs(closed, 2)
  {0}
"""

from jax.extend import core as jex_core


def inputs_reaching_outputs(closed_jaxpr, num_watched: int) -> set:
  """Indices of the first `num_watched` inputs that reach an output.

  Follows data dependencies through the top-level equations (an equation's
  outputs depend on all its inputs, so sub-jaxprs count as a whole).

  Args:
    closed_jaxpr: a `jax.make_jaxpr` result.
    num_watched: how many leading flat inputs to track.

  Returns:
    The set of their indices whose value reaches some output.

  Example:
    >>> closed = jax.make_jaxpr(lambda a, b: a * 2)(1., 2.)
    >>> inputs_reaching_outputs(closed, 2)
    {0}
  """
  jaxpr = closed_jaxpr.jaxpr
  origin = {v: {i} for i, v in enumerate(jaxpr.invars[:num_watched])}
  for eqn in jaxpr.eqns:
    found = set()
    for v in eqn.invars:
      if not isinstance(v, jex_core.Literal):
        found |= origin.get(v, set())
    if found:
      for v in eqn.outvars:
        origin[v] = found
  reached = set()
  for v in jaxpr.outvars:
    if not isinstance(v, jex_core.Literal):
      reached |= origin.get(v, set())
  return reached
