#!/usr/bin/env bash
# Wheels for the lent GPU machine, which has no network: the packages orca_analysis needs that its python3
# (3.12, torch 2.11) lacks, at the versions constraints.txt pins, into .whl/ (git-ignored; the device call
# carries it and scripts/device_run.sh installs it). Idempotent: a wheel already there is not fetched again,
# a wheel of any other version is removed. Also stamps .whl/git_commit (the device gets no .git), so run it
# right before the loan. See data/gpu/README.md.
#   scripts/device_wheels.sh [--list]     --list: print the pinned specs and stop (no download)
#   PYTHON=... picks the interpreter whose pip fetches (default python3)
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
DEST=.whl
# py3-none-any on PyPI. einops is there too, but torch-einops-utils needs >=0.8.1: bring the tested one.
WHEELS=(x-transformers einx frozendict torch-einops-utils loguru yacs termcolor einops)
SDISTS=(fvcore iopath)  # sdist only on PyPI: built into wheels here

pin() {  # NAME -> the NAME==VERSION line of constraints.txt
  grep -iE "^${1//-/[-_.]}==" constraints.txt \
    || { echo "device_wheels: $1 is not pinned in constraints.txt" >&2; return 1; }
}

prefix_of() {  # NAME==VERSION -> the wheel's file name prefix (PEP 427: '-' and '.' in a name become '_')
  local name="${1%%==*}"
  name="${name//[-.]/_}"
  echo "${name,,}-${1#*==}-"
}

specs=()
for name in "${WHEELS[@]}" "${SDISTS[@]}"; do
  specs+=("$(pin "$name")")
done
if [ "${1:-}" = --list ]; then
  printf '%s\n' "${specs[@]}"
  exit 0
fi

mkdir -p "$DEST"
for spec in "${specs[@]}"; do
  prefix="$(prefix_of "$spec")"
  compgen -G "$DEST/$prefix*.whl" >/dev/null && continue  # already there
  echo "device_wheels: fetching $spec"
  if [[ " ${SDISTS[*]} " == *" ${spec%%==*} "* ]]; then
    "$PY" -m pip wheel -q --no-deps -w "$DEST" "$spec"
  else
    "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
      -d "$DEST" "$spec"
  fi
  compgen -G "$DEST/$prefix*.whl" >/dev/null || { echo "device_wheels: no $prefix*.whl after fetching" >&2; exit 1; }
done

# Exactly one wheel per pinned package, all pure Python: two versions of one stop the install there.
for whl in "$DEST"/*.whl; do
  file="$(basename "$whl")"
  keep=no
  for spec in "${specs[@]}"; do
    [[ "${file,,}" == "$(prefix_of "$spec")"* ]] && keep=yes
  done
  if [ "$keep" = no ]; then
    echo "device_wheels: removing $file (not what constraints.txt pins)"
    rm -f "$whl"
  elif [[ "$file" != *-none-any.whl ]]; then
    echo "device_wheels: $file is not pure Python: it may not install on the device" >&2
    exit 1
  fi
done

git rev-parse --short HEAD >"$DEST/git_commit" 2>/dev/null || echo unknown >"$DEST/git_commit"
echo "device_wheels: ${#specs[@]} wheels ($(du -sh "$DEST" | cut -f1)) in $DEST, commit $(cat "$DEST/git_commit");" \
  "device call: bash scripts/device_run.sh, carry [\"$DEST\"]"
