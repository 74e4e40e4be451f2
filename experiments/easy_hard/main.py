r"""Easy vs hard examples: train easy / test easy vs train hard / test hard.

  python -m experiments.easy_hard.main --workdir=/tmp/easy_hard \
      --config=experiments/easy_hard/configs/tiny.py

Writes <workdir>/{split,train_easy,train_hard,train_random}/metrics.jsonl, summary.json, records.npz and
<workdir>/report.md with its plots. A killed run resumes when started again.
"""

from absl import app

from experiments.easy_hard import train
from experiments.common import entry

main = entry.define(__file__, train.train_and_evaluate)

if __name__ == '__main__':
  app.run(main, flags_parser=entry.parse_flags)
