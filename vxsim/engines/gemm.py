"""Every CPU GEMM single-threaded in BLAS, split by rows over threads of our own.

Why single-threaded. OpenBLAS's multithreaded GEMM cuts M and N at
thread-count-dependent places that are not multiples of its micro-kernel's
tile, and the rows of a partial tile are computed by another kernel with
another summation order: on 2 cores (OpenBLAS 0.3.31, Haswell kernels) a
684 x 1024 float32 GEMM with 2 threads differs from the 1-thread one in 3 %
of its elements. So the numbers would depend on OPENBLAS_NUM_THREADS,
OMP_NUM_THREADS (which Dask, Slurm and ``vxsim slurm --cpus-per-task`` set)
and the core count. Inside ``one_blas_thread()`` (every engine's unit runs
there: see ``deterministic``) every BLAS call runs on one thread, through
threadpoolctl, and ``matmul(a, b, out, lanes)`` splits the rows of ``a`` over
``lanes`` threads of a ``concurrent.futures`` pool (which also avoids
OpenBLAS's workers spinning on ``sched_yield`` on a busy machine: measured
22-25 ms against 8-9 ms for a 342 x 1024 GEMM with one other busy process).
The numba engines multiply the same verified blocks on Numba's threads instead
(``numba_gemm``), where NumPy's BLAS allows it. GEMMs under ``MIN_FLOPS`` are
not split: waking the threads would cost more than it saves.

Why the cuts are verified. A block of rows gives the whole GEMM's bits only
when it starts at a multiple of the micro-kernel's M tile (24 rows for
OpenBLAS's Haswell float32 kernel, 16 for others), which no BLAS reports. So
the first time a shape is multiplied, ``cuts`` tries row alignments of
increasing size on random operands of that exact shape and memory layout and
keeps the first whose blocks reproduce the single GEMM bit for bit; where none
does, that shape is not split. The tests check the split against one GEMM.

What stays machine-dependent: which micro-kernel BLAS runs (the CPU, or
OPENBLAS_CORETYPE, chooses it at start-up). ``signature()`` names it; files
record it and resume and merge refuse to mix two (``store.hdf5``).
"""

import contextlib
import functools
import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import threadpoolctl

# Row alignments tried, smallest first: multiples of every M tile of OpenBLAS's
# x86-64 and Arm kernels (4, 8, 12, 16, 24, 32) among them.
ALIGNMENTS = (16, 24, 48, 96, 192)
# Below this many rows per block, one BLAS call.
MIN_ROWS = 32
# Below this many flops (2 m n k), one BLAS call: waking the threads of a split costs
# ~60-70 us here (2 cores, 2026-12-04; OpenMP's passive threads and the Python pool
# alike), so a split only pays once the GEMM takes well over 0.1 ms on one thread
# (a 192 x 192 x 192 GEMM, 14 MFLOP, took 113 us on one thread and split).
MIN_FLOPS = 2**24

_lock = threading.Lock()
_users = 0  # nesting depth of one_blas_thread() over all threads
_limits = None  # threadpoolctl's limiter while _users > 0
_pool = None
_pool_size = 0
# threadpoolctl lets only the thread that first limited OpenBLAS's shared pool
# change it again, so one thread of our own sets and restores the limits for
# every user: overlapping users in other threads (a multithreaded Dask worker)
# then still restore the counts when the last one leaves.
_controller = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vxsim-blas-limits")


_inspected = (None, -1)  # (threadpoolctl.ThreadpoolController, len(sys.modules) then)


def _limit(count=1):
    """BLAS limited to ``count`` threads. Inspecting the loaded libraries (what
    ``threadpool_limits`` does every time) costs ~1-3 ms, a fixed cost of every unit
    that small widths feel; the inspection is reused until a module has been
    imported since (the only way a new BLAS gets loaded). Runs on ``_controller``."""
    global _inspected
    controller, modules = _inspected
    if controller is None or modules != len(sys.modules):
        controller = threadpoolctl.ThreadpoolController()
        _inspected = (controller, len(sys.modules))
    return controller.limit(limits=count, user_api="blas")


@contextlib.contextmanager
def one_blas_thread():
    """Every BLAS on one thread inside the block (process-wide: BLAS has no
    per-thread setting); the thread counts are restored when the last of any
    nested or concurrent users leaves."""
    global _users, _limits
    with _lock:
        if _users == 0:
            _limits = _controller.submit(_limit).result()
        _users += 1
    try:
        yield
    finally:
        with _lock:
            _users -= 1
            if _users == 0:
                _controller.submit(_limits.restore_original_limits).result()
                _limits = None


@contextlib.contextmanager
def blas_threads(count):
    """BLAS on ``count`` threads inside the block, set and restored on ``_controller``
    (a plain ``threadpool_limits`` in another thread has no effect once
    ``one_blas_thread`` has run): the multithreaded reference of the benchmarks."""
    limits = _controller.submit(_limit, count).result()
    try:
        yield
    finally:
        _controller.submit(limits.restore_original_limits).result()


