"""GEMMs on one BLAS thread, split by rows over our own threads (vxsim.engines.gemm).

The split must not change a single bit (the engines' results may not depend
on the number of cores or on thread variables), and switching BLAS to one
thread must be undone however the switches nest or overlap.
"""

import threading

import numpy as np
import pytest
import threadpoolctl

from vxsim.engines import gemm

SHAPES = [(684, 1024), (342, 1024), (1026, 512), (100, 256), (77, 64), (31, 40)]


def blas_threads():
    return [
        lib["num_threads"] for lib in threadpoolctl.threadpool_info() if lib["user_api"] == "blas"
    ]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_split_is_bit_identical_to_one_gemm(dtype):
    rng = np.random.default_rng(3)
    split = 0
    with gemm.one_blas_thread():
        assert gemm.single_threaded()
        for m, n in SHAPES:
            a = rng.standard_normal((m, n)).astype(dtype)
            z = rng.standard_normal((n, n)).astype(dtype)
            for b in (z, z.T):  # the engine's two forms: G @ Z and A @ Z.T
                want = np.matmul(a, b)
                for lanes in (2, 3, 4):
                    out = np.full_like(want, np.nan)
                    gemm.matmul(a, b, out, lanes)
                    np.testing.assert_array_equal(out, want, err_msg=f"{m}x{n}, {lanes} lanes")
                    split += len(gemm.cuts(a, b, lanes)) > 2
    assert not gemm.single_threaded()
    # The large shapes really are split (else the test above shows nothing).
    assert split >= 12


def test_cuts_are_verified_on_the_shape():
    """A row cut that is not a multiple of the micro-kernel's tile is never used:
    whatever the alignment found, every block of the verified cuts gives the
    bits of the whole single-threaded GEMM, also for odd row counts."""
    rng = np.random.default_rng(4)
    with gemm.one_blas_thread():
        for m in (65, 250, 683):
            a = rng.standard_normal((m, 384)).astype(np.float32)
            b = rng.standard_normal((384, 384)).astype(np.float32)
            want = a @ b
            cuts = gemm.cuts(a, b, 3)
            assert cuts[0] == 0 and cuts[-1] == m and len(cuts) > 2  # split (over MIN_FLOPS)
            for lo, hi in zip(cuts[:-1], cuts[1:], strict=True):
                np.testing.assert_array_equal(a[lo:hi] @ b, want[lo:hi])


def test_small_gemms_are_not_split():
    """Under MIN_FLOPS (2 m n k) one BLAS call: waking threads would cost more."""
    a = np.ones((1000, 64), np.float32)
    b = np.ones((64, 64), np.float32)
    assert 2 * 1000 * 64 * 64 < gemm.MIN_FLOPS
    assert gemm.cuts(a, b, 4) == (0, 1000)
    big = np.ones((1000, 256), np.float32)
    assert len(gemm.cuts(big, np.ones((256, 256), np.float32), 4)) > 2


def test_row_blocks():
    for rows in (1, 31, 64, 100, 342, 684, 1026, 5000):
        for lanes in (1, 2, 3, 8):
            for align in gemm.ALIGNMENTS:
                cuts = gemm.row_blocks(rows, lanes, align)
                sizes = np.diff(cuts)
                assert cuts[0] == 0 and cuts[-1] == rows and np.all(sizes > 0)
                assert len(sizes) <= lanes
                assert all(c % align == 0 for c in cuts[1:-1])
                if len(sizes) > 1:
                    assert sizes.max() - sizes.min() <= 2 * align
    assert len(gemm.row_blocks(684, 2, 24)) == 3  # the benchmark's GEMM: two blocks


def test_one_blas_thread_nests_overlaps_and_restores():
    before = blas_threads()
    if not before:
        pytest.skip("no BLAS that threadpoolctl controls is loaded: nothing to switch")
    inside = threading.Event()
    leave = threading.Event()

    def other_user():
        with gemm.one_blas_thread():
            inside.set()
            leave.wait(10)

    with gemm.one_blas_thread():
        assert blas_threads() == [1] * len(before)
        worker = threading.Thread(target=other_user)
        worker.start()
        assert inside.wait(10)
        with gemm.one_blas_thread():  # nested in the same thread
            assert gemm.single_threaded()
    # this thread left; the other user is still inside: still one thread
    assert blas_threads() == [1] * len(before)
    leave.set()
    worker.join(10)
    assert blas_threads() == before
    assert not gemm.single_threaded()


def test_engines_run_units_on_one_blas_thread(monkeypatch):
    """Every engine's run_unit holds BLAS on one thread (the models' own ``@`` too)."""
    from vxsim.engines import cuda_gpu, numba_cpu, numpy_ref

    for module in (numpy_ref, numba_cpu, cuda_gpu):
        assert module.run_unit.__wrapped__  # wrapped by gemm.deterministic
    seen = []
    monkeypatch.setattr(
        numpy_ref.generic, "run_unit", lambda *a, **k: seen.append(blas_threads()) or {}
    )
    numpy_ref.run_unit(None, 8, 0)
    assert seen and all(t == 1 for t in seen[0])


def test_the_signature_does_not_depend_on_what_else_is_loaded():
    """numerics names NumPy's BLAS only: a process that loaded SciPy's BLAS first (a
    resume, a Dask worker) must record the same as one that did not."""
    import subprocess
    import sys

    code = "{}from vxsim.engines import gemm; print(gemm.signature())"
    seen = {
        subprocess.run(
            [sys.executable, "-c", code.format(first)], capture_output=True, text=True, check=True
        ).stdout
        for first in ("", "import scipy.linalg; ", "import scipy.special, scipy.optimize; ")
    }
    assert len(seen) == 1 and "no BLAS" not in seen.pop()


def test_blas_threads_sets_and_restores_the_count_after_one_blas_thread():
    """The benchmarks' multithreaded reference: after one_blas_thread() has run (its
    limits are set on another thread), blas_threads(n) still sets n and restores."""
    with gemm.one_blas_thread():
        pass
    before = blas_threads()
    with gemm.blas_threads(1):
        assert blas_threads() == [1] * len(before)
    assert blas_threads() == before
