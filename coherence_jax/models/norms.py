"""The normalization layer of a model, chosen by name: 'batch', 'group', None.

BatchNorm couples the examples of a batch in train mode; per-example
gradients and coherence need it in inference mode (running statistics,
`from_nnx` does that). GroupNorm normalizes each example on its own, so a
GroupNorm model is per-example independent in train and inference mode alike.

Example:
  >>> type(make_norm('group', 64, rngs=nnx.Rngs(0))).__name__
  'GroupNorm'
  >>> make_norm(None, 64, rngs=nnx.Rngs(0)) is None
  True
"""

from typing import Optional

from flax import nnx

NORMS = ('batch', 'group', None)


def check_norm(norm, allowed=NORMS) -> None:
  """ValueError naming `norm` unless it is one of `allowed`."""
  if norm not in allowed:
    raise ValueError(f'norm: got {norm!r}; pass one of {allowed}.')


def make_norm(norm: Optional[str], channels: int, *, rngs: nnx.Rngs,
              groups: int = 32) -> Optional[nnx.Module]:
  """BatchNorm (torch's eps 1e-5, momentum 0.1), GroupNorm, or None.

  Args:
    norm: 'batch', 'group' or None (no layer).
    channels: features normalized (the last axis).
    rngs: the `nnx.Rngs` for the initializers.
    groups: GroupNorm groups; min(groups, channels) are used, which must
      divide `channels`.

  Returns:
    The layer, or None for norm=None.

  Raises:
    ValueError: an unknown norm, or groups that do not divide channels.
  """
  check_norm(norm)
  if norm is None:
    return None
  if norm == 'batch':
    # torch BatchNorm2d defaults: eps 1e-5, momentum 0.1 (= flax momentum 0.9).
    return nnx.BatchNorm(channels, momentum=0.9, epsilon=1e-5, rngs=rngs)
  groups = min(groups, channels)
  if channels % groups:
    raise ValueError(f'groups: {groups} GroupNorm groups do not divide '
                     f'{channels} channels; pass a divisor of {channels}.')
  return nnx.GroupNorm(channels, num_groups=groups, epsilon=1e-5, rngs=rngs)


def apply_norm(layer: Optional[nnx.Module], x):
  """layer(x), or x when there is no layer."""
  return x if layer is None else layer(x)
