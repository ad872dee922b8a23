#!/usr/bin/env bash
# The one command for the lent GPU machine (no network, python3 with torch; see data/gpu/README.md):
#   bash scripts/device_run.sh [OUTDIR] [gpu_measure options]      device call: carry [".whl"]
# OUTDIR defaults to $OUT/orca. Installs the carried wheels (scripts/device_wheels.sh, run here first) into
# /tmp/site, prints one block of versions, runs scripts/gpu_measure.sh OUTDIR with python3, then fits OUTDIR
# to what the device returns (log.txt capped) and prints a summary table last.
# Options pass through: --smoke (tiny shapes, runs on a CPU), --budget-s S, --only M1,M2, --study NAME.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"  # the device's python3 holds torch; there is no .venv there
SITE="${ORCA_SITE:-/tmp/site}"

if [ $# -gt 0 ] && [[ "$1" != -* ]]; then
  OUTDIR="$1"
  shift
else
  OUTDIR="${OUT:?OUT is unset: give OUTDIR}/orca"
fi
SMOKE=()
for arg in "$@"; do [ "$arg" = --smoke ] && SMOKE=(--smoke); done

if ! compgen -G ".whl/*.whl" >/dev/null; then
  echo "device_run: no wheels in .whl/: run scripts/device_wheels.sh on the development machine" \
    "and name \".whl\" in the device call's carry" >&2
  exit 1
fi
PIP_ROOT_USER_ACTION=ignore "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
  --upgrade --target "$SITE" .whl/*.whl
export PYTHONPATH="$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export ORCA_GIT_COMMIT="${ORCA_GIT_COMMIT:-$(cat .whl/git_commit 2>/dev/null || echo unknown)}"
export ORCA_CACHE_DIR="${ORCA_CACHE_DIR:-/tmp/orca-cache}"  # the BPE corpus cache

mkdir -p "$OUTDIR"
{
  echo "== device_run $(date -u +%FT%TZ) -> $OUTDIR $*"
  nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version,utilization.gpu --format=csv,noheader \
    2>/dev/null || echo "nvidia-smi: not found"
  "$PY" scripts/device_run.py preflight "${SMOKE[@]}"
} 2>&1 | tee "$OUTDIR/device.txt"

echo "== scripts/gpu_measure.sh $OUTDIR $*"
rc=0
PYTHON="$PY" bash scripts/gpu_measure.sh "$OUTDIR" "$@" >"$OUTDIR/log.txt" 2>&1 || rc=$?
if [ "$rc" -ne 0 ] && [ -f "$OUTDIR/log.txt" ]; then
  echo "== the end of log.txt (exit $rc)"
  tail -n 40 "$OUTDIR/log.txt"
fi
echo "== summary"
"$PY" scripts/device_run.py finish "$OUTDIR"
exit "$rc"
