"""Per-example image transforms: scaling to [0, 1], resize + center crop,
normalization by the data's mean and std.

Deterministic (no augmentation): an example's pixels are a function of its
index alone, as the corruption rules and exact resumption require. PIL
(installed with matplotlib, the `experiments` extra) is imported by
`resize_center_crop` only.

Example:
  >>> image = np.full((40, 60, 3), 255, np.uint8)
  >>> resize_center_crop(image, size=32, resize=36).shape
  (32, 32, 3)
  >>> float(to_float(image).max())
  1.0
"""

from typing import Sequence

import numpy as np


def to_float(images: np.ndarray) -> np.ndarray:
  """uint8 pixels -> float32 in [0, 1]; float pixels (already in [0, 1]) kept.

  Example:
    >>> to_float(np.array([0, 51, 255], np.uint8)).tolist()
    [0.0, 0.20000000298023224, 1.0]
  """
  images = np.asarray(images)
  if images.dtype == np.uint8:
    return images.astype(np.float32) / np.float32(255.0)
  return images.astype(np.float32, copy=False)


def normalize(images: np.ndarray, mean: Sequence[float],
              std: Sequence[float]) -> np.ndarray:
  """(images - mean) / std per channel (last axis), float32.

  Example:
    >>> normalize(np.full((1, 2, 2, 1), 0.5, np.float32), [0.25], [0.5])[0, 0, 0]
    array([0.5], dtype=float32)
  """
  mean = np.asarray(mean, np.float32)
  std = np.asarray(std, np.float32)
  return ((np.asarray(images, np.float32) - mean) / std).astype(np.float32)


def resize_center_crop(image: np.ndarray, size: int = 224,
                       resize: int = 256) -> np.ndarray:
  """The standard ImageNet evaluation crop: shorter side to `resize`
  (bilinear, antialiased when shrinking), then the central size x size.

  Args:
    image: uint8 [H, W, C] of any H, W.
    size: output height and width.
    resize: the shorter side before cropping (>= size).

  Returns:
    uint8 [size, size, C].

  Raises:
    ValueError: resize < size, or an image that is not [H, W, C].

  Example:
    >>> resize_center_crop(np.zeros((17, 47, 3), np.uint8), 8, 10).shape
    (8, 8, 3)
  """
  if resize < size:
    raise ValueError(f'resize: got {resize} < size {size}; pass resize >= '
                     'size (e.g. 256 for 224).')
  image = np.asarray(image)
  if image.ndim != 3:
    raise ValueError(f'image: got shape {image.shape}; pass [H, W, C].')
  from PIL import Image  # pylint: disable=g-import-not-at-top
  h, w, c = image.shape
  scale = resize / min(h, w)
  new_h, new_w = max(size, round(h * scale)), max(size, round(w * scale))
  channels = [image[..., i] for i in range(c)] if c not in (3, 4) else [image]
  resized = [np.asarray(Image.fromarray(ch).resize(
      (new_w, new_h), Image.Resampling.BILINEAR)) for ch in channels]
  out = resized[0] if len(resized) == 1 else np.stack(resized, axis=-1)
  out = out.reshape(new_h, new_w, c)
  top, left = (new_h - size) // 2, (new_w - size) // 2
  return out[top:top + size, left:left + size]
