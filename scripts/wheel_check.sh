#!/usr/bin/env bash
# A normal install, as a user without this repository gets it: build the wheel, install it (not editable)
# into a fresh virtual environment, then, from a folder of their own, run inspect, run and report of a
# small study that names the Orca claims catalogue, and inspect the built-in study (its remedy catalogue).
# Everything the package reads at run time (studies, catalogues, report templates) must ship inside it.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
PYTHON=${PYTHON:-python3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
$PYTHON -m venv "$work/venv"
pip=("$work/venv/bin/pip" install --quiet -c "$repo/constraints.txt")
"${pip[@]}" torch  # first, pinned: the local CPU wheel where there is one (see the Makefile)
"$work/venv/bin/pip" wheel --quiet --no-deps -w "$work/dist" "$repo"
"${pip[@]}" "$work"/dist/orca_analysis-*.whl
mkdir "$work/elsewhere"
cd "$work/elsewhere"
sed -e 's/^measurements: .*/measurements: [params, design, flops]/' "$repo/tests/fixtures/tiny.yaml" >my-study.yaml
echo "claims: orca" >>my-study.yaml
cli="$work/venv/bin/orca-analysis"
"$cli" inspect --study orca --only params --device h100 >/dev/null  # the device catalogue ships too
"$cli" inspect --study my-study.yaml --only params,flops
"$cli" run my-study.yaml
"$cli" report my-study.yaml
test -s reports/tiny/report.html && test -s reports/tiny/report.md && test -s reports/tiny/claims.json
rm reports/tiny/report.md
"$cli" report tiny  # by name: the store knows the study file its last run read
test -s reports/tiny/report.md
grep -q "Claims of the design notes" reports/tiny/report.html
echo "wheel check: installed $(basename "$work"/dist/orca_analysis-*.whl), ran inspect, run and report from another folder"
