"""Multi-layer perceptron on flattened inputs (the Coherent Gradients MNIST nets).

Example:
  >>> mlp = MLP([784, 32, 10], rngs=nnx.Rngs(0))
  >>> mlp(batch['image']).shape
  (16, 10)
"""

from typing import Sequence

import jax
from flax import nnx


class MLP(nnx.Module):
  """ReLU MLP; inputs are flattened. `MLP([784, 2048, 10], rngs=nnx.Rngs(0))`.

  The papers use 784-2048-10 (noisy labels) and 784-256-256-256-10 (winsorized GD).
  Layers are `nnx.Linear` (ghost norms apply), in `self.layers`; the last
  layer has no ReLU (it returns logits).

  Args:
    widths: input size, hidden sizes..., output size (at least two).
    rngs: the `nnx.Rngs` for the initializers.

  Raises:
    ValueError: fewer than two widths, or a width that is not positive.

  Example:
    >>> mlp = nnx.eval_shape(lambda: MLP([784, 2048, 10], rngs=nnx.Rngs(0)))
    >>> sum(p.size for p in jax.tree.leaves(nnx.state(mlp, nnx.Param)))
    1628170
    >>> jax.eval_shape(lambda x: MLP([784, 32, 10], rngs=nnx.Rngs(0))(x),
    ...                jax.ShapeDtypeStruct((5, 28, 28), jnp.float32)).shape
    (5, 10)
    >>> MLP([784], rngs=nnx.Rngs(0))
    Traceback (most recent call last):
    ValueError: widths: got [784]; pass input, hidden..., output sizes, ...
  """

  def __init__(self, widths: Sequence[int], *, rngs: nnx.Rngs):
    if len(widths) < 2 or any(int(w) <= 0 for w in widths):
      raise ValueError(
          f'widths: got {widths!r}; pass input, hidden..., output sizes, all '
          'positive, e.g. [784, 2048, 10].')
    self.layers = nnx.List([
        nnx.Linear(d_in, d_out, rngs=rngs)
        for d_in, d_out in zip(widths[:-1], widths[1:])
    ])

  def __call__(self, x: jax.Array) -> jax.Array:
    """Logits [B, widths[-1]] of x [B, ...] (flattened to [B, widths[0]])."""
    x = x.reshape((x.shape[0], -1))
    for layer in self.layers[:-1]:
      x = jax.nn.relu(layer(x))
    return self.layers[-1](x)
