r"""SGD vs M3 vs RM3 vs RA3 at 50 % uniform label noise (2003.07422).

  python -m experiments.noisy_median.main --workdir=/tmp/noisy_median \
      --config=experiments/noisy_median/configs/tiny.py

Writes <workdir>/<aggregator>/metrics.jsonl, summary.json, corruption.npz and
<workdir>/report.md with its plots. A killed run resumes when started again.
"""

from absl import app

from experiments.noisy_median import train
from experiments.common import entry

main = entry.define(__file__, train.train_and_evaluate)

if __name__ == '__main__':
  app.run(main, flags_parser=entry.parse_flags)
