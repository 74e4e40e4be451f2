r"""Learning order, tiny: mnist5k, MLP 784-256-256-256-10, 50 % noise, 75 epochs.

  python -m experiments.learning_order.main \
      --config=experiments/learning_order/configs/tiny.py \
      --workdir=/tmp/learning_order_tiny

Measured: 75 s of run time on 2 CPU cores (3,000 steps; plain SGD
memorizes the corrupt labels within them). Fields as in default.py.
"""

import ml_collections

from experiments.common import measure
from experiments.learning_order.configs import default


def get_config() -> ml_collections.ConfigDict:
  config = default.get_config()
  config.data.name = 'mnist5k'
  config.model.widths = (784, 256, 256, 256, 10)
  config.train.epochs = 75  # 40 steps per epoch
  config.measure = measure.block(every_steps=20)
  return config
