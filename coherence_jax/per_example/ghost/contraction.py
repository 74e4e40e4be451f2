"""Layers that contract one activation with a kernel, written as einsum subscripts.

nnx.Linear, nnx.LinearGeneral, nnx.Einsum and nnx.Embed.attend all compute
z = einsum('lhs,rhs->out', x, kernel) (+ bias), with the example axis the first
letter of lhs. Every quantity ghost norms need is then an einsum too:
  per-example kernel grads   einsum('lhs,out->e rhs', x, dz)
  the batch kernel grad      einsum('lhs,out->rhs', x, dz)
  Gram factors               x and dz regrouped as [B, G, T, K] and [B, G, T, N]
The kernel's letters split into groups G (also in lhs and out, e.g. heads of
'bhtd,hdk->bhtk'), contracted letters K (also in lhs) and output letters N
(also in out); positions T are the letters lhs and out share outside the
kernel. Example i's kernel gradient is then Σ_t A[i,g,t] ⊗ D[i,g,t] per group.
A kernel that holds the example letter itself (LinearGeneral's batch_axis)
has one slice per example: the per-example gradients are slices of the batch
gradient.

Example (nnx.Linear on [B, T, 3] inputs):
  >>> spec = of_linear(3, use_bias=True)
  >>> spec.lhs, spec.rhs, spec.out, spec.bias
  ('abc', 'cd', 'abd', 'd')
  >>> x, dz = jnp.ones((2, 5, 3)), jnp.ones((2, 5, 4))
  >>> kernel_grad(spec, x, dz)[0], per_example_kernel_grads(spec, x, dz).shape
  (Array([10., 10., 10., 10.], dtype=float32), (2, 3, 4))
"""

import dataclasses
import string
from typing import Optional, Tuple, Union

import jax
import jax.numpy as jnp

_HIGHEST = jax.lax.Precision.HIGHEST


@dataclasses.dataclass(frozen=True)
class Contraction:
  """z = einsum(f'{lhs},{rhs}->{out}', x, kernel) + bias over the letters `bias`.

  Attributes:
    lhs: letters of the input x; the first is the example axis.
    rhs: letters of the kernel.
    out: letters of the output z.
    bias: letters of `out` the bias spans, in the order of `out` (the bias
      holds that many entries); None without a bias.
    kernel: the name of the kernel param ('kernel'; 'embedding' for attend).
  """
  lhs: str
  rhs: str
  out: str
  bias: Optional[str] = None
  kernel: str = 'kernel'

  @property
  def example(self) -> str:
    return self.lhs[0]

  @property
  def example_in_kernel(self) -> bool:
    """The kernel has one slice per example (LinearGeneral's batch_axis)."""
    return self.example in self.rhs

  @property
  def groups(self) -> str:
    return ''.join(c for c in self.rhs
                   if c in self.lhs and c in self.out and c != self.example)

  @property
  def contracted(self) -> str:
    return ''.join(c for c in self.rhs if c in self.lhs and c not in self.out)

  @property
  def outputs(self) -> str:
    return ''.join(c for c in self.rhs if c in self.out and c not in self.lhs)

  @property
  def positions(self) -> str:
    return ''.join(c for c in self.lhs[1:] if c in self.out and c not in self.rhs)

  @property
  def partition(self) -> Tuple[Tuple[int, ...], ...]:
    """Kernel axes of (groups, contracted, outputs): how x and dz meet it."""
    return tuple(tuple(self.rhs.index(c) for c in letters)
                 for letters in (self.groups, self.contracted, self.outputs))


def problem(spec: Contraction) -> Optional[str]:
  """Why ghost rules cannot handle `spec`, or None.

  Args:
    spec: a `Contraction`.

  Returns:
    A short reason, or None when the contraction is supported.

  Example:
    >>> problem(Contraction('ab', 'bc', 'ac'))
    >>> problem(Contraction('ab', 'ac', 'bc'))
    'contracts or sums over the example axis'
  """
  for name, letters in (('input', spec.lhs), ('kernel', spec.rhs),
                        ('output', spec.out)):
    if len(set(letters)) != len(letters):
      return f'repeats a letter in its {name} subscripts (a diagonal)'
  if spec.example not in spec.out:
    return 'contracts or sums over the example axis'
  for c in spec.lhs:
    if c not in spec.out and c not in spec.rhs:
      return f'sums the input over its axis {spec.lhs.index(c)}'
  for c in spec.rhs:
    if c not in spec.out and c not in spec.lhs:
      return f'sums the kernel over its axis {spec.rhs.index(c)}'
  return None


