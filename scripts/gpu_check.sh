#!/usr/bin/env bash
# The CUDA engine's device check (issue 5): one command, nothing to install.
# Runs from this source tree (PYTHONPATH, not an install) with the Python that
# has CuPy; prints the device, PASS/FAIL of the GPU tests, GEMM and fused-path
# throughput and the Schoenholz et al. phase-diagram wall time in < 5 minutes.
#   bash scripts/gpu_check.sh            # on the GPU machine
#   bash scripts/gpu_check.sh --host     # dry run of the script on a CPU (g++ build)
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export VXSIM_CACHE_DIR="${VXSIM_CACHE_DIR:-${TMPDIR:-/tmp}/vxsim-gpu-check-cache}"
PY="${PYTHON:-$(command -v python3 || command -v python)}"
exec timeout --signal=INT --kill-after=10 295 "$PY" -u scripts/gpu_check.py "$@"
