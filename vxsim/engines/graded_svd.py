"""Singular values of row-graded matrices K = diag(e^b) U, in logs, with relative accuracy.

The Jacobian spectrum (``engines.spectrum``) accumulates J^l = Q K with K upper
triangular and graded: K = diag(e^b) U, b float64 log-scales (any size: 10^+-300
and far beyond), U with rows of unit norm. Its singular values are those of
G = K^T = U^T diag(e^b), whose column j is a_j = e^{b_j} u_j (u_j the j-th row of U).

One-sided Jacobi (Hestenes) orthogonalises G's columns by plane rotations; at
convergence the singular values are the column norms. For a pair (i, j) with
alpha = |a_i|^2, beta = |a_j|^2, gamma = a_i . a_j the rotation is

    zeta = (beta - alpha) / (2 gamma),   t = sign(zeta) / (|zeta| + sqrt(1 + zeta^2)),
    c = 1 / sqrt(1 + t^2),  s = c t,     a_i' = c a_i - s a_j,   a_j' = s a_i + c a_j.

Here it is computed from ratios only. With b_i >= b_j (the pair ordered so) and
rho = e^{b_j - b_i} <= 1 (which may underflow to 0 harmlessly),

    w = rho zeta = (rho^2 |u_j|^2 - |u_i|^2) / (2 u_i.u_j),
    tr = t / rho = sign(w) / (|w| + sqrt(rho^2 + w^2)),   t = rho tr,
    u_i' = c (u_i - rho^2 tr u_j),   u_j' = c (tr u_i + u_j),

b unchanged, then each row renormalised (b += log |u'|). |u_i| = |u_j| = 1 gives
|w| >= (1 - rho^2) / 2, so |tr| <= 4/3 once rho <= 1/2 and nothing overflows. The
convergence test |gamma| / sqrt(alpha beta) = |u_i.u_j| / (|u_i| |u_j|) <= tol does
not involve b at all. At convergence log s_j = b_j (+ log |u_j| = 0).

Why the logs come out with relative accuracy: one-sided Jacobi on a column-graded
G = B D (B with unit columns) computes every singular value with relative error
about eps cond(B), however D is graded (Demmel & Veselic 1992, "Jacobi's method is
more accurate than QR", Thm 4.1 ff.): here B = U^T, whose condition stays modest
for products of random triangular factors (the graded form is the natural one:
K_ij ~ e^{b_i}). A zero row (b = -inf, an exactly singular K) is never rotated and
gives log s = -inf.

This module is the NumPy version (the oracle): all pairs of one round of a
round-robin (tournament) ordering at once, over every matrix of the stack. The
Numba engine runs the same rotation in ``numba_graded_svd`` (cyclic order, one
matrix per thread); both converge to the same values to rounding.
"""

import numpy as np

MAX_SWEEPS = 80  # quadratic convergence: ~6-12 sweeps are used in practice


def tolerance(D):
    """Rotate a pair while |cos angle(u_i, u_j)| > D eps (LAPACK dgesvj: sqrt(D) eps)."""
    return D * np.finfo(np.float64).eps


def round_robin(D):
    """The rounds of a tournament over D (even) indices: D - 1 lists of D/2 disjoint pairs
    covering every pair once (the circle method)."""
    players = list(range(D))
    rounds = []
    for _ in range(D - 1):
        half = D // 2
        rounds.append((np.array(players[:half]), np.array(players[::-1][:half])))
        players = [players[0], players[-1], *players[1:-1]]
    return rounds


def normalise_rows(b, U):
    """(b + log |u_j|, u_j / |u_j|) per row; a zero row keeps b = -inf and stays zero."""
    norm = np.sqrt(np.einsum("...ij,...ij->...i", U, U))
    safe = np.where(norm > 0, norm, 1.0)
    with np.errstate(divide="ignore"):
        return b + np.log(norm), U / safe[..., None]


def rotate(bi, bj, ui, uj, tol):
    """One Jacobi rotation of the pairs (ui, uj) with log-scales (bi, bj), bi >= bj
    (arrays (..., ) and (..., D)); returns (ui', uj', rotated) (module docstring)."""
    ni = np.einsum("...k,...k->...", ui, ui)
    nj = np.einsum("...k,...k->...", uj, uj)
    g = np.einsum("...k,...k->...", ui, uj)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        off = np.abs(g) / np.sqrt(ni * nj)
        go = (off > tol) & np.isfinite(bj)
        rho = np.exp(np.where(go, bj - bi, 0.0))
        w = (rho * rho * nj - ni) / (2.0 * np.where(go, g, 1.0))
        tr = np.where(w >= 0, 1.0, -1.0) / (np.abs(w) + np.sqrt(rho * rho + w * w))
    tr = np.where(go, tr, 0.0)
    t = rho * tr
    c = 1.0 / np.sqrt(1.0 + t * t)
    new_i = c[..., None] * (ui - (rho * rho * tr)[..., None] * uj)
    new_j = c[..., None] * (tr[..., None] * ui + uj)
    keep = ~go[..., None]
    return np.where(keep, ui, new_i), np.where(keep, uj, new_j), go


def log_singular_values(b, U, max_sweeps=MAX_SWEEPS):
    """log s of K = diag(e^b) U for a stack: b (M, D) float64, U (M, D, D); returns (M, D)
    sorted descending (-inf for exact zeros). Rows of non-finite input give NaN."""
    b = np.array(b, dtype=np.float64)
    U = np.array(U, dtype=np.float64)
    M, D = b.shape
    bad = ~(np.isfinite(U).all(axis=(1, 2)) & ~np.isnan(b).any(axis=1) & (b < np.inf).all(axis=1))
    U[bad] = np.eye(D)
    b[bad] = 0.0
    b, U = normalise_rows(b, U)
    if D % 2:  # a zero row (b = -inf) pads to an even count; never rotated
        U = np.concatenate([U, np.zeros((M, 1, D))], axis=1)
        b = np.concatenate([b, np.full((M, 1), -np.inf)], axis=1)
    tol = tolerance(D)
    rounds = round_robin(U.shape[1])
    rows = np.arange(M)[:, None]
    for _ in range(max_sweeps):
        any_rotated = False
        for first, second in rounds:
            swap = b[:, first] < b[:, second]  # order each pair so that b_i >= b_j
            I = np.where(swap, second, first)
            J = np.where(swap, first, second)
            ui, uj = U[rows, I], U[rows, J]
            ui, uj, go = rotate(b[rows, I], b[rows, J], ui, uj, tol)
            if go.any():
                any_rotated = True
                bi, ui = normalise_rows(b[rows, I], ui)
                bj, uj = normalise_rows(b[rows, J], uj)
                U[rows, I], U[rows, J] = ui, uj
                b[rows, I], b[rows, J] = bi, bj
        if not any_rotated:
            break
    out = -np.sort(-b[:, :D], axis=1)
    out[bad] = np.nan
    return out
