"""The log-scaled one-sided Jacobi SVD of ``graded_svd``, as a Numba kernel for the CPU engines.

The same rotation (``graded_svd`` module docstring: ratios rho = e^{b_j - b_i} <= 1,
tr = t / rho, rows renormalised into b), in cyclic order (i < j, row by row) on one
matrix per thread, every matrix of the stack in parallel. The NumPy version takes
the pairs in round-robin order instead; both converge to the singular values, so
they agree to rounding (relative ~ D eps cond(U) in s, i.e. absolute in log s).
"""

import numpy as np
from numba import njit, prange

from .graded_svd import MAX_SWEEPS, tolerance


@njit(cache=True, error_model="numpy")
def _normalise(b, U, i):
    n = 0.0
    for k in range(U.shape[1]):
        n += U[i, k] * U[i, k]
    if n > 0.0:
        n = np.sqrt(n)
        for k in range(U.shape[1]):
            U[i, k] /= n
        b[i] += np.log(n)
    else:
        b[i] = -np.inf


@njit(cache=True, error_model="numpy")
def _jacobi(b, U, tol, max_sweeps):
    """One matrix: b (D,), U (D, D) in place; rows normalised on entry."""
    D = b.size
    for _ in range(max_sweeps):
        rotated = False
        for p in range(D - 1):
            for q in range(p + 1, D):
                i, j = (p, q) if b[p] >= b[q] else (q, p)
                if not np.isfinite(b[j]):
                    continue
                ni = 0.0
                nj = 0.0
                g = 0.0
                for k in range(D):
                    ni += U[i, k] * U[i, k]
                    nj += U[j, k] * U[j, k]
                    g += U[i, k] * U[j, k]
                if not abs(g) > tol * np.sqrt(ni * nj):
                    continue
                rotated = True
                rho = np.exp(b[j] - b[i])
                w = (rho * rho * nj - ni) / (2.0 * g)
                sign = 1.0 if w >= 0 else -1.0
                tr = sign / (abs(w) + np.sqrt(rho * rho + w * w))
                t = rho * tr
                c = 1.0 / np.sqrt(1.0 + t * t)
                r2 = rho * rho * tr
                for k in range(D):
                    ui = U[i, k]
                    uj = U[j, k]
                    U[i, k] = c * (ui - r2 * uj)
                    U[j, k] = c * (tr * ui + uj)
                _normalise(b, U, i)
                _normalise(b, U, j)
        if not rotated:
            break


@njit(parallel=True, cache=True, error_model="numpy")
def _stack(b, U, tol, max_sweeps):
    for m in prange(b.shape[0]):
        for i in range(b.shape[1]):
            _normalise(b[m], U[m], i)
        _jacobi(b[m], U[m], tol, max_sweeps)


def log_singular_values(b, U, max_sweeps=MAX_SWEEPS):
    """As ``graded_svd.log_singular_values`` (b (M, D), U (M, D, D) -> (M, D) sorted
    descending, NaN for non-finite input), on all cores."""
    b = np.array(b, dtype=np.float64)
    U = np.array(U, dtype=np.float64)
    D = b.shape[1]
    bad = ~(np.isfinite(U).all(axis=(1, 2)) & ~np.isnan(b).any(axis=1) & (b < np.inf).all(axis=1))
    U[bad] = np.eye(D)
    b[bad] = 0.0
    _stack(b, U, tolerance(D), max_sweeps)
    out = -np.sort(-b, axis=1)
    out[bad] = np.nan
    return out
