r"""Easy vs hard examples, paper size: ImageNet ResNet-18 (2003.07422).

  python -m experiments.easy_hard.main \
      --config=experiments/easy_hard/configs/default.py --workdir=/tmp/easy_hard

Examples classified correctly after `easy_hard.epochs` epochs (2 in the
paper) of a first run are "easy", the others "hard". Each set is split in
two halves (equal sizes: n = min(easy, hard) / 2 each, and a random
control of the same size); fresh networks are trained on one half of easy,
of hard and of random examples and tested on the other halves. ImageNet
streams (experiments/common/supervised.py): the split run classifies every
training example each epoch (each process its slice); the subset runs
classify the examples of their halves every `measure.every_steps` steps.
Needs the tfds imagenet2012 files (--config.data.data_dir=DIR) and resnet18
by name (GroupNorm in place of BatchNorm).
"""

import ml_collections

from experiments.common import data
from experiments.common import measure


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.experiment = 'easy_hard'
  config.seed = 0
  config.data = data.config_for('imagenet2012')  # streamed
  config.model = ml_collections.ConfigDict(dict(name='resnet18', widths=()))
  config.noise = ml_collections.ConfigDict(dict(kind='uniform', levels=(0.0,),
                                                seed=1))
  config.train = ml_collections.ConfigDict(dict(
      aggregator='mean', learning_rate=0.1, momentum=0.9, batch_size=256,
      epochs=2, checkpoint_every_epochs=1))   # epochs: of the split run
  config.easy_hard = ml_collections.ConfigDict(dict(
      subset_epochs=90,       # training epochs on each half
      equal_sizes=True,       # easy, hard and random halves of one size n
  ))
  # The split run measures every epoch (a pass over the training set); the
  # subset runs every `every_steps` steps.
  config.measure = measure.block(
      every_steps=2000,       # each: a pass over the four halves
      test_eval_size=10000,   # test accuracy: 10,000 validation examples
      chunk_size=2048,        # examples per streamed evaluation chunk
  )
  config.mesh = ml_collections.ConfigDict(dict(data=-1))
  config.allow_config_change = False
  return config
