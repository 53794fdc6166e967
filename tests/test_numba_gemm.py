"""gemm.matmul's row blocks multiplied on Numba's threads (vxsim.engines.numba_gemm).

Each block is one call of the BLAS function np.matmul calls, with np.matmul's
arguments, so the split must give the bits of one single-threaded np.matmul for
every operand layout the engines pass (A @ Z.T, G @ Z, row slices of the state
arrays, column slices of the stacked-gate weights) and both precisions; what it
does not take must still come out right, through gemm.matmul.
"""

import numpy as np
import pytest

from vxsim.engines import gemm, numba_gemm

pytestmark = pytest.mark.skipif(
    not numba_gemm.available(),
    reason="NumPy's BLAS is not an OpenBLAS with ILP64 cblas symbols: gemm.matmul is used",
)


def _layouts(rng, dtype, m, n):
    """(name, a, b) in the layouts numba_cpu and numba_rnn multiply."""
    a = rng.standard_normal((m + 7, n)).astype(dtype)  # states: rows of a larger array
    z = rng.standard_normal((n, n)).astype(dtype)
    gates = rng.standard_normal((n, 4 * n)).astype(dtype)  # stacked gate weights Z.T
    return [
        ("A @ Z.T", a[:m], z.T),
        ("G @ Z", a[:m], z),
        ("A @ ZT[:, :2N]", a[:m], gates[:, : 2 * n]),  # leading dimension 4N, 2N columns
        ("A @ ZT[:, 2N:]", a[:m], gates[:, 2 * n :]),  # the same, offset
        ("rows from 7", a[7:], z.T),  # an offset row block of the states
    ]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_split_is_bit_identical_to_one_gemm(dtype):
    rng = np.random.default_rng(5)
    taken = 0
    with gemm.one_blas_thread():
        for m, n in [(1026, 256), (684, 512), (342, 256), (100, 512), (65, 40)]:
            for name, a, b in _layouts(rng, dtype, m, n):
                want = np.matmul(a, b)
                for lanes in (2, 3, 4, 7):
                    out = np.full_like(want, np.nan)
                    numba_gemm.matmul(a, b, out, lanes)
                    np.testing.assert_array_equal(out, want, err_msg=f"{name} {m}x{n}, {lanes}")
                    cuts = gemm.cuts(a, b, lanes, split=numba_gemm._split_or_nan)
                    taken += len(cuts) > 2
    # Most of these really run split on Numba's threads (else the test shows nothing).
    assert taken >= 60


def test_the_split_blocks_are_the_blocks_np_matmul_computes():
    """Each block of the split alone, against np.matmul of that block: the kernel
    starts each block where its rows start, in a and in out."""
    rng = np.random.default_rng(6)
    a = rng.standard_normal((300, 96)).astype(np.float32)
    b = rng.standard_normal((96, 80)).astype(np.float32)
    cuts = (0, 48, 144, 300)
    with gemm.one_blas_thread():
        out = numba_gemm.split(a, b, np.full((300, 80), np.nan, np.float32), cuts)
        for lo, hi in zip(cuts[:-1], cuts[1:], strict=True):
            np.testing.assert_array_equal(out[lo:hi], np.matmul(a[lo:hi], b))


def test_what_it_does_not_take_goes_to_gemm_matmul():
    """Operands np.matmul would copy, another dtype: not taken, and still the right
    product. a @ a.T, which np.matmul computes with syrk, is not split at all."""
    rng = np.random.default_rng(7)
    a = rng.standard_normal((200, 64))
    square = a.astype(np.float32)[:96]
    cases = [
        (a.astype(np.float32)[:, ::2], rng.standard_normal((32, 32)).astype(np.float32), False),
        (a.astype(np.float16), a.T[:, :64].astype(np.float16), False),
        (square, square.T, True),
    ]
    with gemm.one_blas_thread():
        for x, y, taken in cases:
            out = np.empty((x.shape[0], y.shape[1]), x.dtype)
            assert (numba_gemm._call(x, y, out) is not None) == taken
            if taken:  # the syrk case
                assert gemm.cuts(x, y, 2) == (0, x.shape[0])
            numba_gemm.matmul(x, y, out, 2)
            np.testing.assert_array_equal(out, np.matmul(x, y))


def test_outside_one_blas_thread_it_is_np_matmul():
    """BLAS threads unlimited: one np.matmul (as gemm.matmul), never split."""
    rng = np.random.default_rng(8)
    a = rng.standard_normal((400, 128)).astype(np.float32)
    b = rng.standard_normal((128, 128)).astype(np.float32)
    out = np.empty((400, 128), np.float32)
    numba_gemm.matmul(a, b, out, 4)
    np.testing.assert_array_equal(out, np.matmul(a, b))