def deterministic(run_unit):
    """Decorator for an engine's ``run_unit``: the whole unit with BLAS on one thread."""

    @functools.wraps(run_unit)
    def wrapped(*args, **kwargs):
        with one_blas_thread():
            return run_unit(*args, **kwargs)

    return wrapped


def single_threaded():
    """True inside one_blas_thread()."""
    return _users > 0


@functools.cache
def signature():
    """What decides the bits of a CPU GEMM here: NumPy's BLAS library, version and kernel.

    Only the BLAS that NumPy's wheel carries (in ``numpy.libs`` or ``numpy/.dylibs``)
    when one is found, so that whether another BLAS (SciPy's) happens to be loaded
    already does not change the answer; else every BLAS loaded.
    """
    blas = [lib for lib in threadpoolctl.threadpool_info() if lib.get("user_api") == "blas"]
    numpys = numpy_blas()
    keys = ("internal_api", "version", "architecture")
    names = sorted(
        {" ".join(str(lib.get(k) or "") for k in keys).strip() for lib in numpys or blas}
    )
    return "; ".join(names) or "numpy's own loops (no BLAS found)"


def numpy_blas():
    """threadpoolctl's records of the BLAS libraries in NumPy's own folders (its wheel's)."""
    blas = [lib for lib in threadpoolctl.threadpool_info() if lib.get("user_api") == "blas"]
    return [lib for lib in blas if _in_numpy(lib.get("filepath") or "")]


def _in_numpy(path):
    """Whether a shared library lies in NumPy's own folders (its wheel's BLAS)."""
    folder = os.path.basename(os.path.dirname(path))
    return folder in ("numpy.libs", ".dylibs") or folder.startswith("numpy")


def _workers(count):
    """The shared pool, with at least ``count`` threads."""
    global _pool, _pool_size
    with _lock:
        if _pool is None or _pool_size < count:
            _pool = ThreadPoolExecutor(max_workers=count, thread_name_prefix="vxsim-gemm")
            _pool_size = count
        return _pool


def row_blocks(rows, lanes, align):
    """Boundaries 0 = r_0 < r_1 < ... < r_k = rows of at most ``lanes`` blocks,
    the inner ones multiples of ``align``, none under MIN_ROWS rows (but one)."""
    lanes = max(1, min(lanes, rows // max(MIN_ROWS, align)))
    cuts = {0, rows}
    for i in range(1, lanes):
        cut = (rows * i // lanes + align // 2) // align * align
        if 0 < cut < rows:
            cuts.add(cut)
    return sorted(cuts)


def _split(a, b, out, cuts):
    """out[lo:hi] = a[lo:hi] @ b for each block, the first in this thread."""
    if len(cuts) <= 2:
        return np.matmul(a, b, out=out)
    pool = _workers(len(cuts) - 2)
    futures = [
        pool.submit(np.matmul, a[lo:hi], b, out=out[lo:hi])
        for lo, hi in zip(cuts[1:-1], cuts[2:], strict=True)
    ]
    np.matmul(a[: cuts[1]], b, out=out[: cuts[1]])
    for f in futures:
        f.result()
    return out


@functools.cache
def verified_cuts(key, lanes, split=_split):
    """The row cuts for operands like ``key`` (shapes, dtypes, orders) on ``lanes``
    threads whose blocks, each multiplied by ``split(a, b, out, cuts)``, reproduce one
    ``np.matmul`` bit for bit, or (0, rows): no split."""
    (rows, k), (_, n), dtype, a_order, b_order = key
    rng = np.random.default_rng(12345)
    a = np.asarray(rng.standard_normal((rows, k)), dtype=dtype, order=a_order)
    b = np.asarray(rng.standard_normal((k, n)), dtype=dtype, order=b_order)
    with one_blas_thread():
        want = np.matmul(a, b)
        for align in ALIGNMENTS:
            cuts = row_blocks(rows, lanes, align)
            if len(cuts) <= 2:
                break
            got = split(a, b, np.empty_like(want), cuts)
            if np.array_equal(got, want, equal_nan=True):
                return tuple(cuts)
    return (0, rows)


def _order(x):
    return "F" if x.flags.f_contiguous and not x.flags.c_contiguous else "C"


def key(a, b):
    """What the verification of ``a @ b``'s cuts depends on: shapes, dtype, orders."""
    return (a.shape, b.shape, np.dtype(a.dtype).str, _order(a), _order(b))


def cuts(a, b, lanes, split=_split):
    """Verified row cuts for ``a @ b`` on ``lanes`` threads (see the module docstring)."""
    (m, k), n = a.shape, b.shape[1]
    if lanes < 2 or m < 2 * MIN_ROWS or 2 * m * n * k < MIN_FLOPS:
        return (0, m)
    if np.may_share_memory(a, b):
        return (0, m)  # np.matmul computes a @ a.T with syrk, not by blocks
    return verified_cuts(key(a, b), lanes, split)


def matmul(a, b, out, lanes):
    """out = a @ b; inside one_blas_thread() the rows are split over ``lanes``
    threads at verified cuts (the bits of one single-threaded GEMM)."""
    if lanes < 2 or not single_threaded():
        return np.matmul(a, b, out=out)
    return _split(a, b, out, cuts(a, b, lanes))
