"""Coordinate-wise order statistics along a leading axis, fast on XLA:CPU.

The kernels take one array `x` of shape [n, ...] (or `LazyRows`: rows formed
inside the kernel, never materialized) and reduce the leading axis. Small
selections are unrolled compare-exchange networks that XLA fuses into one loop
over the coordinates; large c falls back to `jnp.sort`; long inputs stream in
blocks of rows with `lax.scan`, so code size does not grow with n. Winsorized
and trimmed means come from summaries that merge exactly across row sets and
devices. NaN propagates (a NaN among a coordinate's values makes its result
NaN); +-inf are ordinary, ordered values.

One job per module; this package re-exports their public functions:
  rows.py      the inputs: arrays or `LazyRows`, one row at a time, sharded
               rows replicated, sums over the rows.
  networks.py  unrolled selection networks: `Extremes` summaries, `merge`,
               `winsorized_from` / `trimmed_from`, sorts, `median`.
  folds.py     streamed passes in blocks of rows: thresholds, clipped sums,
               strict middles, `extreme_rows`; `winsorized_mean` /
               `trimmed_mean` (network, passes or sort); group sums / means.
  packing.py   many small leaves as few inputs (`pack_leaves`, `unpacker`).
The size limits stay in the module that reads them (`folds.MAX_UNROLLED_ROWS`,
`folds.MAX_NETWORK_C`, `networks.MAX_NETWORK_SORT`, `packing.PACK_MAX_SIZE`):
set them there; this package has no copies.

Design notes (select networks, compile time versus step time, the NaN policy
of each kernel, sharded rows): docs/design/order_stats.md.
"""

from coherence_jax.aggregators.order_stats.folds import block_rows
from coherence_jax.aggregators.order_stats.folds import bounds_from_extremes
from coherence_jax.aggregators.order_stats.folds import clipped_sum
from coherence_jax.aggregators.order_stats.folds import clipped_sum_fold
from coherence_jax.aggregators.order_stats.folds import extreme_rows
from coherence_jax.aggregators.order_stats.folds import group_means
from coherence_jax.aggregators.order_stats.folds import group_sums
from coherence_jax.aggregators.order_stats.folds import strict_middle_fold
from coherence_jax.aggregators.order_stats.folds import strict_middle_init
from coherence_jax.aggregators.order_stats.folds import threshold_fold
from coherence_jax.aggregators.order_stats.folds import threshold_init
from coherence_jax.aggregators.order_stats.folds import thresholds
from coherence_jax.aggregators.order_stats.folds import thresholds_from
from coherence_jax.aggregators.order_stats.folds import trimmed_from_clipped
from coherence_jax.aggregators.order_stats.folds import trimmed_from_middle
from coherence_jax.aggregators.order_stats.folds import trimmed_mean
from coherence_jax.aggregators.order_stats.folds import vary_like
from coherence_jax.aggregators.order_stats.folds import winsorized_mean
from coherence_jax.aggregators.order_stats.networks import Extremes
from coherence_jax.aggregators.order_stats.networks import insert_rows
from coherence_jax.aggregators.order_stats.networks import insert_value
from coherence_jax.aggregators.order_stats.networks import median
from coherence_jax.aggregators.order_stats.networks import median3
from coherence_jax.aggregators.order_stats.networks import merge
from coherence_jax.aggregators.order_stats.networks import sort_rows
from coherence_jax.aggregators.order_stats.networks import summarize
from coherence_jax.aggregators.order_stats.networks import trimmed_from
from coherence_jax.aggregators.order_stats.networks import winsorized_from
from coherence_jax.aggregators.order_stats.packing import pack_leaves
from coherence_jax.aggregators.order_stats.packing import packed_shapes
from coherence_jax.aggregators.order_stats.packing import reduce_leaves
from coherence_jax.aggregators.order_stats.packing import unpacker
from coherence_jax.aggregators.order_stats.rows import LazyRows
from coherence_jax.aggregators.order_stats.rows import is_lazy
from coherence_jax.aggregators.order_stats.rows import materialize
from coherence_jax.aggregators.order_stats.rows import materialized_inputs
from coherence_jax.aggregators.order_stats.rows import mean
from coherence_jax.aggregators.order_stats.rows import replicate_rows
from coherence_jax.aggregators.order_stats.rows import sum_rows

__all__ = [
    'Extremes',
    'LazyRows',
    'block_rows',
    'bounds_from_extremes',
    'clipped_sum',
    'clipped_sum_fold',
    'extreme_rows',
    'group_means',
    'group_sums',
    'insert_rows',
    'insert_value',
    'is_lazy',
    'materialize',
    'materialized_inputs',
    'mean',
    'median',
    'median3',
    'merge',
    'pack_leaves',
    'packed_shapes',
    'reduce_leaves',
    'replicate_rows',
    'sort_rows',
    'strict_middle_fold',
    'strict_middle_init',
    'sum_rows',
    'summarize',
    'threshold_fold',
    'threshold_init',
    'thresholds',
    'thresholds_from',
    'trimmed_from',
    'trimmed_from_clipped',
    'trimmed_from_middle',
    'trimmed_mean',
    'unpacker',
    'vary_like',
    'winsorized_from',
    'winsorized_mean',
]
