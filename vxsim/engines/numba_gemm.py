"""``gemm.matmul``'s row blocks, multiplied on Numba's threads instead of Python's.

``gemm.matmul`` splits a GEMM's rows at verified cuts and multiplies each block
with a single-threaded BLAS call on a thread of a ``concurrent.futures`` pool.
Each block is a Python call that takes the GIL; on 16 cores at width 256
(blocks of ~64 rows, ~0.1 ms each) that split reached about one core's
throughput (docs/performance.md, fifth round). Here one Numba parallel region
makes the same calls, one block per thread, with no Python in between:

    out[r_i : r_{i+1}] = a[r_i : r_{i+1}] @ b      for each block i, on thread i,

each block one call of ``cblas_?gemm`` of the OpenBLAS that NumPy carries, with
the arguments ``np.matmul`` passes for it (row-major; an operand whose rows are
contiguous goes as NoTrans with its row stride as leading dimension, one whose
columns are as Trans), so each block has the bits ``np.matmul`` gives it and
the whole has the bits of one single-threaded GEMM (``gemm``'s module docstring).

The function is reached by its address: ``llvmlite`` registers it under a
symbol of our own and the kernel declares that symbol an external function, so
the compiled kernel is cached like the others and linked to this process's
BLAS. Only NumPy's ILP64 OpenBLAS symbols (``scipy_cblas_?gemm64_``,
``cblas_?gemm64_``: 64-bit integers by name) are used, and the first time a
shape and layout are seen the split is verified against one ``np.matmul``, as
``gemm`` verifies its cuts. Anything else (another BLAS, another dtype, an
operand that ``np.matmul`` would copy) goes to ``gemm.matmul``.
"""

import ctypes
import functools
from typing import NamedTuple

import numpy as np
from llvmlite import binding
from numba import njit, prange, types

from . import gemm
from .numba_types import OPT

ROW_MAJOR, NO_TRANS, TRANS = 101, 111, 112  # the CBLAS enums (cblas.h)
# NumPy's names for cblas_?gemm in its wheels' OpenBLAS, newest first, and ours.
_NAMES = ("scipy_cblas_{}gemm64_", "cblas_{}gemm64_")
_OURS = "vxsim_cblas_{}gemm64"


def _external(letter, real):
    """cblas_?gemm(order, transa, transb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
    with 64-bit integers, declared under our symbol name."""
    i, p, e = types.int64, types.voidptr, types.intc
    sig = types.void(e, e, e, i, i, i, real, p, i, p, i, real, p, i)
    return types.ExternalFunction(_OURS.format(letter), sig)


_sgemm = _external("s", types.float32)
_dgemm = _external("d", types.float64)


class Gemm(NamedTuple):
    """One row-split GEMM ``out = a @ b`` as the kernel takes it: addresses, the CBLAS
    transposes and leading dimensions, and the bytes between two rows of ``a`` and
    of ``out`` (where block i starts)."""

    a: int
    b: int
    out: int
    trans_a: int
    trans_b: int
    n: int
    k: int
    lda: int
    ldb: int
    ldc: int
    a_row: int
    out_row: int


@njit(inline="always", **OPT)
def _block(g, cuts, i):
    """Rows, and the addresses of a and out, of block i."""
    lo, hi = cuts[i], cuts[i + 1]
    return hi - lo, g.a + lo * g.a_row, g.out + lo * g.out_row


@njit(parallel=True, **OPT)
def _split_f32(g, cuts):
    """out[r_i:r_{i+1}] = a[r_i:r_{i+1}] @ b, one block per thread (float32)."""
    for i in prange(cuts.size - 1):
        m, a, out = _block(g, cuts, i)
        _sgemm(ROW_MAJOR, g.trans_a, g.trans_b, m, g.n, g.k, np.float32(1.0), a, g.lda,
               g.b, g.ldb, np.float32(0.0), out, g.ldc)  # fmt: skip


