r"""Real versus random labels: m-coherence over training (the `make demo`).

  python -m experiments.real_vs_random.main --workdir=/tmp/rvr \
      [--config=experiments/real_vs_random/configs/tiny.py] [--config.seed=1]

Writes <workdir>/<mode>/metrics.jsonl, summary.json, real_vs_random.png,
table.md. A crashed run resumes from its checkpoints when started again.
The full-size run (ResNet-50 on streamed ImageNet, m = 50,000):
--config=experiments/real_vs_random/configs/resnet50_imagenet.py.

Several processes (one per host, or N on one machine for testing; see
launch/): add --coordinator_address=HOST:PORT --num_processes=N
--process_id=I, or --distributed=auto where the environment provides them
(Cloud TPU VM, SLURM). Only process 0 writes files.
"""

from absl import app

from experiments.common import entry
from experiments.real_vs_random import train

main = entry.define(__file__, train.train_and_evaluate)

if __name__ == '__main__':
  app.run(main, flags_parser=entry.parse_flags)
