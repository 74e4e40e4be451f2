r"""The torch methods of the side-by-side benchmark alone, timed interleaved.

  .venv/bin/python -m benchmarks.bench_torch [--model=cnn] [--batch=128] \
      [--reps=5]

Needs the `bench` extra (CPU torch 2.13.0, backpack-for-pytorch, opacus).
Prints the timings of every method in `torch_methods.TORCH_METHODS` (median,
min and max ms over --reps interleaved rounds) as JSON.
"""

import json

from absl import app
from absl import flags

from benchmarks import torch_methods

_MODEL = flags.DEFINE_enum('model', 'cnn', sorted(torch_methods.MODELS),
                           'Model twin.')
_BATCH = flags.DEFINE_integer('batch', 128, 'Batch size.', lower_bound=1)
_REPS = flags.DEFINE_integer('reps', 5, 'Timed rounds.', lower_bound=1)


def main(argv):
  del argv
  model, x, y = torch_methods.problem(_MODEL.value, _BATCH.value)
  fns = {n: torch_methods.make_case(n, model, x, y)
         for n in torch_methods.TORCH_METHODS}
  print(json.dumps(torch_methods.time_interleaved(fns, _REPS.value), indent=1))


if __name__ == '__main__':
  app.run(main)
