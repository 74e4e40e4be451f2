r"""SGD vs M3 vs RM3 vs RA3, tiny: mnist5k, MLP 784-256-256-256-10, 50 % uniform noise.

  python -m experiments.noisy_median.main \
      --config=experiments/noisy_median/configs/tiny.py \
      --workdir=/tmp/noisy_median_tiny

Batch 100, lr 0.1, 75 epochs (3,000 steps; plain SGD memorizes the noise
within them), no momentum. Measured: 11 minutes for the 4 aggregators on 2
CPU cores shared with other jobs. Fields as in default.py.
"""

import ml_collections

from experiments.common import measure
from experiments.noisy_median.configs import default


def get_config() -> ml_collections.ConfigDict:
  config = default.get_config()
  config.data = ml_collections.ConfigDict(dict(name='mnist5k', split_seed=0))
  config.model = ml_collections.ConfigDict(dict(
      name='mlp', widths=(784, 256, 256, 256, 10)))
  config.train.batch_size = 100
  config.train.epochs = 75
  config.train.checkpoint_every_epochs = 5
  # In memory: accuracies of every example (eval_size, test_eval_size None:
  # no samples), nothing streamed (chunk_size None).
  config.measure = measure.block(every_steps=50)
  return config
