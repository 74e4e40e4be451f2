r"""When each example is learnt: pristine before corrupt; early stopping.

  python -m experiments.learning_order.main --workdir=/tmp/learning_order \
      --config=experiments/learning_order/configs/tiny.py

Writes <workdir>/noise_<p>/metrics.jsonl, summary.json, corruption.npz, records.npz and
<workdir>/report.md with its plots. A killed run resumes when started again.
"""

from absl import app

from experiments.learning_order import train
from experiments.common import entry

main = entry.define(__file__, train.train_and_evaluate)

if __name__ == '__main__':
  app.run(main, flags_parser=entry.parse_flags)
