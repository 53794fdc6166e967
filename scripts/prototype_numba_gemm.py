"""Prototype: the GEMM path's row-split GEMM run inside a Numba parallel region. Not a test.

``gemm.matmul`` splits each GEMM's rows over Python threads (a
``concurrent.futures`` pool), each block one single-threaded BLAS call; on 16
cores that reaches about one core's throughput at width 256 (docs/performance.md,
fifth round). This calls the same single-threaded BLAS on the same verified
blocks from Numba's threads instead: ``cblas_sgemm`` of the OpenBLAS that NumPy
loaded (threadpoolctl names it; SciPy may load another), through a ctypes
pointer, with the arguments np.matmul passes for ``a @ z.T`` (row-major, B
transposed, ldb = N). It checks the bits against ``gemm.matmul`` and times both
in alternation. Measured 2026-12-04 on 2 cores: the same bits, 1-14 % faster
(widths 256-1024); the many-core case is what it is for, still to be measured.

    PYTHONPATH=. python scripts/prototype_numba_gemm.py
"""

import ctypes
import os
import sys
import time
from pathlib import Path

# As the engine runs (numba_cpu): OpenMP's workers wait passively between regions.
# Spinning (libgomp's default) would steal a core from the Python-thread split timed
# after each region, and flatter the Numba region.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numba  # noqa: E402
import numpy as np  # noqa: E402
import threadpoolctl  # noqa: E402
from numba import njit, prange  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vxsim.engines import gemm  # noqa: E402

ROW_MAJOR, NO_TRANS, TRANS = 101, 111, 112


def numpy_sgemm():
    """cblas_sgemm of NumPy's own OpenBLAS as a ctypes function, or None."""
    for lib in threadpoolctl.threadpool_info():
        if lib["internal_api"] != "openblas" or "numpy" not in lib["filepath"]:
            continue
        dll = ctypes.CDLL(lib["filepath"])
        for name, index in (
            ("scipy_cblas_sgemm64_", ctypes.c_int64),
            ("cblas_sgemm", ctypes.c_int),
        ):
            if hasattr(dll, name):
                enum, ptr, real = ctypes.c_int, ctypes.c_void_p, ctypes.c_float
                proto = ctypes.CFUNCTYPE(None, enum, enum, enum, index, index, index, real, ptr,
                                         index, ptr, index, real, ptr, index)  # fmt: skip
                return proto(ctypes.cast(getattr(dll, name), ctypes.c_void_p).value)
    return None


def make_split(sgemm):
    @njit(parallel=True)
    def split(a, z, out, cuts):
        """out[lo:hi] = a[lo:hi] @ z.T for each block [lo, hi) of ``cuts``, one per thread."""
        n, k = z.shape[0], a.shape[1]
        for i in prange(cuts.size - 1):
            lo, hi = cuts[i], cuts[i + 1]
            sgemm(ROW_MAJOR, NO_TRANS, TRANS, hi - lo, n, k, np.float32(1.0), a[lo:].ctypes.data,
                  k, z.ctypes.data, k, np.float32(0.0), out[lo:].ctypes.data, n)  # fmt: skip

    return split


def main():
    sgemm = numpy_sgemm()
    if sgemm is None:
        sys.exit("NumPy's BLAS is not an OpenBLAS with a known cblas_sgemm symbol")
    split = make_split(sgemm)
    lanes = numba.get_num_threads()
    rng = np.random.default_rng(0)
    print(f"# {time.strftime('%Y-%m-%d %H:%M')}; {lanes} threads; 1026 rows; ms, best of 30")
    for n in (256, 512, 1024):
        a = rng.standard_normal((1026, n)).astype(np.float32)
        z = rng.standard_normal((n, n)).astype(np.float32)
        want, got = np.empty((1026, n), np.float32), np.empty((1026, n), np.float32)
        with gemm.one_blas_thread():
            cuts = np.array(gemm.cuts(a, z.T, lanes), dtype=np.int64)
            split(a, z, got, cuts)
            best = {"python": np.inf, "numba": np.inf}
            for _ in range(30):
                t = time.perf_counter()
                gemm.matmul(a, z.T, want, lanes)
                best["python"] = min(best["python"], time.perf_counter() - t)
                t = time.perf_counter()
                split(a, z, got, cuts)
                best["numba"] = min(best["numba"], time.perf_counter() - t)
        same = np.array_equal(got, want)
        print(f"width {n:>4}: Python-thread split {best['python'] * 1e3:.3f}, Numba region "
              f"{best['numba'] * 1e3:.3f}; the same bits: {same}")  # fmt: skip


if __name__ == "__main__":
    main()
