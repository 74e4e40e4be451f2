"""Pieces shared by the experiments, one job per module:

  loop              the resumable training loop (checkpoints, metrics, checks)
  checkpoints       orbax save / restore-the-newest-good-one
  files             atomic writes, JSON-lines metrics
  train_step        the jitted step: gradients -> Optax chain -> params
  aggregator_specs  'winsorized:4' and friends -> (gradient fn, optimizer)
  model, data       the MLP with its accuracy; datasets and batch order
  run_config        config.json of a workdir (changes are refused)
  validation        config checks that name the field
  schedule, plots   when to measure; the figures
"""
