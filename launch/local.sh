#!/usr/bin/env bash
# One host, every local device (CPU, one GPU node, or a single TPU VM host):
#
#   launch/local.sh [--dry_run] EXPERIMENT WORKDIR [FLAGS...]
#   launch/local.sh real_vs_random /tmp/rvr \
#       --config=experiments/real_vs_random/configs/tiny.py
#
# Runs `python -m experiments.EXPERIMENT.main --workdir=WORKDIR FLAGS...
# --config.mesh.data=-1` from the repository root (the batch split over every
# device; --config.mesh.data comes after FLAGS, so after their --config=FILE,
# and is left out when FLAGS set it). PYTHON picks the interpreter (default:
# .venv/bin/python if present, else python3). --dry_run (anywhere among the
# arguments) prints the command instead of running it.
set -euo pipefail

usage() {
  echo "usage: launch/local.sh [--dry_run] EXPERIMENT WORKDIR [FLAGS...]" >&2
  echo "  EXPERIMENT: a folder of experiments/ (real_vs_random, noisy_labels)" >&2
  exit 2
}

dry_run=0
args=()
for arg in "$@"; do
  if [[ "${arg}" == "--dry_run" ]]; then
    dry_run=1
  else
    args+=("${arg}")
  fi
done
if [[ ${#args[@]} -lt 2 ]]; then
  usage
fi
experiment="${args[0]}"
workdir="${args[1]}"
flags=("${args[@]:2}")

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ "${experiment}" == -* || ! -f "${repo}/experiments/${experiment}/main.py" ]]; then
  echo "launch/local.sh: EXPERIMENT: no experiments/${experiment}/main.py; pass one of:" \
    $(cd "${repo}/experiments" && ls -d */ | tr -d / | grep -v common) >&2
  exit 2
fi
if [[ "${workdir}" == -* ]]; then
  echo "launch/local.sh: WORKDIR: got '${workdir}', a flag; pass the output directory second." >&2
  usage
fi
if [[ "${workdir}" != /* ]]; then
  workdir="${PWD}/${workdir}"  # the run starts in the repository root
fi
mesh=("--config.mesh.data=-1")
for i in "${!flags[@]}"; do
  flag="${flags[$i]}"
  case "${flag}" in
    --config.mesh.data=*|--config.mesh.data) mesh=() ;;
    --config=*|--config)
      if [[ "${flag}" == --config=* ]]; then
        file="${flag#--config=}"
      else
        file="${flags[$((i + 1))]:-}"
      fi
      file="${file%%:*}"  # ml_collections: FILE[:argument]
      if [[ ! -f "${repo}/${file}" && ! -f "${file}" ]]; then
        echo "launch/local.sh: --config=${file}: no such file (relative to ${repo}); pass an experiment config, e.g. experiments/${experiment}/configs/tiny.py" >&2
        exit 2
      fi ;;
  esac
done
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x "${repo}/.venv/bin/python" ]]; then
    PYTHON="${repo}/.venv/bin/python"
  else
    PYTHON=python3
  fi
fi

cmd=("${PYTHON}" -m "experiments.${experiment}.main" "--workdir=${workdir}"
     ${flags[@]+"${flags[@]}"} ${mesh[@]+"${mesh[@]}"})
if [[ ${dry_run} -eq 1 ]]; then
  printf '%q ' "${cmd[@]}"
  printf '\n'
  exit 0
fi
cd "${repo}"
exec "${cmd[@]}"
