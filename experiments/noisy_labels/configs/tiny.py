r"""Noisy labels, tiny: 784-64-10, p = 0.5, 3 epochs, mean vs winsorized:4 (~20 s).

  python -m experiments.noisy_labels.main \
      --config=experiments/noisy_labels/configs/tiny.py --workdir=/tmp/noisy_tiny

The tests' end-to-end config; fields as in default.py.
"""

import ml_collections

from experiments.noisy_labels.configs import default


def get_config() -> ml_collections.ConfigDict:
  config = default.get_config()
  config.model.widths = (784, 64, 10)
  config.train.epochs = 3
  config.train.batch_size = 100  # 40 steps per epoch
  config.train.checkpoint_every_epochs = 1
  config.aggregators = ('mean', 'winsorized:4')
  config.measure.every_steps = 40
  config.measure.sample_size = 50
  return config
