"""GEMMs split by rows over our own threads (vxsim.engines.gemm).

The split must not change a single bit (the numba engine's results may not
depend on the number of cores), and switching OpenBLAS to one thread must be
undone however the switches nest or overlap.
"""

import threading

import numpy as np
import pytest

from vxsim.engines import gemm

SHAPES = [(684, 1024), (342, 1024), (1026, 512), (100, 256), (77, 64), (31, 40)]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_split_is_bit_identical_to_one_gemm(dtype):
    rng = np.random.default_rng(3)
    with gemm.one_blas_thread() as found:
        assert gemm.splitting() == found
        for m, n in SHAPES:
            a = rng.standard_normal((m, n)).astype(dtype)
            z = rng.standard_normal((n, n)).astype(dtype)
            for b in (z, z.T):  # the engine's two forms: G @ Z and A @ Z.T
                want = np.matmul(a, b)
                for lanes in (2, 3, 4):
                    out = np.full_like(want, np.nan)
                    gemm.matmul_rows(a, b, out, lanes)
                    np.testing.assert_array_equal(out, want, err_msg=f"{m}x{n}, {lanes} lanes")
    assert not gemm.splitting()


def test_row_blocks():
    for rows in (1, 31, 64, 100, 342, 684, 1026, 5000):
        for lanes in (1, 2, 3, 8):
            cuts = gemm.row_blocks(rows, lanes)
            sizes = np.diff(cuts)
            assert cuts[0] == 0 and cuts[-1] == rows and np.all(sizes > 0)
            assert len(sizes) <= lanes
            assert all(c % gemm.ROW_ALIGN == 0 for c in cuts[1:-1])
            if len(sizes) > 1:
                assert sizes.min() >= gemm.MIN_ROWS - gemm.ROW_ALIGN
                assert sizes.max() - sizes.min() <= 2 * gemm.ROW_ALIGN
    assert len(gemm.row_blocks(684, 2)) == 3  # the benchmark's GEMM: two blocks


def test_one_blas_thread_nests_overlaps_and_restores():
    controls = gemm.openblas_controls()
    if not controls:
        pytest.skip("no OpenBLAS loaded in this process (NumPy on another BLAS): nothing to switch")
    before = [get() for _, get in controls]
    inside = threading.Event()
    leave = threading.Event()

    def other_user():
        with gemm.one_blas_thread():
            inside.set()
            leave.wait(10)

    with gemm.one_blas_thread():
        assert [get() for _, get in controls] == [1] * len(controls)
        worker = threading.Thread(target=other_user)
        worker.start()
        assert inside.wait(10)
        with gemm.one_blas_thread():  # nested in the same thread
            assert gemm.splitting()
    # this thread left; the other user is still inside: still one thread
    assert [get() for _, get in controls] == [1] * len(controls)
    leave.set()
    worker.join(10)
    assert [get() for _, get in controls] == before
    assert not gemm.splitting()
