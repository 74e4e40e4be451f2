r"""The α-dependent factor of the stability bound vs the generalization gap.

  python -m experiments.stability_bound.main --workdir=/tmp/stability_bound \
      --config=experiments/stability_bound/configs/tiny.py

Writes <workdir>/noise_<p>/metrics.jsonl, summary.json, corruption.npz and
<workdir>/report.md with its plots. A killed run resumes when started again.
"""

from absl import app

from experiments.stability_bound import train
from experiments.common import entry

main = entry.define(__file__, train.train_and_evaluate)

if __name__ == '__main__':
  app.run(main, flags_parser=entry.parse_flags)
