#!/usr/bin/env bash
# The GPU check on a lent machine whose image lacks pydantic and blake3 and reaches no package index: install the
# wheels gathered beforehand (benchmarks/gather_gpu_wheels.py -> build/gpu_wheels, carried with the working tree)
# into a temporary target, put it first on PYTHONPATH, run benchmarks/gpu_check.py (JSON to $OUT/gpu_check.json).
#
#     bash benchmarks/run_gpu_check.sh [gpu_check.py arguments]
#
# Settable: WHEELS (default build/gpu_wheels), PYTHON (default python3: installs the wheels), CHECK_PYTHON (default
# $PYTHON: runs the check; the test runs it as `python -S -s`, the image's packages on PYTHONPATH only), TIMEOUT_S
# (default 290; the check's own budget stops starting measurements at 270 s). Exit status: the check's, 124 on
# timeout.
set -euo pipefail
cd "$(dirname "$0")/.."
WHEELS=${WHEELS:-build/gpu_wheels}
PYTHON=${PYTHON:-python3}
if ! ls "$WHEELS"/*.whl >/dev/null 2>&1; then
  echo "run_gpu_check: no wheels in $WHEELS (run: python benchmarks/gather_gpu_wheels.py, then carry $WHEELS)" >&2
  exit 2
fi
TARGET=$(mktemp -d /tmp/gpu-check-deps.XXXXXX)
trap 'rm -rf "$TARGET"' EXIT
if $PYTHON -m pip --version >/dev/null 2>&1; then
  $PYTHON -m pip install --quiet --no-index --no-deps --disable-pip-version-check --target "$TARGET" "$WHEELS"/*.whl
else  # no pip in the image: a wheel is a zip of what goes into site-packages
  for w in "$WHEELS"/*.whl; do $PYTHON -m zipfile -e "$w" "$TARGET"; done
fi
export PYTHONPATH="$TARGET${PYTHONPATH:+:$PYTHONPATH}"
status=0
timeout "${TIMEOUT_S:-290}" ${CHECK_PYTHON:-$PYTHON} benchmarks/gpu_check.py "$@" || status=$?
exit $status
