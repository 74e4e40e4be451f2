r"""SGD vs M3 vs RM3 vs RA3, paper size: ImageNet ResNet-18, 50 % uniform noise (2003.07422).

  python -m experiments.noisy_median.main \
      --config=experiments/noisy_median/configs/default.py \
      --workdir=/tmp/noisy_median

Batch 256, lr 0.1, 90 epochs, no momentum (the authors ran M3/RM3/RA3
without it; the SGD baseline here too, for a like-for-like comparison).
Noise: each example gets a uniformly random label with probability 0.5
('corrupt' = the label actually changed). RM3 / RA3 follow the authors'
PyTorch code: 'rm3_reference' / 'ra3_reference' take no step until 3
gradients are buffered (`rolling_median(3, skip_until_full=True)`); 'rm3' /
'ra3' apply the first gradient at steps 1-2 instead. ImageNet streams
(experiments/common/supervised.py): the noise is the per-index uniform rule
(exactly round(p·N) examples relabelled), accuracies are tracked on fixed
samples of 50,000 training and 10,000 validation examples. Needs the tfds
imagenet2012 files (--config.data.data_dir=DIR) and resnet18 by name
(GroupNorm in place of BatchNorm).
"""

import ml_collections

from experiments.common import data
from experiments.common import measure


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.experiment = 'noisy_median'
  config.seed = 0
  config.data = data.config_for('imagenet2012')  # streamed
  config.model = ml_collections.ConfigDict(dict(name='resnet18', widths=(),
                                                stem='imagenet'))
  config.noise = ml_collections.ConfigDict(dict(kind='uniform', p=0.5, seed=1))
  config.train = ml_collections.ConfigDict(dict(
      aggregator='mean', learning_rate=0.1, momentum=0.0, batch_size=256,
      epochs=90, checkpoint_every_epochs=1))
  config.aggregators = ('mean', 'm3', 'rm3_reference', 'ra3_reference')
  config.measure = measure.block(
      every_steps=1000,
      eval_size=50000,      # train / pristine / corrupt accuracy: a sample
      test_eval_size=10000,  # test accuracy: 10,000 validation examples
      chunk_size=2048)      # examples per streamed evaluation chunk
  config.mesh = ml_collections.ConfigDict(dict(data=-1))
  config.allow_config_change = False
  return config
