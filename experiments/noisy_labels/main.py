r"""Noisy labels: does robust aggregation block memorization? (ICLR 2020 §5)

  python -m experiments.noisy_labels.main --workdir=/tmp/noisy \
      [--config=experiments/noisy_labels/configs/tiny.py] \
      [--config.aggregators='("mean","winsorized:4")']

Writes <workdir>/<aggregator>/metrics.jsonl, summary.json, noisy_labels.png,
table.md and the corruption masks (corruption.npz, corruption.json). A crashed
run resumes from its checkpoints when started again.

Several processes (one per host, or N on one machine for testing; see
launch/): add --coordinator_address=HOST:PORT --num_processes=N
--process_id=I, or --distributed=auto where the environment provides them
(Cloud TPU VM, SLURM). Only process 0 writes files.
"""

from absl import app

from experiments.common import entry
from experiments.noisy_labels import train

main = entry.define(__file__, train.train_and_evaluate)

if __name__ == '__main__':
  app.run(main, flags_parser=entry.parse_flags)
