"""absl-flag experiments reproducing the Coherent Gradients papers.

Run from the checkout (this package is not installed):

  python -m experiments.real_vs_random.main --workdir=/tmp/rvr
  python -m experiments.noisy_labels.main --workdir=/tmp/noisy

Each experiment is a folder: main.py (flags), train.py
(`train_and_evaluate(config, workdir)`), report.py, configs/ (each file starts
with the command that runs it). Shared pieces live in experiments/common.
"""
