#!/usr/bin/env bash
# The prepared GPU run: the registry's GPU measurements of a study on one GPU within a 450-second budget,
# tidy results with provenance into OUTDIR.
#   scripts/gpu_measure.sh OUTDIR [--study orca] [--budget-s 450] [--smoke] [--only speed,kernels]
# --smoke runs tiny shapes on any machine (CPU included). See scripts/gpu_measure.py and data/gpu/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 1 ]; then
  echo "usage: scripts/gpu_measure.sh OUTDIR [--study NAME|PATH] [--budget-s S] [--smoke] [--only M1,M2]" >&2
  exit 2
fi
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec "$PY" scripts/gpu_measure.py "$@"