# ------------------------------------------------------------ constructors
def _letters(n: int, used: str = '') -> str:
  free = [c for c in string.ascii_letters if c not in used]
  if n > len(free):
    raise ValueError(f'too many axes for einsum letters: {n}')
  return ''.join(free[:n])


def of_linear(x_ndim: int, use_bias: bool) -> Contraction:
  """nnx.Linear on inputs of rank `x_ndim` (contracts the last axis).

  Args:
    x_ndim: the rank of the input, example axis included.
    use_bias: whether the layer has a bias.

  Returns:
    The `Contraction`.

  Example:
    >>> of_linear(2, use_bias=False)
    Contraction(lhs='ab', rhs='bc', out='ac', bias=None, kernel='kernel')
  """
  x = _letters(x_ndim + 1)
  new = x[-1]
  x = x[:-1]
  return Contraction(x, x[-1] + new, x[:-1] + new, new if use_bias else None)


def _normalize(axis: int, ndim: int) -> int:
  return axis % ndim if -ndim <= axis < ndim else axis


def of_linear_general(x_ndim: int, axis, batch_axis, n_out: int,
                      use_bias: bool) -> Union[Contraction, str]:
  """nnx.LinearGeneral (axis, batch_axis, out_features) on rank-`x_ndim` inputs.

  Args:
    x_ndim: the rank of the input, example axis included.
    axis: the layer's contracted input axes (a tuple of ints).
    batch_axis: the layer's batch axes (keys of its `batch_axis`).
    n_out: the number of output feature axes.
    use_bias: whether the layer has a bias.

  Returns:
    The `Contraction`, or a reason string for axes out of range.

  Example (MultiHeadAttention's output projection on [B, T, heads, dim]):
    >>> spec = of_linear_general(4, (-2, -1), (), 1, True)
    >>> spec.lhs, spec.rhs, spec.out, spec.positions, spec.contracted
    ('abcd', 'cde', 'abe', 'b', 'cd')
  """
  axis = tuple(_normalize(a, x_ndim) for a in axis)
  batch = tuple(_normalize(a, x_ndim) for a in batch_axis)
  if any(not 0 <= a < x_ndim for a in axis + batch):
    return f'has axes {axis + batch} outside an input of rank {x_ndim}'
  x = _letters(x_ndim)
  new = _letters(n_out, x)
  rhs = (''.join(x[a] for a in batch) + ''.join(x[a] for a in axis) + new)
  free = ''.join(x[i] for i in range(x_ndim) if i not in axis and i not in batch)
  out = ''.join(x[a] for a in batch) + free + new
  bias = ''.join(x[a] for a in batch) + new
  return Contraction(x, rhs, out, bias if use_bias else None)


