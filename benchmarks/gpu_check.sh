#!/usr/bin/env bash
# The prepared GPU check (benchmarks/gpu_check.py): run from the repository root on a machine with
# one CUDA GPU; figures on stdout and, when $OUT is set, in $OUT/gpu_check.json.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH} timeout 540 "$PY" benchmarks/gpu_check.py "$@"
