r"""SGD vs M3 vs RM3 vs RA3: CIFAR-10 ResNet-18 (CIFAR stem), 50 % uniform noise.

  python -m experiments.noisy_median.main \
      --config=experiments/noisy_median/configs/cifar10.py \
      --workdir=/tmp/noisy_median_cifar10

Batch 128, lr 0.1, 200 epochs, no momentum. Needs tfds's cifar10 prepared
(config.data.data_dir or TFDS_DATA_DIR); resnet18 comes from the models
registry. Fields as in default.py.
"""

import ml_collections

from experiments.common import measure
from experiments.noisy_median.configs import default


def get_config() -> ml_collections.ConfigDict:
  config = default.get_config()
  config.data = ml_collections.ConfigDict(dict(name='cifar10', split_seed=0))
  config.model.stem = 'cifar'
  config.train.batch_size = 128
  config.train.epochs = 200
  config.train.checkpoint_every_epochs = 5
  # In memory: accuracies of every example (eval_size, test_eval_size None:
  # no samples), nothing streamed (chunk_size None).
  config.measure = measure.block(every_steps=390)  # about one epoch
  return config