def of_einsum(einsum_str: str, x_ndim: int, kernel_ndim: int,
              use_bias: bool) -> Union[Contraction, str]:
  """nnx.Einsum's 'lhs,rhs->out' on rank-`x_ndim` inputs.

  An ellipsis may stand for leading input axes (and then appears in out); the
  kernel's subscripts must be explicit.

  Args:
    einsum_str: the equation, e.g. 'btd,dk->btk' or '...d,dk->...k'.
    x_ndim: the rank of the input.
    kernel_ndim: the rank of the kernel.
    use_bias: whether the layer has a bias.

  Returns:
    The `Contraction`, or a reason string when it is not of that form.

  Example:
    >>> of_einsum('...d,hdk->...hk', 3, 3, True).bias
    'hk'
    >>> of_einsum('bd,...k->bk', 2, 2, False)
    "einsum 'bd,...k->bk': an ellipsis in the kernel's subscripts"
  """
  eq = einsum_str.replace(' ', '')
  if '->' not in eq or eq.count(',') != 1:
    return f'einsum {einsum_str!r}: not of the form lhs,rhs->out'
  inputs, out = eq.split('->')
  lhs, rhs = inputs.split(',')
  if '...' in rhs:
    return f"einsum {einsum_str!r}: an ellipsis in the kernel's subscripts"
  if '...' in lhs:
    explicit = lhs.replace('...', '')
    if x_ndim < len(explicit):
      return (f'einsum {einsum_str!r} does not match an input of rank '
              f'{x_ndim}')
    fill = _letters(x_ndim - len(explicit), lhs + rhs + out)
    lhs = lhs.replace('...', fill)
    out = out.replace('...', fill)
  if '.' in lhs + out:
    return f'einsum {einsum_str!r}: an ellipsis the input cannot fill'
  if len(lhs) != x_ndim or len(rhs) != kernel_ndim:
    return (f'einsum {einsum_str!r} does not match an input of rank {x_ndim} '
            f'and a kernel of rank {kernel_ndim}')
  bias = ''.join(c for c in out if c in rhs)
  return Contraction(lhs, rhs, out, bias if use_bias else None)


def of_attend(x_ndim: int) -> Contraction:
  """nnx.Embed.attend: query [..., D] times embedding [V, D] transposed.

  Args:
    x_ndim: the rank of the query.

  Returns:
    The `Contraction` of the 'embedding' param.

  Example:
    >>> of_attend(3)
    Contraction(lhs='abc', rhs='dc', out='abd', bias=None, kernel='embedding')
  """
  x = _letters(x_ndim + 1)
  new, x = x[-1], x[:-1]
  return Contraction(x, new + x[-1], x[:-1] + new, None, 'embedding')


# ------------------------------------------------------------- quantities
def _einsum(eq, *operands):
  return jnp.einsum(eq, *operands, precision=_HIGHEST)


def _sizes(letters: str, labels: str, shape) -> int:
  size = 1
  for c in letters:
    size *= shape[labels.index(c)]
  return size


def dims(spec: Contraction, x_shape, z_shape) -> Tuple[int, int, int, int]:
  """(G, T, K, N): groups, positions, contracted and output sizes.

  Args:
    spec: the `Contraction`.
    x_shape: the input's shape.
    z_shape: the output's shape.

  Returns:
    The products of the sizes of each class of letters (1 when empty).

  Example:
    >>> dims(of_linear(3, True), (2, 5, 3), (2, 5, 4))
    (1, 5, 3, 4)
  """
  return (_sizes(spec.groups, spec.lhs, x_shape),
          _sizes(spec.positions, spec.lhs, x_shape),
          _sizes(spec.contracted, spec.lhs, x_shape),
          _sizes(spec.outputs, spec.out, z_shape))


def kernel_grad(spec: Contraction, x: jax.Array, dz: jax.Array) -> jax.Array:
  """Σ_i of the per-example kernel gradients: kernel-shaped.

  Args:
    spec: the `Contraction`.
    x: the input (float32 for float32 sums).
    dz: the output cotangent.

  Returns:
    einsum('lhs,out->rhs', x, dz).

  Example:
    >>> kernel_grad(of_linear(2, False), jnp.ones((3, 2)), jnp.ones((3, 1)))
    Array([[3.],
           [3.]], dtype=float32)
  """
  return _output_first(spec, x, dz)


def _output_first(spec: Contraction, x, dz) -> jax.Array:
  """einsum('lhs,out->rhs', x, dz) with the kernel's output letters leading.

  XLA:CPU transposes the operand whose letters trail a dot's result. Laid out
  as autodiff lays out a weight gradient (the output letters first, then
  transposed back to the kernel's order), the copy it makes is of dz, made in
  the backward pass and dropped at once, not of the layer input x, which XLA
  would copy during the forward pass and keep until the backward: one more
  activation per layer (the ViT of benchmarks/bench_sequence.py at B = 32:
  1.19x the plain gradient's compiled memory instead of 1.07x).
  """
  order = ''.join(c for c in spec.rhs if c in spec.out) + ''.join(
      c for c in spec.rhs if c not in spec.out)
  g = _einsum(f'{spec.lhs},{spec.out}->{order}', x, dz)
  return jnp.transpose(g, [order.index(c) for c in spec.rhs])


