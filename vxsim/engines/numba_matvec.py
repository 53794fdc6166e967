"""Matrix-vector products of the Numba engine's fused path (small widths, one call per pass).

Register-blocked over four rows of Z, so that each load of an input vector
feeds four multiply-adds; dot products accumulate in the run's dtype, in
vector lanes (like BLAS: a different order than the GEMM path's, equally
valid). Remainder rows one at a time.
"""

from numba import njit

from vxsim.engines.numba_types import RED as _RED


@njit(**_RED)
def _matvec(Z, a, out):
    """out = Z @ a."""
    n = Z.shape[0]
    zero = out.dtype.type(0.0)
    i = 0
    while i + 4 <= n:
        z0, z1, z2, z3 = Z[i], Z[i + 1], Z[i + 2], Z[i + 3]
        s0 = s1 = s2 = s3 = zero
        for j in range(n):
            x = a[j]
            s0 += z0[j] * x
            s1 += z1[j] * x
            s2 += z2[j] * x
            s3 += z3[j] * x
        out[i], out[i + 1], out[i + 2], out[i + 3] = s0, s1, s2, s3
        i += 4
    while i < n:
        z0 = Z[i]
        s0 = zero
        for j in range(n):
            s0 += z0[j] * a[j]
        out[i] = s0
        i += 1


@njit(**_RED)
def _matvec2(Z, a1, a2, o1, o2):
    """o1 = Z @ a1, o2 = Z @ a2."""
    n = Z.shape[0]
    zero = o1.dtype.type(0.0)
    i = 0
    while i + 4 <= n:
        z0, z1, z2, z3 = Z[i], Z[i + 1], Z[i + 2], Z[i + 3]
        s10 = s11 = s12 = s13 = zero
        s20 = s21 = s22 = s23 = zero
        for j in range(n):
            x1 = a1[j]
            x2 = a2[j]
            y0, y1, y2, y3 = z0[j], z1[j], z2[j], z3[j]
            s10 += y0 * x1
            s11 += y1 * x1
            s12 += y2 * x1
            s13 += y3 * x1
            s20 += y0 * x2
            s21 += y1 * x2
            s22 += y2 * x2
            s23 += y3 * x2
        o1[i], o1[i + 1], o1[i + 2], o1[i + 3] = s10, s11, s12, s13
        o2[i], o2[i + 1], o2[i + 2], o2[i + 3] = s20, s21, s22, s23
        i += 4
    while i < n:
        z0 = Z[i]
        s10 = s20 = zero
        for j in range(n):
            s10 += z0[j] * a1[j]
            s20 += z0[j] * a2[j]
        o1[i] = s10
        o2[i] = s20
        i += 1


@njit(**_RED)
def _matvec3(Z, a1, a2, a3, o1, o2, o3):
    """o1, o2, o3 = Z @ a1, Z @ a2, Z @ a3."""
    n = Z.shape[0]
    zero = o1.dtype.type(0.0)
    i = 0
    while i + 4 <= n:
        z0, z1, z2, z3 = Z[i], Z[i + 1], Z[i + 2], Z[i + 3]
        s10 = s11 = s12 = s13 = zero
        s20 = s21 = s22 = s23 = zero
        s30 = s31 = s32 = s33 = zero
        for j in range(n):
            x1 = a1[j]
            x2 = a2[j]
            x3 = a3[j]
            y0, y1, y2, y3 = z0[j], z1[j], z2[j], z3[j]
            s10 += y0 * x1
            s11 += y1 * x1
            s12 += y2 * x1
            s13 += y3 * x1
            s20 += y0 * x2
            s21 += y1 * x2
            s22 += y2 * x2
            s23 += y3 * x2
            s30 += y0 * x3
            s31 += y1 * x3
            s32 += y2 * x3
            s33 += y3 * x3
        o1[i], o1[i + 1], o1[i + 2], o1[i + 3] = s10, s11, s12, s13
        o2[i], o2[i + 1], o2[i + 2], o2[i + 3] = s20, s21, s22, s23
        o3[i], o3[i + 1], o3[i + 2], o3[i + 3] = s30, s31, s32, s33
        i += 4
    while i < n:
        z0 = Z[i]
        s10 = s20 = s30 = zero
        for j in range(n):
            s10 += z0[j] * a1[j]
            s20 += z0[j] * a2[j]
            s30 += z0[j] * a3[j]
        o1[i] = s10
        o2[i] = s20
        o3[i] = s30
        i += 1


@njit(**_RED)
def _vecmat(Z, g, out):
    """out = Z^T g (row-axpy form, four rows of Z per pass)."""
    n = Z.shape[0]
    for j in range(n):
        out[j] = 0
    i = 0
    while i + 4 <= n:
        z0, z1, z2, z3 = Z[i], Z[i + 1], Z[i + 2], Z[i + 3]
        g0, g1, g2, g3 = g[i], g[i + 1], g[i + 2], g[i + 3]
        for j in range(n):
            out[j] += z0[j] * g0 + z1[j] * g1 + z2[j] * g2 + z3[j] * g3
        i += 4
    while i < n:
        z0 = Z[i]
        g0 = g[i]
        for j in range(n):
            out[j] += z0[j] * g0
        i += 1
