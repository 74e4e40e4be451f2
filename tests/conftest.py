"""Every test sees 8 simulated CPU devices; set before JAX initialises."""

import os

os.environ.setdefault('TFDS_DATA_DIR', '/nonexistent-tfds-never-download')
# Tests compile with most of XLA's optimizations off: compiling is most of a
# test's time and the values under test do not depend on the optimizations
# (every tolerance is derived from float32 rounding of the computation, not of
# a kernel). Subprocesses inherit it. JAX_DISABLE_MOST_OPTIMIZATIONS=0 runs the
# same tests on the optimized programs.
os.environ.setdefault('JAX_DISABLE_MOST_OPTIMIZATIONS', '1')

import jax  # pylint: disable=g-import-not-at-top

jax.config.update('jax_num_cpu_devices', 8)
jax.config.update('jax_platforms', 'cpu')
