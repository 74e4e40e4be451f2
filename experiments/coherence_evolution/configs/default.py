r"""Coherence evolution, paper size: ImageNet ResNet-18, 0/25/50/75/100 % noise.

  python -m experiments.coherence_evolution.main \
      --config=experiments/coherence_evolution/configs/default.py \
      --workdir=gs://BUCKET/coherence_evolution

(2008.01217 §3: batch 4096, SGD momentum 0.9, no augmentation, no weight
decay, uniform random labels, a FIXED sample of m = 40,356 training
examples, measured densely over the first steps.) Needs the tfds
imagenet2012 data and the models by name of issue 11 §1-§2. The learning
rate (linear scaling, 0.1 x 4096 / 256) and the epochs are this project's
choice, not the paper's.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.experiment = 'coherence_evolution'
  config.seed = 0
  config.data = ml_collections.ConfigDict(dict(name='imagenet2012',
                                               split_seed=0))
  config.model = ml_collections.ConfigDict(dict(name='resnet18', widths=()))
  # 'uniform': each label replaced by a uniform class with probability p.
  config.noise = ml_collections.ConfigDict(dict(
      kind='uniform', levels=(0.0, 0.25, 0.5, 0.75, 1.0), seed=1))
  config.train = ml_collections.ConfigDict(dict(
      aggregator='mean', learning_rate=1.6, momentum=0.9, batch_size=4096,
      epochs=90, checkpoint_every_epochs=1))
  config.measure = ml_collections.ConfigDict(dict(
      sample_size=40356,   # FIXED training examples (with the run's labels)
      microbatch_size=256,
      method='auto',
      dense_steps=50,      # every step up to here (the collapse: ~25 steps)
      growth=1.1,          # then steps 1.1x apart
  ))
  config.mesh = ml_collections.ConfigDict(dict(data=-1))
  config.allow_config_change = False
  return config
