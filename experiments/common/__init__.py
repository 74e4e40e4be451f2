"""Pieces shared by the experiments, one job per module:

  loop              the one resumable training loop, `fit` (checkpoints,
                    metrics, checks, per-example records, progress lines)
  checkpoints       orbax save / restore-the-newest-good-one
  files             atomic writes, JSON-lines metrics
  train_step        the jitted step: gradients -> Optax chain -> params;
                    the measured step (gradient + batch coherence, one pass)
  aggregator_specs  'winsorized:4', 'rm3_reference' and friends ->
                    (gradient fn, optimizer)
  data              datasets by name; the batch order
  nets              config.model -> loss_fn, params, per-example evaluate
                    (every model from coherence_jax.models.registry)
  supervised        the run core: setup (validate, config.json, data,
                    model, mesh), noise of every kind, fit, measurements
  measure           the one config.measure block and its schedule
  examples          a run's examples read by index, in memory or streamed
                    (tfds + grain, each process its slice); evaluation and
                    coherence over fixed index sets
  records           per-example records ("when learnt")
  progress          steps/s, ETA and latest metrics through absl logging
  metric_writers    MetricWriter: metrics.jsonl, TensorBoard event files
                    (tensorboardX), or one's own
  entry             the absl main of an experiment (--config, --workdir);
                    one-line errors for bad fields and file-system failures
  workdir_lock      one run per workdir (flock on <workdir>/.lock)
  run_config        config.json of a workdir (changes are refused; the
                    checkpoints carry the config too)
  validation        config checks that name the field
  plots             the figures
  reporting         report helpers: rows, layer picks, markdown tables
"""
