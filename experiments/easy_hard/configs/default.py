r"""Easy vs hard examples, paper size: ImageNet ResNet-18 (2003.07422).

  python -m experiments.easy_hard.main \
      --config=experiments/easy_hard/configs/default.py --workdir=/tmp/easy_hard

Examples classified correctly after `easy_hard.epochs` epochs (2 in the
paper) of a first run are "easy", the others "hard". Each set is split in
two halves (equal sizes: n = min(easy, hard) / 2 each, and a random
control of the same size); fresh networks are trained on one half of easy,
of hard and of random examples and tested on the other halves. Needs
imagenet2012 and resnet18 by name (issue 11 §1-§2).
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.experiment = 'easy_hard'
  config.seed = 0
  config.data = ml_collections.ConfigDict(dict(name='imagenet2012',
                                               split_seed=0))
  config.model = ml_collections.ConfigDict(dict(name='resnet18', widths=()))
  config.noise = ml_collections.ConfigDict(dict(kind='uniform', levels=(0.0,),
                                                seed=1))
  config.train = ml_collections.ConfigDict(dict(
      aggregator='mean', learning_rate=0.1, momentum=0.9, batch_size=256,
      epochs=2, checkpoint_every_epochs=1))   # epochs: of the split run
  config.easy_hard = ml_collections.ConfigDict(dict(
      subset_epochs=90,       # training epochs on each half
      equal_sizes=True,       # easy, hard and random halves of one size n
      measure_every_steps=500,
  ))
  config.mesh = ml_collections.ConfigDict(dict(data=-1))
  config.allow_config_change = False
  return config
