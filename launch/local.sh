#!/usr/bin/env bash
# One host, every local device (CPU, one GPU node, or a single TPU VM host):
#
#   launch/local.sh [--dry_run] EXPERIMENT WORKDIR [FLAGS...]
#   launch/local.sh real_vs_random /tmp/rvr \
#       --config=experiments/real_vs_random/configs/tiny.py
#
# Runs `python -m experiments.EXPERIMENT.main --workdir=WORKDIR
# --config.mesh.data=-1 FLAGS...` from the repository root (the batch split
# over every device; a later --config.mesh.data in FLAGS wins). PYTHON picks
# the interpreter (default: .venv/bin/python if present, else python3).
# --dry_run prints the command instead of running it.
set -euo pipefail

dry_run=0
if [[ "${1:-}" == "--dry_run" ]]; then
  dry_run=1
  shift
fi
if [[ $# -lt 2 ]]; then
  echo "usage: launch/local.sh [--dry_run] EXPERIMENT WORKDIR [FLAGS...]" >&2
  echo "  EXPERIMENT: a folder of experiments/ (real_vs_random, noisy_labels)" >&2
  exit 2
fi
experiment="$1"
workdir="$2"
shift 2

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ ! -f "${repo}/experiments/${experiment}/main.py" ]]; then
  echo "launch/local.sh: no experiments/${experiment}/main.py; pass one of:" \
    $(cd "${repo}/experiments" && ls -d */ | tr -d / | grep -v common) >&2
  exit 2
fi
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x "${repo}/.venv/bin/python" ]]; then
    PYTHON="${repo}/.venv/bin/python"
  else
    PYTHON=python3
  fi
fi

cmd=("${PYTHON}" -m "experiments.${experiment}.main" "--workdir=${workdir}"
     "--config.mesh.data=-1" "$@")
if [[ ${dry_run} -eq 1 ]]; then
  printf '%q ' "${cmd[@]}"
  printf '\n'
  exit 0
fi
cd "${repo}"
exec "${cmd[@]}"
