"""GEMMs split by rows over threads of our own, with OpenBLAS on one thread.

OpenBLAS's thread server (the pthreads build in NumPy's wheels) makes the
calling thread wait for its workers by spinning on ``sched_yield``. Where
every core is busy with other processes, a yielding thread hands its core to
them for a whole time slice, so a GEMM is delayed by every slice its workers
miss. Measured on 2 cores (AMD EPYC Zen 4, OpenBLAS 0.3.31) with one other
process busy: (342, 1024) @ (1024, 1024) in float32 took 22-25 ms instead of
4 ms on the quiet machine, where PyTorch (MKL, OpenMP) took 8 ms; splitting
the rows into one block per core, each a single-threaded BLAS call on a
thread that waits on a futex (a ``concurrent.futures`` worker), took 8-9 ms
there and ~5 % more than OpenBLAS's own threads on the quiet machine.

``one_blas_thread()`` switches the process's OpenBLAS (found among the loaded
libraries, called through ctypes) to one thread while a block of work runs,
and ``matmul_rows(a, b, out, lanes)`` then splits the rows of ``a`` (and
``out``) into ``lanes`` blocks. Where no OpenBLAS is found (NumPy built on
MKL or Accelerate, non-Linux systems) both do nothing special: np.matmul.
Each block is computed exactly as the whole GEMM computes those rows (BLAS
splits neither the sum over k nor, for aligned blocks, the row tiles), so
results do not depend on the split; the tests check that bit for bit.
"""

import contextlib
import ctypes
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

# Block boundaries are multiples of this many rows: OpenBLAS's float32 and
# float64 micro-kernels on x86-64 tile M by 4, 8 or 16.
ROW_ALIGN = 16
# Below this many rows per block, one BLAS call.
MIN_ROWS = 32

_SYMBOLS = (
    ("scipy_openblas_set_num_threads64_", "scipy_openblas_get_num_threads64_"),
    ("scipy_openblas_set_num_threads", "scipy_openblas_get_num_threads"),
    ("openblas_set_num_threads64_", "openblas_get_num_threads64_"),
    ("openblas_set_num_threads", "openblas_get_num_threads"),
)

_lock = threading.Lock()
_controls = None  # [(set, get)] of every loaded OpenBLAS, found once
_users = 0  # nesting depth of one_blas_thread() over all threads
_saved = []  # thread counts to restore when the last user leaves
_pool = None
_pool_size = 0


def _loaded_libraries():
    """Paths of the shared libraries mapped into this process (Linux)."""
    try:
        with open(f"/proc/{os.getpid()}/maps") as fh:
            return sorted({line.split()[-1] for line in fh if ".so" in line and "/" in line})
    except OSError:
        return []


def openblas_controls():
    """(set_num_threads, get_num_threads) of each OpenBLAS loaded in this process."""
    global _controls
    with _lock:
        if _controls is None:
            found = []
            for path in _loaded_libraries():
                if "openblas" not in os.path.basename(path).lower():
                    continue
                try:
                    lib = ctypes.CDLL(path)
                except OSError:
                    continue
                for set_name, get_name in _SYMBOLS:
                    setter = getattr(lib, set_name, None)
                    getter = getattr(lib, get_name, None)
                    if setter is not None and getter is not None:
                        setter.argtypes, setter.restype = [ctypes.c_int], None
                        getter.argtypes, getter.restype = [], ctypes.c_int
                        found.append((setter, getter))
                        break
            _controls = found
        return _controls


@contextlib.contextmanager
def one_blas_thread():
    """OpenBLAS on one thread inside the block (process-wide: OpenBLAS has no
    per-thread setting), its thread counts restored when the last of any
    nested or concurrent users leaves."""
    global _users, _saved
    controls = openblas_controls()
    with _lock:
        if _users == 0:
            _saved = [get() for _, get in controls]
            for setter, _ in controls:
                setter(1)
        _users += 1
    try:
        yield bool(controls)
    finally:
        with _lock:
            _users -= 1
            if _users == 0:
                for (setter, _), count in zip(controls, _saved, strict=True):
                    setter(count)
                _saved = []


def splitting():
    """True while matmul_rows splits GEMMs (inside one_blas_thread, OpenBLAS found)."""
    return _users > 0 and bool(_controls)


def _workers(count):
    """The shared pool, with at least ``count`` threads."""
    global _pool, _pool_size
    with _lock:
        if _pool is None or _pool_size < count:
            _pool = ThreadPoolExecutor(max_workers=count, thread_name_prefix="vxsim-gemm")
            _pool_size = count
        return _pool


def row_blocks(rows, lanes):
    """Boundaries 0 = r_0 < r_1 < ... < r_k = rows of at most ``lanes`` blocks,
    the inner ones multiples of ROW_ALIGN, none under MIN_ROWS rows (but one)."""
    lanes = max(1, min(lanes, rows // MIN_ROWS))
    cuts = {0, rows}
    for i in range(1, lanes):
        cuts.add(min(rows, (rows * i // lanes + ROW_ALIGN // 2) // ROW_ALIGN * ROW_ALIGN))
    return sorted(cuts)


def matmul_rows(a, b, out, lanes):
    """out = a @ b, the rows split over ``lanes`` threads while splitting(), else np.matmul."""
    if lanes < 2 or not splitting():
        return np.matmul(a, b, out=out)
    cuts = row_blocks(a.shape[0], lanes)
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
