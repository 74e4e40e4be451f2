"""Dataflow in a jaxpr: which inputs reach the outputs, and which loops
enclose a named scope.

Ghost norms trace the loss with each hooked layer applied to zeros of its
params' shapes: if the model's params still reach the loss, they are also
used outside the layer's hooked calls (e.g. a kernel read directly as an
array). Data dependencies are followed into `jit`, `checkpoint` (remat) and
`scan` bodies (a scan's carry to a fixed point), so that layers stacked
under `nnx.scan` / `nnx.remat` are judged by what their bodies do; other
primitives with sub-jaxprs count as a whole.

Example (the second input is traced but never used):
  >>> closed = jax.make_jaxpr(lambda p, q, x: p * x)(1., 2., 3.)
  >>> inputs_reaching_outputs(closed, 2)
  {0}
"""

from typing import Dict, List, Sequence, Set

from jax.extend import core as jex_core

_CALLS = ('jit', 'pjit', 'closed_call', 'core_call', 'remat2', 'checkpoint',
          'remat')


def _open(jaxpr):
  """The open Jaxpr of a Jaxpr or ClosedJaxpr."""
  return jaxpr if hasattr(jaxpr, 'eqns') else jaxpr.jaxpr


def _flow(jaxpr, in_origins: Sequence[Set[int]]) -> List[Set[int]]:
  """Origins of `jaxpr`'s outputs, given the origins of its inputs."""
  origin = {v: o for v, o in zip(jaxpr.invars, in_origins) if o}

  def of(v):
    return set() if isinstance(v, jex_core.Literal) else origin.get(v, set())

  for eqn in jaxpr.eqns:
    outs = _eqn_flow(eqn, [of(v) for v in eqn.invars])
    for v, o in zip(eqn.outvars, outs):
      if o:
        origin[v] = o
  return [of(v) for v in jaxpr.outvars]


def _eqn_flow(eqn, ins: List[Set[int]]) -> List[Set[int]]:
  name = eqn.primitive.name
  if name == 'scan':
    body = _open(eqn.params['jaxpr'])
    consts = eqn.params['num_consts']
    carries = eqn.params['num_carry']
    carry = ins[consts:consts + carries]
    while True:
      out = _flow(body, ins[:consts] + carry + ins[consts + carries:])
      grown = [c | o for c, o in zip(carry, out[:carries])]
      if grown == carry:
        return carry + out[carries:]
      carry = grown
  sub = eqn.params.get('jaxpr', eqn.params.get('call_jaxpr'))
  if name in _CALLS and sub is not None:
    return _flow(_open(sub), ins)
  found = set().union(*ins) if ins else set()
  return [found] * len(eqn.outvars)


def inputs_reaching_outputs(closed_jaxpr, num_watched: int) -> set:
  """Indices of the first `num_watched` inputs that reach an output.

  Args:
    closed_jaxpr: a `jax.make_jaxpr` result.
    num_watched: how many leading flat inputs to track.

  Returns:
    The set of their indices whose value reaches some output.

  Example (an input carried through a scan without reaching its output):
    >>> def f(a, b):
    ...   step = lambda c, x: ((c[0] * 2, c[1]), None)
    ...   return jax.lax.scan(step, (a, b), None, length=3)[0][0]
    >>> inputs_reaching_outputs(jax.make_jaxpr(f)(1., 2.), 2)
    {0}
  """
  jaxpr = closed_jaxpr.jaxpr
  ins = [{i} if i < num_watched else set() for i in range(len(jaxpr.invars))]
  return set().union(*_flow(jaxpr, ins))


def loops_around(closed_jaxpr, prefix: str) -> Dict[str, List[object]]:
  """{named scope starting with `prefix`: the loops around it, outermost first}.

  A loop is a scan's length, or 'while' for a while loop.

  Args:
    closed_jaxpr: a `jax.make_jaxpr` result.
    prefix: the start of the scope names to look for.

  Returns:
    Each scope found, with the loops that enclose its equations.

  Example:
    >>> def f(x):
    ...   def step(c, _):
    ...     with jax.named_scope('tag_a'):
    ...       return c * 2, None
    ...   return jax.lax.scan(step, x, None, length=4)[0]
    >>> loops_around(jax.make_jaxpr(f)(1.), 'tag_')
    {'tag_a': [4]}
  """
  found: Dict[str, List[object]] = {}

  def walk(jaxpr, loops):
    for eqn in jaxpr.eqns:
      for part in str(eqn.source_info.name_stack).split('/'):
        if part.startswith(prefix):
          found.setdefault(part, list(loops))
      name = eqn.primitive.name
      if name == 'scan':
        walk(_open(eqn.params['jaxpr']), loops + [eqn.params['length']])
        continue
      inner = loops + ['while'] if name == 'while' else loops
      for value in eqn.params.values():
        for sub in value if isinstance(value, (tuple, list)) else (value,):
          if hasattr(sub, 'eqns') or isinstance(sub, jex_core.ClosedJaxpr):
            walk(_open(sub), inner)

  walk(closed_jaxpr.jaxpr, [])
  return found
