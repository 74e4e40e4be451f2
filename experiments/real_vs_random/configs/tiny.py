r"""Real vs random labels, tiny: 784-16-10, 3 epochs, 40-example sample (~10 s).

  python -m experiments.real_vs_random.main \
      --config=experiments/real_vs_random/configs/tiny.py --workdir=/tmp/rvr_tiny

The tests' end-to-end config; fields as in default.py.
"""

import ml_collections

from experiments.real_vs_random.configs import default


def get_config() -> ml_collections.ConfigDict:
  config = default.get_config()
  config.model.widths = (784, 16, 10)
  config.train.epochs = 3
  config.train.batch_size = 500  # 8 steps per epoch
  config.train.checkpoint_every_epochs = 1
  config.measure.sample_size = 40
  config.measure.microbatch_size = 16
  config.measure.growth = 1.5
  return config
