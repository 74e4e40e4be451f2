r"""Real vs random labels on mnist5k, 784-2048-10, 60 epochs (the `make demo`).

  python -m experiments.real_vs_random.main \
      --config=experiments/real_vs_random/configs/default.py --workdir=/tmp/rvr

(2203.10036 §6, offline CPU version; ~1 min on 2 cores.) Override any field on
the command line, e.g. --config.train.epochs=10 --config.model.widths='(784,512,10)'.
A workdir keeps its config.json: resuming it with other values is refused unless
--config.allow_config_change=True.
"""

import ml_collections

from experiments.common import measure


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.label_modes = ('real', 'random')  # 'random': 100 % uniform labels.
  config.data = ml_collections.ConfigDict(dict(name='mnist5k', split_seed=0))
  config.model = ml_collections.ConfigDict(dict(name='mlp',
                                                 widths=(784, 2048, 10)))
  config.train = ml_collections.ConfigDict(dict(
      learning_rate=0.1, batch_size=100, epochs=60, checkpoint_every_epochs=5))
  config.measure = measure.block(
      sample_size=1000,        # FIXED training examples, same at every measurement
      microbatch_size=250,
      method='auto',           # ghost norms where possible
      dense_until=40,          # measure every step of one epoch (4,000 / 100) ...
      growth=1.15,             # ... then at steps growing geometrically.
  )
  # Data parallelism: the batch split over the 'data' axis of this many
  # devices; -1 = every device of every process, 1 = one device.
  config.mesh = ml_collections.ConfigDict(dict(data=-1))
  config.allow_config_change = False  # True: resume a workdir under new values
  return config
