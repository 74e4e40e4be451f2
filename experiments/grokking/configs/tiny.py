r"""Grokking, tiny: (a + b) mod 53, 50 % of pairs, 1,000 full-batch steps.

  python -m experiments.grokking.main \
      --config=experiments/grokking/configs/tiny.py --workdir=/tmp/grokking_tiny

The same 1-layer transformer as default.py (d_model 128, 4 heads, MLP 512) on
a smaller task with a 3x larger learning rate: it memorizes the 1,404
training pairs by step 61 (held-out accuracy 0.001) and generalizes (held-out
accuracy >= 0.95) at step 512; results/grokking/ holds its report. 21 min on 2
CPU cores shared with other jobs (load ~12), est. 3-4 min on quiet ones (121
measurements of 2 x 256 pairs). Fields as in default.py.
"""

import ml_collections

from experiments.grokking.configs import default


def get_config() -> ml_collections.ConfigDict:
  config = default.get_config()
  config.data.modulus = 53
  config.data.train_fraction = 0.5
  config.train.learning_rate = 3e-3
  config.train.steps = 1_000
  config.train.checkpoint_every = 100
  config.measure.sample_size = 256
  config.measure.held_out_sample_size = 256
  config.measure.microbatch_size = 128
  config.measure.dense_until = 10
  config.measure.growth = 1.04
  return config
