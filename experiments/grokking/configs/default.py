r"""Grokking, paper size: 1-layer transformer on (a + b) mod 113, 30 % of pairs.

  python -m experiments.grokking.main \
      --config=experiments/grokking/configs/default.py --workdir=/tmp/grokking

Nanda et al. 2023's setting (d_model 128, 4 heads, MLP 512, untied unembedding,
full batch, AdamW lr 1e-3, betas (0.9, 0.98), weight decay 1.0, 10 warm-up
steps), 20,000 steps (they report grokking near 10k); the model here adds
pre-LayerNorms and a GELU MLP. Expected time on 2 quiet CPU cores: ~0.2 s per
full-batch step (3,830 pairs), ~70 min of training, plus 251 measurements of
~1.5 s (2 x 1,000 pairs): ~75 min (extrapolated from 40 steps timed on a
shared machine; the full run was not made here). Minutes on one GPU.
Override any field, e.g. --config.data.modulus=97
--config.data.train_fraction=0.4 --config.train.steps=5000. A workdir keeps
its config.json: resuming it with other values is refused unless
--config.allow_config_change=True.
"""

import ml_collections

from experiments.common import measure


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0                       # model initialization
  config.data = ml_collections.ConfigDict(dict(
      modulus=113,                      # p: tokens 0..p-1 and '=' (token p)
      train_fraction=0.3,               # share of the p² pairs for training
      split_seed=0))
  config.model = ml_collections.ConfigDict(dict(
      d_model=128, num_heads=4, num_layers=1, mlp_ratio=4,
      tie_embeddings=False))
  config.train = ml_collections.ConfigDict(dict(
      learning_rate=1e-3, b1=0.9, b2=0.98, weight_decay=1.0,
      warmup_steps=10,                  # linear warm-up, then constant
      batch_size=-1,                    # -1: full batch (every training pair)
      steps=20_000,
      checkpoint_every=1_000))          # steps
  config.measure = measure.block(
      # FIXED samples, the same at every measurement: the first pairs of the
      # (randomly ordered) training and held-out sets.
      sample_size=1_000,
      held_out_sample_size=1_000,
      microbatch_size=250,
      method='auto',                    # ghost norms where possible
      dense_until=10,                   # measure every step up to here ...
      growth=1.03,                      # ... then at steps this factor apart.
  )
  # Data parallelism: the batch split over the 'data' axis of this many
  # devices; -1 = every device of every process, 1 = one device.
  config.mesh = ml_collections.ConfigDict(dict(data=-1))
  config.allow_config_change = False    # True: resume a workdir under new values
  return config
