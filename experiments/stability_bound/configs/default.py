r"""Stability bound (2203.10036 theorem), paper-like size: CIFAR-10 ResNet-18, real vs random labels.

  python -m experiments.stability_bound.main \
      --config=experiments/stability_bound/configs/default.py \
      --workdir=/tmp/stability_bound

Along each run, the self-term-free α̂ (CoherenceStats.alpha_unbiased) of a
FIXED training sample every `measure.every_steps` steps, and the factor
Σ_t η_t·sqrt(2(1−α̂_t)) of the bound (a Riemann sum: α̂ held over each
measurement interval; exact with every_steps=1), against the measured
train-test gaps. Only the α-dependent factor is tracked (see report.md for
the constants). Needs tfds's cifar10 prepared (config.data.data_dir or
TFDS_DATA_DIR); resnet18 comes from the models registry.
"""

import ml_collections

from experiments.common import measure


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.experiment = 'stability_bound'
  config.seed = 0
  config.data = ml_collections.ConfigDict(dict(name='cifar10', split_seed=0))
  config.model = ml_collections.ConfigDict(dict(name='resnet18', widths=()))
  config.noise = ml_collections.ConfigDict(dict(
      kind='uniform', levels=(0.0, 0.5, 1.0), seed=1))
  config.train = ml_collections.ConfigDict(dict(
      aggregator='mean', learning_rate=0.1, momentum=0.0, batch_size=128,
      epochs=100, checkpoint_every_epochs=5))
  # Accuracies of every training and test example (no eval samples).
  config.measure = measure.block(
      every_steps=10,       # α̂ held over each interval of the Riemann sum
      sample_size=10000,    # FIXED training examples (with the run's labels)
      microbatch_size=250, method='auto')
  config.mesh = ml_collections.ConfigDict(dict(data=-1))
  config.allow_config_change = False
  return config
