"""Every test sees 8 simulated CPU devices; set before JAX initialises."""

import os

os.environ.setdefault('TFDS_DATA_DIR', '/nonexistent-tfds-never-download')

import jax  # pylint: disable=g-import-not-at-top

jax.config.update('jax_num_cpu_devices', 8)
jax.config.update('jax_platforms', 'cpu')
