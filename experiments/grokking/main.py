r"""Coherence through grokking: m-coherence while a transformer groks (a + b) mod p.

  python -m experiments.grokking.main --workdir=/tmp/grokking \
      [--config=experiments/grokking/configs/tiny.py] [--config.seed=1]

Writes <workdir>/metrics.jsonl, summary.json, report.md, grokking.png. A
crashed run resumes from its checkpoints when started again. Several
processes: the flags of experiments/common/distributed.py, as for
experiments.real_vs_random.main.
"""

from absl import app

from experiments.common import entry
from experiments.grokking import train

main = entry.define(__file__, train.train_and_evaluate)

if __name__ == '__main__':
  app.run(main, flags_parser=entry.parse_flags)
