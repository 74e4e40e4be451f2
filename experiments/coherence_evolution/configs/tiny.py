r"""Coherence evolution, tiny: mnist5k, MLP 784-512-512-10, 60 epochs, 5 noise levels.

  python -m experiments.coherence_evolution.main \
      --config=experiments/coherence_evolution/configs/tiny.py \
      --workdir=/tmp/coherence_evolution_tiny

Measured: 12 minutes of run time for the 5 levels (2,400 steps each) on 2
CPU cores shared with other jobs. Fields as in default.py.
"""

import ml_collections

from experiments.coherence_evolution.configs import default


def get_config() -> ml_collections.ConfigDict:
  config = default.get_config()
  config.data = ml_collections.ConfigDict(dict(name='mnist5k', split_seed=0))
  config.model.name = 'mlp'
  config.model.widths = (784, 512, 512, 10)
  config.train.learning_rate = 0.01  # with momentum 0.9: an effective 0.1
  config.train.batch_size = 100      # 40 steps per epoch
  config.train.checkpoint_every_epochs = 5
  config.train.epochs = 60
  config.measure.sample_size = 500
  config.measure.microbatch_size = 250
  config.measure.dense_steps = 40
  config.measure.growth = 1.15
  # In memory: accuracies of every example (no samples), nothing streamed.
  del config.measure.eval_size, config.measure.held_out_size
  del config.measure.chunk_size
  return config
