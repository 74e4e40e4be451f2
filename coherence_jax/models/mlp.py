"""Multi-layer perceptron on flattened inputs (the Coherent Gradients MNIST nets)."""

from typing import Sequence

import jax
from flax import nnx


class MLP(nnx.Module):
  """ReLU MLP; inputs are flattened. `MLP([784, 2048, 10], rngs=nnx.Rngs(0))`.

  The papers use 784-2048-10 (noisy labels) and 784-256-256-256-10 (winsorized GD).
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
    x = x.reshape((x.shape[0], -1))
    for layer in self.layers[:-1]:
      x = jax.nn.relu(layer(x))
    return self.layers[-1](x)
