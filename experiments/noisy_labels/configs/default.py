r"""Memorization of noisy labels under robust aggregation (ICLR 2020, 2003.07422).

  python -m experiments.noisy_labels.main \
      --config=experiments/noisy_labels/configs/default.py --workdir=/tmp/noisy

Choose the aggregators with the config (a tuple, quoted for the shell):
  --config.aggregators='("mean","winsorized:4","rm3")'
Names: mean, winsorized:C, trimmed:C, median_of_means:K, rm3, ra3, m3
(see experiments/common/aggregator_specs.py). A workdir keeps its config.json:
resuming it with other values is refused unless --config.allow_config_change=True.
"""

import ml_collections

from experiments.common import measure


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.data = ml_collections.ConfigDict(dict(name='mnist5k', split_seed=0))
  # 'permute': the reference rule (pick each example with probability p,
  # permute the labels of the picked set; 'corrupt' = label actually changed,
  # ≈ 0.9 p). Also 'uniform' (a uniform class) and the pixel corruptions
  # 'shuffled_pixels', 'random_pixels', 'gaussian_pixels'.
  config.noise = ml_collections.ConfigDict(dict(kind='permute', p=0.5, seed=1))
  config.model = ml_collections.ConfigDict(dict(
      name='mlp', widths=(784, 256, 256, 256, 10)))
  config.train = ml_collections.ConfigDict(dict(
      learning_rate=0.1, batch_size=100, epochs=75, checkpoint_every_epochs=5))
  config.aggregators = ('mean', 'winsorized:1', 'winsorized:2', 'winsorized:4',
                        'winsorized:8', 'trimmed:4', 'median_of_means:5',
                        'rm3', 'ra3', 'm3')
  config.measure = measure.block(
      every_steps=100,
      sample_size=500,  # fixed pristine and corrupt samples, each
  )
  # Data parallelism: the batch split over the 'data' axis of this many
  # devices; -1 = every device of every process, 1 = one device.
  config.mesh = ml_collections.ConfigDict(dict(data=-1))
  config.allow_config_change = False  # True: resume a workdir under new values
  return config
