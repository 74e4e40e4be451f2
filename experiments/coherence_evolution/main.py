r"""Evolution of m-coherence at 0-100 % label noise (2008.01217).

  python -m experiments.coherence_evolution.main --workdir=/tmp/coh_evo \
      --config=experiments/coherence_evolution/configs/tiny.py

Writes <workdir>/noise_<p>/metrics.jsonl, summary.json, corruption.npz and
<workdir>/report.md with its plots. A killed run resumes when started again.
"""

from absl import app

from experiments.coherence_evolution import train
from experiments.common import entry

main = entry.define(__file__, train.train_and_evaluate)

if __name__ == '__main__':
  app.run(main, flags_parser=entry.parse_flags)
