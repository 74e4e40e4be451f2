r"""Coherence evolution, tiny: mnist5k, MLP 784-512-512-10, 60 epochs, 5 noise levels.

  python -m experiments.coherence_evolution.main \
      --config=experiments/coherence_evolution/configs/tiny.py \
      --workdir=/tmp/coherence_evolution_tiny

Measured: 12 minutes of run time for the 5 levels (2,400 steps each) on 2
CPU cores shared with other jobs. Fields as in default.py.
"""

import ml_collections

from experiments.coherence_evolution.configs import default
from experiments.common import measure


def get_config() -> ml_collections.ConfigDict:
  config = default.get_config()
  config.data = ml_collections.ConfigDict(dict(name='mnist5k', split_seed=0))
  config.model.name = 'mlp'
  config.model.widths = (784, 512, 512, 10)
  config.train.learning_rate = 0.01  # with momentum 0.9: an effective 0.1
  config.train.batch_size = 100      # 40 steps per epoch
  config.train.checkpoint_every_epochs = 5
  config.train.epochs = 60
  # In memory: accuracies of every example (eval_size, test_eval_size None:
  # no samples), nothing streamed (chunk_size None).
  config.measure = measure.block(
      sample_size=500, microbatch_size=250, method='auto',
      dense_until=40,      # every step of the first epoch
      growth=1.15)         # then steps 1.15x apart
  return config
