r"""Stability bound, tiny: mnist5k, MLP 784-128-10, 0/50/100 % noise, 20 epochs.

  python -m experiments.stability_bound.main \
      --config=experiments/stability_bound/configs/tiny.py \
      --workdir=/tmp/stability_bound_tiny

α̂ measured every 5 steps on 500 training examples; a few minutes on 2 CPU
cores (measured: 6 minutes for the 3 levels, on cores shared with other
jobs). Fields as in default.py.
"""

import ml_collections

from experiments.common import measure
from experiments.stability_bound.configs import default


def get_config() -> ml_collections.ConfigDict:
  config = default.get_config()
  config.data.name = 'mnist5k'
  config.model.name = 'mlp'
  config.model.widths = (784, 128, 10)
  config.train.batch_size = 100  # 40 steps per epoch
  config.train.epochs = 20
  config.measure = measure.block(every_steps=5, sample_size=500,
                                 microbatch_size=250, method='auto')
  return config
