r"""Coherence evolution, paper size: ImageNet ResNet-18, 0/25/50/75/100 % noise.

  python -m experiments.coherence_evolution.main \
      --config=experiments/coherence_evolution/configs/default.py \
      --workdir=gs://BUCKET/coherence_evolution

(2008.01217 §3: batch 4096, SGD momentum 0.9, no augmentation, no weight
decay, uniform random labels, a FIXED sample of m = 40,356 training
examples, measured densely over the first steps.) ImageNet streams: each
process reads its slice of every batch and measurement chunk, host memory a
few GB per process (experiments/common/supervised.py, examples.py); the
noise is the per-index uniform rule (exactly round(p·N) examples relabelled).
Needs the tfds imagenet2012 array_record files (pass
--config.data.data_dir=DIR; a missing dataset fails at once with how to
build it from the manually downloaded tars) and ResNet-18 by name
(GroupNorm in place of BatchNorm, nets.resolve_norm). The
learning rate (linear scaling, 0.1 x 4096 / 256) and the epochs are this
project's choice, not the paper's.
"""

import ml_collections

from experiments.common import data
from experiments.common import measure


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.experiment = 'coherence_evolution'
  config.seed = 0
  config.data = data.config_for('imagenet2012')  # streamed
  config.model = ml_collections.ConfigDict(dict(name='resnet18', widths=()))
  # 'uniform': each label replaced by a uniform class with probability p.
  config.noise = ml_collections.ConfigDict(dict(
      kind='uniform', levels=(0.0, 0.25, 0.5, 0.75, 1.0), seed=1))
  config.train = ml_collections.ConfigDict(dict(
      aggregator='mean', learning_rate=1.6, momentum=0.9, batch_size=4096,
      epochs=90, checkpoint_every_epochs=1))
  config.measure = measure.block(
      sample_size=40356,   # FIXED training examples (with the run's labels)
      microbatch_size=256,
      method='auto',
      dense_until=50,      # every step up to here (the collapse: ~25 steps)
      growth=1.1,          # then steps 1.1x apart
      eval_size=40356,     # accuracies: the coherence sample's examples
      test_eval_size=10000,  # test accuracy: 10,000 validation examples
      chunk_size=2048,     # examples per streamed measurement chunk
  )
  config.mesh = ml_collections.ConfigDict(dict(data=-1))
  config.allow_config_change = False
  return config