@njit(parallel=True, **OPT)
def _split_f64(g, cuts):
    """out[r_i:r_{i+1}] = a[r_i:r_{i+1}] @ b, one block per thread (float64)."""
    for i in prange(cuts.size - 1):
        m, a, out = _block(g, cuts, i)
        _dgemm(ROW_MAJOR, g.trans_a, g.trans_b, m, g.n, g.k, 1.0, a, g.lda,
               g.b, g.ldb, 0.0, out, g.ldc)  # fmt: skip


_KERNELS = {np.dtype(np.float32): ("s", _split_f32), np.dtype(np.float64): ("d", _split_f64)}


@functools.cache
def available():
    """The dtypes whose GEMM this module can call: those of NumPy's ILP64 OpenBLAS
    (their symbols registered with llvmlite under our names), else none."""
    found = set()
    for lib in gemm.numpy_blas():
        if lib.get("internal_api") != "openblas":
            continue
        dll = ctypes.CDLL(lib["filepath"])
        for dtype, (letter, _) in _KERNELS.items():
            for name in _NAMES:
                fn = getattr(dll, name.format(letter), None)
                if fn is not None and dtype not in found:
                    binding.add_symbol(_OURS.format(letter), ctypes.cast(fn, ctypes.c_void_p).value)
                    found.add(dtype)
    return frozenset(found)


def _operand(x):
    """(CBLAS transpose, leading dimension) as ``np.matmul`` passes matrix ``x`` to BLAS,
    or None where it would not pass it as it is (numpy's ``is_blasable2d``)."""
    item = x.itemsize
    rows, cols = x.shape
    s0, s1 = x.strides
    if s1 == item and s0 % item == 0 and s0 // item >= cols:
        return NO_TRANS, s0 // item
    if s0 == item and s1 % item == 0 and s1 // item >= rows:
        return TRANS, s1 // item
    return None


def _call(a, b, out):
    """The Gemm record of ``out = a @ b``, or None where this module does not take it."""
    if not (a.dtype == b.dtype == out.dtype and a.dtype in available()):
        return None
    (m, k), n = a.shape, b.shape[1]
    ops = [_operand(x) for x in (a, b, out)]
    if None in ops or ops[2][0] != NO_TRANS or min(m, n, k) < 2:
        return None  # np.matmul would copy, or call gemv or dot
    (ta, lda), (tb, ldb), (_, ldc) = ops
    a_row = a.strides[0]
    return Gemm(a.ctypes.data, b.ctypes.data, out.ctypes.data, ta, tb, n, k, lda, ldb, ldc,
                a_row, out.strides[0])  # fmt: skip


def split(a, b, out, cuts, g=None):
    """out[lo:hi] = a[lo:hi] @ b for each block of ``cuts``, on Numba's threads (one
    region; ``gemm._split``'s blocks), or None where this module does not take it.
    ``g``: the operands' Gemm record, where the caller has it already."""
    g = _call(a, b, out) if g is None else g
    if g is None:
        return None
    _KERNELS[a.dtype][1](g, np.asarray(cuts, dtype=np.int64))
    return out


def _split_or_nan(a, b, out, cuts):
    """``split``, for the verification: NaN where it does not take the operands."""
    if split(a, b, out, cuts) is None:
        out[:] = np.nan
    return out


def matmul(a, b, out, lanes):
    """out = a @ b; inside ``gemm.one_blas_thread()`` the rows are split over ``lanes``
    of Numba's threads at cuts verified for this split (the bits of one
    single-threaded GEMM); where this split is not taken or not verified, as
    ``gemm.matmul`` does."""
    if lanes < 2 or not gemm.single_threaded():
        return np.matmul(a, b, out=out)
    g = _call(a, b, out)
    if g is not None:
        cuts = gemm.cuts(a, b, lanes, split=_split_or_nan)
        if len(cuts) > 2:
            return split(a, b, out, cuts, g)
    return gemm.matmul(a, b, out, lanes)  # not taken, not verified, or too few rows
