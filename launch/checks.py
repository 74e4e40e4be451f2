"""Checks the launchers make before printing or running anything.

Each raises ValueError naming the flag and the fix, so a dry run fails on
what the real run would fail on (the launchers turn it into a usage error).
Imported by the launch scripts as `checks` (their folder is on sys.path when
run as `python launch/<script>.py`).

Example:
  >>> experiment('real_vs_random')
  >>> slurm_time('4:00:00')
  >>> tpu_accelerator_type('v4-7')
  Traceback (most recent call last):
  ...
  ValueError: --accelerator_type: got 'v4-7'; ...
"""

import os
import re
from typing import List, Sequence

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# sbatch --time: M, M:S, H:M:S, D-H, D-H:M, D-H:M:S (or a limit word).
_SLURM_TIME = re.compile(r'\d+(:\d{1,2}){0,2}|\d+-\d+(:\d{1,2}){0,2}'
                         r'|infinite|unlimited|UNLIMITED|INFINITE')
# Cloud TPU accelerator types: <generation>-<TensorCores or chips>.
_TPU_TYPE = re.compile(r'(v\d+[a-z]*)-(\d+)')
_EIGHTS = ('v2', 'v3', 'v4', 'v5p')   # counted in TensorCores: 8, 16, 32...
_CHIPS = ('v5litepod', 'v5e', 'v6e')  # counted in chips: 1, 4, 8, 16...


def experiments() -> List[str]:
  """The folders of experiments/ that have a main.py."""
  root = os.path.join(REPO, 'experiments')
  return sorted(n for n in os.listdir(root)
                if os.path.isfile(os.path.join(root, n, 'main.py')))


def experiment(name: str) -> None:
  """ValueError unless experiments/<name>/main.py exists."""
  if name not in experiments():
    raise ValueError(f'--experiment: got {name!r}, no experiments/{name}/'
                     f'main.py; pass one of {experiments()}.')


def config_files(extra: Sequence[str]) -> None:
  """Every `--config=FILE` among the experiment flags exists (relative to
  the repository, where the launchers run).

  >>> config_files(['--config=experiments/nope.py'])
  Traceback (most recent call last):
  ...
  ValueError: --config=experiments/nope.py: no such file ...
  """
  for i, arg in enumerate(extra):
    if arg.startswith('--config='):
      value = arg[len('--config='):]
    elif arg == '--config' and i + 1 < len(extra):
      value = extra[i + 1]
    else:
      continue
    path = value.split(':')[0]  # ml_collections: FILE[:argument]
    if not os.path.isfile(os.path.join(REPO, path)):
      raise ValueError(f'--config={value}: no such file {path!r} (relative '
                       f'to the repository {REPO}); pass an experiment '
                       'config, e.g. experiments/real_vs_random/configs/'
                       'tiny.py.')


def port(value: int, allow_zero: bool = False) -> None:
  """A TCP port in 1..65535 (0 too if `allow_zero`: pick a free one)."""
  low = 0 if allow_zero else 1
  if not low <= value <= 65535:
    raise ValueError(f'--port: got {value}; pass a TCP port in '
                     f'{low}..65535.')


def slurm_time(value: str) -> None:
  """sbatch's --time formats: 'M', 'M:S', 'H:M:S', 'D-H', 'D-H:M',
  'D-H:M:S'."""
  if not _SLURM_TIME.fullmatch(value):
    raise ValueError(f'--time: got {value!r}; pass an sbatch time limit: '
                     'minutes, H:M:S or D-H:M:S, e.g. 04:00:00 or 1-12:00:00.')


def tpu_accelerator_type(value: str) -> None:
  """A Cloud TPU type: v2/v3/v4/v5p-<8k TensorCores> or
  v5litepod/v6e-<1, 4 or 8k chips>."""
  match = _TPU_TYPE.fullmatch(value)
  count = int(match.group(2)) if match else 0
  generation = match.group(1) if match else ''
  ok = count >= 1 and (
      (generation in _EIGHTS and count % 8 == 0)
      or (generation in _CHIPS and (count in (1, 4) or count % 8 == 0))
      or generation not in _EIGHTS + _CHIPS)
  if not ok:
    raise ValueError(
        f'--accelerator_type: got {value!r}; pass a Cloud TPU type such as '
        'v4-8, v4-32 (v2/v3/v4/v5p count TensorCores in multiples of 8) or '
        'v5litepod-4, v6e-8 (chips: 1, 4 or a multiple of 8).')
