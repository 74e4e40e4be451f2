r"""Easy vs hard, tiny: mnist5k, MLP 784-256-10, split after 2 epochs.

  python -m experiments.easy_hard.main \
      --config=experiments/easy_hard/configs/tiny.py --workdir=/tmp/easy_hard_tiny

A few minutes on 2 CPU cores. Fields as in default.py.
"""

import ml_collections

from experiments.common import measure
from experiments.easy_hard.configs import default


def get_config() -> ml_collections.ConfigDict:
  config = default.get_config()
  config.data = ml_collections.ConfigDict(dict(name='mnist5k', split_seed=0))
  config.model.name = 'mlp'
  config.model.widths = (784, 256, 10)
  config.train.learning_rate = 0.1
  config.train.momentum = 0.0
  config.train.batch_size = 50
  config.easy_hard.subset_epochs = 100
  # In memory: every test example (test_eval_size None), nothing streamed
  # (chunk_size None).
  config.measure = measure.block(every_steps=100)
  return config
