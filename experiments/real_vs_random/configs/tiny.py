r"""Real vs random labels, tiny: 784-16-10, 3 epochs, 40-example sample (~10 s).

  python -m experiments.real_vs_random.main \
      --config=experiments/real_vs_random/configs/tiny.py --workdir=/tmp/rvr_tiny

The tests' end-to-end config; fields as in default.py.
"""

import ml_collections

from experiments.common import measure
from experiments.real_vs_random.configs import default


def get_config() -> ml_collections.ConfigDict:
  config = default.get_config()
  config.model.widths = (784, 16, 10)
  config.train.epochs = 3
  config.train.batch_size = 500  # 8 steps per epoch
  config.train.checkpoint_every_epochs = 1
  config.measure = measure.block(
      sample_size=40, microbatch_size=16, method='auto',
      dense_until=8,           # every step of one epoch (4,000 / 500) ...
      growth=1.5)              # ... then steps 1.5x apart
  return config
