"""Timing and memory helpers shared by the benchmark scripts.

Time: median and spread of repeated, blocked calls after a warm-up (compile).
Memory: XLA's compiled memory analysis (temp + output bytes), and the peak RSS
of a fresh process that runs one case (`peak_rss_of`). Fresh processes run a
benchmark module as `python -m benchmarks.<name>` from the repository root
(`run_module`), as the scripts themselves are run.
"""

import json
import os
import random
import resource
import statistics
import subprocess
import sys
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

# jax is imported where it is used, so that torch-only processes (their peak
# RSS is measured) do not load it.

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def time_interleaved(fns: Dict[str, Callable[[], Any]], reps: int = 10,
                     warmup: int = 2, sync: Callable[[Any], Any] = None
                     ) -> Dict[str, Dict[str, float]]:
  """Times several functions round-robin so that load changes hit all alike.

  Each round runs them in a fresh seeded shuffle, so that no function always
  follows the same one (a method that streams GiBs evicts the caches of the
  next). `sync(result)` waits for the result (default
  `jax.block_until_ready`; pass `lambda r: r` for functions that synchronise
  themselves, e.g. torch ones).
  """
  if sync is None:
    import jax  # pylint: disable=g-import-not-at-top
    sync = jax.block_until_ready
  for fn in fns.values():
    for _ in range(warmup):
      sync(fn())
  times: Dict[str, List[float]] = {name: [] for name in fns}
  order, shuffle = list(fns), random.Random(0).shuffle
  for _ in range(reps):
    shuffle(order)
    for name in order:
      fn = fns[name]
      start = time.perf_counter()
      sync(fn())
      times[name].append((time.perf_counter() - start) * 1e3)
  return {name: {'median_ms': statistics.median(t), 'min_ms': min(t),
                 'max_ms': max(t)} for name, t in times.items()}


def alpha_against_plain(loss_fn, params, batch, reps: int):
  """α by method='auto' and 'vmap' against the plain gradient of the mean
  loss, timed round-robin in this process.

  Returns:
    `(times, compiled, m_coherence)`: {'plain' / 'auto' / 'vmap': the
    `time_interleaved` entry}, {same: `compiled_bytes`}, {'auto' / 'vmap':
    m-coherence}.
  """
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from coherence_jax import coherence  # pylint: disable=g-import-not-at-top
  fns = {'plain': jax.jit(jax.grad(lambda p, b: jnp.mean(loss_fn(p, b))))}
  for method in ('auto', 'vmap'):
    fns[method] = jax.jit(lambda p, b, m=method: coherence.coherence_stats(
        loss_fn, p, b, method=m))
  times = time_interleaved(
      {k: (lambda f=f: f(params, batch)) for k, f in fns.items()},
      reps=reps, warmup=1)
  compiled = {k: compiled_bytes(f, params, batch) for k, f in fns.items()}
  coherence_of = {k: float(fns[k](params, batch).m_coherence())
                  for k in ('auto', 'vmap')}
  return times, compiled, coherence_of


def compiled_bytes(jitted: Callable, *args, **kwargs) -> int:
  """Temp + output bytes XLA allocates for one call (arguments excluded)."""
  analysis = jitted.lower(*args, **kwargs).compile().memory_analysis()
  if analysis is None:
    return -1
  return int(analysis.temp_size_in_bytes + analysis.output_size_in_bytes)


def max_rss_mib() -> float:
  """Peak RSS of this process in MiB.

  /proc/self/status VmHWM is per address space, so it restarts at exec; the
  getrusage maximum is inherited across fork+exec from a large parent.
  """
  try:
    with open('/proc/self/status') as f:
      for line in f:
        if line.startswith('VmHWM:'):
          return int(line.split()[1]) / 1024.0
  except OSError:
    pass
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_module(module: str, args: Sequence[str], *, check: bool = True,
               env: Optional[Mapping[str, str]] = None
               ) -> subprocess.CompletedProcess:
  """`python -m module args...` in a fresh process, from the repository root.

  Example:
    >>> run_module('benchmarks.bench_coherence', ['--case=idle:8']).stdout
  """
  return subprocess.run([sys.executable, '-m', module, *args], check=check,
                        capture_output=True, text=True, cwd=REPO_ROOT,
                        env=None if env is None else dict(env))


def last_json_line(stdout: str) -> Dict[str, Any]:
  """The JSON object a child process printed last."""
  return json.loads(stdout.strip().splitlines()[-1])


def peak_rss_of(module: str, args: Sequence[str]) -> float:
  """Peak RSS (MiB) of `python -m module args...`, which prints a JSON line
  with 'peak_rss_mib' last."""
  return last_json_line(run_module(module, args).stdout)['peak_rss_mib']


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
  def cell(value):
    return f'{value:.3g}' if isinstance(value, float) else str(value)
  lines = ['| ' + ' | '.join(header) + ' |',
           '|' + '---|' * len(header)]
  lines += ['| ' + ' | '.join(cell(v) for v in row) + ' |' for row in rows]
  return '\n'.join(lines)
