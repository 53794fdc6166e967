#!/usr/bin/env bash
# The CUDA engine's device check (issues 5 and 17): one command, nothing to install.
# Runs from this source tree (PYTHONPATH, not an install) with the Python that
# has CuPy; prints the versions, the device, PASS/FAIL of the GPU tests, GEMM and
# fused-path throughput, the paths' crossover, the other architectures and the
# Schoenholz et al. phase-diagram wall time, each section timed, within the limit.
#   bash scripts/gpu_check.sh                     # on the GPU machine
#   bash scripts/gpu_check.sh --host              # dry run of the script on a CPU (g++ build)
#   bash scripts/gpu_check.sh --only tests,gemm   # some sections
# Caches: CuPy compiles each of its elementwise and reduction kernels on first use
# (a few hundred for the generic path), so its cache is kept in a folder named
# here, with vxsim's; set VXSIM_GPU_CHECK_CACHE to one carried from an earlier
# machine to skip those compiles. VXSIM_GPU_CHECK_LIMIT: seconds (default 295).
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
CACHE="${VXSIM_GPU_CHECK_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vxsim-gpu-check}"
export CUPY_CACHE_DIR="${CUPY_CACHE_DIR:-$CACHE/cupy}"
export VXSIM_CACHE_DIR="${VXSIM_CACHE_DIR:-$CACHE/vxsim}"
mkdir -p "$CUPY_CACHE_DIR" "$VXSIM_CACHE_DIR"
LIMIT="${VXSIM_GPU_CHECK_LIMIT:-295}"
PY="${PYTHON:-$(command -v python3 || command -v python)}"
exec timeout --signal=INT --kill-after=10 "$LIMIT" "$PY" -u scripts/gpu_check.py \
    --budget "$((LIMIT - 10))" "$@"
