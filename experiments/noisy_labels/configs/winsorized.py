r"""Winsorized GD vs noisy labels (ICLR 2020 §5): MNIST, MLP 3x256, c in {0,1,2,4,8}.

One workdir per noise level (25 / 50 / 75 %):
  for p in 0.25 0.5 0.75; do
    python -m experiments.noisy_labels.main \
        --config=experiments/noisy_labels/configs/winsorized.py \
        --config.noise.p=$p --workdir=/tmp/noisy_winsorized/p$p
  done
  python -m experiments.report /tmp/noisy_winsorized/p*

Vanilla SGD, lr 0.1, batch 100, no regularization; c = 0 is plain SGD
('mean', the same update without per-example gradients). Noise: the
reference rule (pick each example with probability p, permute the labels of
the picked set). Needs tfds's mnist prepared in --config.data.data_dir or
TFDS_DATA_DIR (config.data.name='mnist', see docs/experiments.md);
winsorized_tiny.py runs on the embedded mnist5k.
"""

import ml_collections

from experiments.noisy_labels.configs import default


def get_config() -> ml_collections.ConfigDict:
  config = default.get_config()
  config.experiment = 'noisy_labels'
  config.data.name = 'mnist'
  config.model.widths = (784, 256, 256, 256, 10)
  config.train.learning_rate = 0.1
  config.train.batch_size = 100
  config.train.epochs = 100
  config.aggregators = ('mean', 'winsorized:1', 'winsorized:2',
                        'winsorized:4', 'winsorized:8')
  config.measure.every_steps = 600  # one MNIST epoch
  return config
