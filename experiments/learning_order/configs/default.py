r"""Learning order, paper size: MNIST, MLP 784-2048-10, 50 % permuted labels (ICLR 2020).

  python -m experiments.learning_order.main \
      --config=experiments/learning_order/configs/default.py \
      --workdir=/tmp/learning_order

Per training example, the step from which it stays correctly classified
("when learnt", the reference code's record), pristine vs corrupt; the step
of best test accuracy vs the onset of memorization. Vanilla SGD, lr 0.1,
batch 100, no regularization, as the ICLR 2020 MNIST runs. Needs tfds's
mnist prepared (config.data.data_dir or TFDS_DATA_DIR).
"""

import ml_collections

from experiments.common import measure


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.experiment = 'learning_order'
  config.seed = 0
  config.data = ml_collections.ConfigDict(dict(name='mnist', split_seed=0))
  config.model = ml_collections.ConfigDict(dict(name='mlp',
                                                widths=(784, 2048, 10)))
  # 'permute': pick each example with probability p, permute the picked labels.
  config.noise = ml_collections.ConfigDict(dict(kind='permute', levels=(0.5,),
                                                seed=1))
  config.train = ml_collections.ConfigDict(dict(
      aggregator='mean', learning_rate=0.1, momentum=0.0, batch_size=100,
      epochs=100, checkpoint_every_epochs=5))
  # Accuracies of every training example (the records need each one) and
  # of every test example.
  config.measure = measure.block(
      every_steps=100,  # records and metrics; the when-learnt resolution
  )
  # Onset of memorization: the first step after the corrupt-accuracy minimum
  # at which it has risen by this much (w.r.t. the noisy labels).
  config.analysis = ml_collections.ConfigDict(dict(memorization_rise=0.05))
  config.mesh = ml_collections.ConfigDict(dict(data=-1))
  config.allow_config_change = False
  return config
