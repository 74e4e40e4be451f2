r"""Real versus random labels on mnist5k (2203.10036 §6, offline CPU version).

Run:
  python -m experiments.real_vs_random \
      --config=experiments/configs/real_vs_random.py --workdir=/tmp/rvr
Override any field: --config.train.epochs=10 --config.model.widths='(784,2048,10)'
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.label_modes = ('real', 'random')  # 'random': 100 % uniform labels.
  config.data = ml_collections.ConfigDict(dict(name='mnist5k', split_seed=0))
  config.model = ml_collections.ConfigDict(dict(widths=(784, 2048, 10)))
  config.train = ml_collections.ConfigDict(dict(
      learning_rate=0.1, batch_size=100, epochs=60, checkpoint_every_epochs=5))
  config.measure = ml_collections.ConfigDict(dict(
      sample_size=1000,        # FIXED training examples, same at every measurement
      microbatch_size=250,
      method='auto',         # ghost norms where possible
      dense_epochs=1,          # measure every step for this many epochs ...
      growth=1.15,             # ... then at steps growing geometrically.
  ))
  return config