def per_example_kernel_grads(spec: Contraction, x: jax.Array,
                             dz: jax.Array) -> jax.Array:
  """Per-example kernel gradients [B, *kernel.shape] (kernel without e).

  Args:
    spec: a `Contraction` whose kernel does not hold the example letter.
    x: the input.
    dz: the output cotangent.

  Returns:
    einsum('lhs,out->e rhs', x, dz).

  Example:
    >>> per_example_kernel_grads(of_linear(2, False), jnp.ones((3, 2)),
    ...                          jnp.ones((3, 1))).shape
    (3, 2, 1)
  """
  return _einsum(f'{spec.lhs},{spec.out}->{spec.example}{spec.rhs}', x, dz)


def factors(spec: Contraction, x: jax.Array, dz: jax.Array):
  """(A [B, G, T, K], D [B, G, T, N]) with g_i = Σ_t A[i,g,t] ⊗ D[i,g,t].

  K and N are flattened in the kernel's axis order, so the factors of two
  calls of one layer match.

  Args:
    spec: a `Contraction` whose kernel does not hold the example letter.
    x: the input.
    dz: the output cotangent.

  Returns:
    The two factors.

  Example:
    >>> a, d = factors(of_linear(3, False), jnp.ones((2, 5, 3)),
    ...                jnp.ones((2, 5, 4)))
    >>> a.shape, d.shape
    ((2, 1, 5, 3), (2, 1, 5, 4))
  """
  e, g, t = spec.example, spec.groups, spec.positions

  def regroup(value, labels, features):
    v = _einsum(f'{labels}->{e}{g}{t}{features}', value)
    return v.reshape(v.shape[0], _sizes(g, labels, value.shape),
                     _sizes(t, labels, value.shape), -1)

  return regroup(x, spec.lhs, spec.contracted), regroup(dz, spec.out,
                                                        spec.outputs)


def example_slices(spec: Contraction, grad: jax.Array,
                   letters: Optional[str] = None) -> jax.Array:
  """A batch gradient whose `letters` hold the example letter, example-first.

  Args:
    spec: the `Contraction`.
    grad: a gradient laid out as `letters`.
    letters: its letters; default the kernel's.

  Returns:
    `grad` with the example axis moved to the front: [B, ...].

  Example (a kernel with one slice per example, 'ab,abc->ac'):
    >>> spec = Contraction('ab', 'abc', 'ac')
    >>> example_slices(spec, jnp.zeros((4, 3, 2))).shape
    (4, 3, 2)
  """
  letters = spec.rhs if letters is None else letters
  return jnp.moveaxis(grad, letters.index(spec.example), 0)


def per_example_bias_grads(spec: Contraction, dz: jax.Array) -> jax.Array:
  """Per-example bias gradients [B, ...] (Σ of dz over the other letters).

  Args:
    spec: a `Contraction` with a bias.
    dz: the output cotangent.

  Returns:
    [B, ...]: the bias entries example i's gradient can touch.

  Example:
    >>> per_example_bias_grads(of_linear(3, True), jnp.ones((2, 5, 4))).shape
    (2, 4)
  """
  if spec.example in spec.bias:
    return example_slices(spec, _einsum(f'{spec.out}->{spec.bias}', dz),
                          spec.bias)
  return _einsum(f'{spec.out}->{spec.example}{spec.bias}', dz)


def bias_grad(spec: Contraction, dz: jax.Array, bias_shape) -> jax.Array:
  """Σ_i of the per-example bias gradients, in the bias's own shape.

  Args:
    spec: a `Contraction` with a bias.
    dz: the output cotangent.
    bias_shape: the bias param's shape.

  Returns:
    The batch gradient of the bias.

  Example:
    >>> bias_grad(of_linear(3, True), jnp.ones((2, 5, 4)), (4,))
    Array([10., 10., 10., 10.], dtype=float32)
  """
  return _einsum(f'{spec.out}->{spec.bias}', dz).reshape(bias_shape)
