r"""Real vs random labels on mnist5k at width 2048: MLP 784-2048-10, 60 epochs, per layer.

  python -m experiments.real_vs_random.main \
      --config=experiments/real_vs_random/configs/width2048.py \
      --workdir=/tmp/rvr_width2048

(2203.10036 §6.) m-coherence of a fixed sample of 1,000 training examples,
whole network and per module (layers/0: the hidden layer, layers/1: the
output layer), every step of epoch 1, then steps 1.15x apart. About a minute
on 2 CPU cores. Compare the widths with
  python -m experiments.report /tmp/rvr_width512 /tmp/rvr_width2048
Fields as in default.py.
"""

import ml_collections

from experiments.real_vs_random.configs import default


def get_config() -> ml_collections.ConfigDict:
  config = default.get_config()
  config.experiment = 'real_vs_random'
  config.model.widths = (784, 2048, 10)
  return config
