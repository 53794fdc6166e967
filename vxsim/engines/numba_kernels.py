"""Numba kernels of the CPU engine, and the template of its generated module.

The engine (``numba_cpu``) never imports this file as it stands. It reads its
text and writes a module for the registered activations into a cache
directory, named by a hash of this file, ``rng.py``, ``activations.py`` and the
Numba version, then imports that copy. In the copy, the block between
``# BEGIN ACTIVATION`` and ``# END ACTIVATION`` is repeated once per activation
(``ACT0`` -> ``ACT0``, ``ACT1``, ... bound to that activation's ``phi``/``dphi``
from the registry) and the ``_act_rows`` dispatcher between ``# BEGIN
DISPATCH`` and ``# END DISPATCH`` is rewritten to branch on the activation
code. So

* adding an activation stays one ``register(...)`` call in ``activations.py``:
  its register_jitable phi and phi' are compiled into the kernels;
* ``cache=True`` works (the generated functions live in a real file), and
  any change to the kernels, the generator or the math they call gives a new
  file name, so a stale compiled kernel is never loaded.

As it stands (one activation, ``linear``) the file is an ordinary module,
importable and checked by the linter like any other.

What the kernels compute is exactly what ``models/mlp.py`` and
``engines/numpy_ref.py`` compute (see there), rearranged:

* states are rows: an (C, N) C-order array holds C column vectors of length N
  (point ``p``'s h1 in row ``p``, h2 in row ``P + p``, its tangent in row
  ``2P + p``), so a layer is one BLAS call ``H = A @ Z.T`` with no copies;
* everything around the GEMM is one pass per point (``_forward_point``):
  scale, bias, squared norms and the correlation dot product in float64, the
  divergence check, the renormalisation (log-scale ``ls`` for homogeneous
  activations), recording, and phi/phi' written straight into the next
  layer's GEMM input;
* the fused small-width kernels run every layer inside one call, generating
  Z into a small buffer and doing the matrix-vector products themselves.

Random numbers: Philox4x32-10 from ``rng`` and a Box-Muller transform
written here with the *same* arithmetic as ``rng.box_muller`` (same operations
in the same order, exact power-of-two scaling done with exponent bits instead
of ``ldexp``, quadrant rotation done with selects instead of table lookups), so
that LLVM vectorises it; the tests check it bit for bit against ``rng.normals``.
Kernels that produce random numbers never use fast-math flags.
"""

import math

import numpy as np
from llvmlite import ir
from numba import njit, prange
from numba.core import types
from numba.extending import intrinsic

from vxsim import rng
from vxsim.activations import REGISTRY as _REGISTRY
from vxsim.engines import layout
from vxsim.engines.layout import (  # noqa: F401  (numba_cpu reads them from here)
    F_ACC,
    F_BAMP,
    F_GACC,
    F_LS1,
    F_LS2,
    F_LSR,
    F_PARAM,
    F_SCALE,
    I_CODE,
    I_COLLAPSED,
    I_DEAD,
    I_DIVERGED,
    I_HOMOG,
    N_F,
    N_I,
    R_CORR,
    R_GRAD,
    R_LOGQ,
    R_TAN,
)

# Options. error_model="numpy": no ZeroDivisionError checks (they block
# vectorisation; a zero or non-finite norm is handled explicitly instead).
_OPT = dict(cache=True, error_model="numpy", nogil=True)
# Reductions (sums of squares, dot products) may be reordered so that they
# vectorise; they are float64 (or, in matrix-vector products, the run's dtype
# like BLAS) and tolerance-compared against the oracle anyway.
_RED = dict(cache=True, error_model="numpy", nogil=True, fastmath={"reassoc", "contract"})
_PAR = dict(cache=True, error_model="numpy", parallel=True)

# The per-point tables' rows (pf float64, pi int64, res) are ``layout``'s,
# shared with the CUDA kernels.
# What a forward epilogue writes for the next GEMM.
# (NumPy scalars, so that Numba types them int64, not as literals that would
# each compile their own specialisation of the callee.)
KIND_FWD = np.int64(layout.KIND_FWD)  # phi(h1), phi(h2)
KIND_JVP = np.int64(layout.KIND_JVP)  # phi(h1), phi(h2), phi'(h1) * t
KIND_REC = np.int64(2)  # phi(h1) and phi'(h1) (VJP recomputation; h2 and t unused)
KIND_FWD_KEEP = np.int64(3)  # as KIND_FWD, and phi'(h1) kept for VJP (no recomputation)
KIND_JVP_KEEP = np.int64(4)  # as KIND_JVP, and phi'(h1) kept for VJP

CHUNK = 256  # Philox blocks (4 normals each) per task of the normal generator
_U0 = np.uint64(0)
_U4 = np.uint64(4)
_MASK32 = rng.MASK32
_MANT = np.uint64(0x000FFFFFFFFFFFFF)
_EXP_ONE = np.uint64(0x3FF0000000000000)
_EXP_MASK = np.uint64(0x7FF)
_S52 = np.uint64(52)
_S30 = rng._THIRTY
_LOW30 = rng._LOW30
# rng's log-series coefficients 1 / (2k + 1), as scalars so the unrolled Horner
# loop below reads constants
_LC0, _LC1, _LC2, _LC3, _LC4, _LC5, _LC6, _LC7, _LC8, _LC9, _LC10, _LC11, _LC12 = (
    float(c) for c in rng._LOG_COEF
)
_STREAM_WEIGHT = np.uint64(rng.STREAM_WEIGHT)
_STREAM_BIAS = np.uint64(rng.STREAM_BIAS)


# ---------------------------------------------------------------- random numbers

# rng's own Philox, inlined at Numba-IR level: called out of line (as a
# register_jitable function is here), the block loop does not vectorise.
_philox = njit(inline="always", error_model="numpy")(rng.philox4x32_10)


@intrinsic
def _f64_bits(typingctx, x):
    """The IEEE 754 bits of a float64, as uint64."""

    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], ir.IntType(64))

    return types.uint64(types.float64), codegen


@intrinsic
def _bits_f64(typingctx, x):
    """The float64 with these IEEE 754 bits."""

    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], ir.DoubleType())

    return types.float64(types.uint64), codegen


@njit(inline="always", **_OPT)
def _log_uniform(k):
    """rng.log_uniform, same arithmetic: log((k + 1/2) 2^-32) for a 32-bit word k.

    x = k + 1/2 = m 2^e with m in [1, 2) read off the exponent bits (exactly
    what ldexp(x, -e) gives, e = bit_length(k) - 1), then the same fold to
    [1/sqrt2, sqrt2) and the same atanh series, Horner from the top.
    """
    x = np.int64(k & _MASK32) + 0.5
    bits = _f64_bits(x)
    e = np.int64((bits >> _S52) & _EXP_MASK) - 1023
    m = _bits_f64((bits & _MANT) | _EXP_ONE)
    if m > rng.SQRT2:
        m = m * 0.5
        e = e + 1
    s = (m - 1.0) / (m + 1.0)
    s2 = s * s
    poly = _LC12
    poly = poly * s2 + _LC11
    poly = poly * s2 + _LC10
    poly = poly * s2 + _LC9
    poly = poly * s2 + _LC8
    poly = poly * s2 + _LC7
    poly = poly * s2 + _LC6
    poly = poly * s2 + _LC5
    poly = poly * s2 + _LC4
    poly = poly * s2 + _LC3
    poly = poly * s2 + _LC2
    poly = poly * s2 + _LC1
    poly = poly * s2 + _LC0
    return (e - 32.0) * rng.LN2 + 2.0 * s * poly


@njit(inline="always", **_OPT)
def _box_muller(ka, kb):
    """rng.box_muller, same arithmetic: (r cos theta, r sin theta) from two 32-bit words."""
    r = np.sqrt(-2.0 * _log_uniform(ka))
    q = kb >> _S30
    f = ((kb & _LOW30) + 0.5) * rng.INV_2_30
    y = (f - 0.5) * rng.HALF_PI
    y2 = y * y
    sp = 1.0
    cp = 1.0
    # rng._sin_cos_small, unrolled: n = 8 .. 1, denominators (2n)(2n+1) and (2n-1)(2n).
    sp = 1.0 - sp * y2 / (16.0 * 17.0)
    cp = 1.0 - cp * y2 / (15.0 * 16.0)
    sp = 1.0 - sp * y2 / (14.0 * 15.0)
    cp = 1.0 - cp * y2 / (13.0 * 14.0)
    sp = 1.0 - sp * y2 / (12.0 * 13.0)
    cp = 1.0 - cp * y2 / (11.0 * 12.0)
    sp = 1.0 - sp * y2 / (10.0 * 11.0)
    cp = 1.0 - cp * y2 / (9.0 * 10.0)
    sp = 1.0 - sp * y2 / (8.0 * 9.0)
    cp = 1.0 - cp * y2 / (7.0 * 8.0)
    sp = 1.0 - sp * y2 / (6.0 * 7.0)
    cp = 1.0 - cp * y2 / (5.0 * 6.0)
    sp = 1.0 - sp * y2 / (4.0 * 5.0)
    cp = 1.0 - cp * y2 / (3.0 * 4.0)
    sp = 1.0 - sp * y2 / (2.0 * 3.0)
    cp = 1.0 - cp * y2 / (1.0 * 2.0)
    s = y * sp
    c = cp
    s45 = (s + c) * rng.INV_SQRT2
    c45 = (c - s) * rng.INV_SQRT2
    # Quadrant rotation. rng multiplies by table entries in {-1, 0, 1} and adds;
    # s45 and c45 are never zero for |y| < pi/4, so that sum is exactly one of
    # +-s45, +-c45: the selects below give the same bits.
    if q == 0:
        sin_t, cos_t = s45, c45
    elif q == 1:
        sin_t, cos_t = c45, -s45
    elif q == 2:
        sin_t, cos_t = -s45, -c45
    else:
        sin_t, cos_t = -c45, s45
    return r * cos_t, r * sin_t


@njit(**_OPT)
def _normals_chunk(chunk, count, layer, sample, stream, k0, k1, wbuf, obuf):
    """Normals ``4 chunk CHUNK ...`` of a stream into ``obuf`` (4, CHUNK) float64, lane-major.

    Structure-of-arrays passes over ``CHUNK`` Philox blocks so that Philox and
    Box-Muller vectorise; ``wbuf`` (4, CHUNK) uint64 and ``obuf`` are the calling
    thread's scratch. Returns the number of blocks.
    """
    b0 = chunk * CHUNK
    nb = min(CHUNK, (count + 3) // 4 - b0)
    for i in range(nb):
        w0, w1, w2, w3 = _philox(np.uint64(b0 + i), layer, sample, stream, k0, k1)
        wbuf[0, i] = w0
        wbuf[1, i] = w1
        wbuf[2, i] = w2
        wbuf[3, i] = w3
    for i in range(nb):
        z0, z1 = _box_muller(wbuf[0, i], wbuf[1, i])
        obuf[0, i] = z0
        obuf[1, i] = z1
    for i in range(nb):
        z2, z3 = _box_muller(wbuf[2, i], wbuf[3, i])
        obuf[2, i] = z2
        obuf[3, i] = z3
    return nb


@njit(**_OPT)
def _store_chunk(out, chunk, count, nb, obuf):
    """Interleave a chunk's lanes into ``out`` (cast to its dtype, round to nearest)."""
    base = 4 * chunk * CHUNK
    if base + 4 * nb <= count:
        for i in range(nb):
            out[base + 4 * i] = obuf[0, i]
            out[base + 4 * i + 1] = obuf[1, i]
            out[base + 4 * i + 2] = obuf[2, i]
            out[base + 4 * i + 3] = obuf[3, i]
    else:
        for k in range(count - base):
            out[base + k] = obuf[k % 4, k // 4]


# ---------------------------------------------------------------- per-point passes


@njit(**_RED)
def _preact_two(h1, h2, s, xi, bamp, bs1, bs2, has_bias, limit):
    """In place h = s * zx + dtype((xi * bamp) * bs) for both inputs (mlp.preactivation).

    Returns |h1|^2, |h2|^2, <h1, h2> (float64) and how many |h| exceed ``limit``.
    """
    ss1 = 0.0
    ss2 = 0.0
    dot = 0.0
    big = 0
    n = h1.size
    if has_bias:
        for i in range(n):
            b = xi[i] * bamp
            x1 = h1[i] * s + h1.dtype.type(b * bs1)
            x2 = h2[i] * s + h2.dtype.type(b * bs2)
            h1[i] = x1
            h2[i] = x2
            ss1 += np.float64(x1) * np.float64(x1)
            ss2 += np.float64(x2) * np.float64(x2)
            dot += np.float64(x1) * np.float64(x2)
            big += (abs(x1) > limit) + (abs(x2) > limit)
    else:
        for i in range(n):
            x1 = h1[i] * s
            x2 = h2[i] * s
            h1[i] = x1
            h2[i] = x2
            ss1 += np.float64(x1) * np.float64(x1)
            ss2 += np.float64(x2) * np.float64(x2)
            dot += np.float64(x1) * np.float64(x2)
            big += (abs(x1) > limit) + (abs(x2) > limit)
    return ss1, ss2, dot, big


@njit(**_RED)
def _preact_one(h, s, xi, bamp, bs, has_bias):
    """In place h = s * zx + dtype((xi * bamp) * bs); returns |h|^2 (float64)."""
    ss = 0.0
    if has_bias:
        for i in range(h.size):
            x = h[i] * s + h.dtype.type((xi[i] * bamp) * bs)
            h[i] = x
            ss += np.float64(x) * np.float64(x)
    else:
        for i in range(h.size):
            x = h[i] * s
            h[i] = x
            ss += np.float64(x) * np.float64(x)
    return ss


@njit(**_RED)
def _scale_sumsq(t, s):
    """In place t = s * t; returns |t|^2 (float64)."""
    ss = 0.0
    for i in range(t.size):
        x = t[i] * s
        t[i] = x
        ss += np.float64(x) * np.float64(x)
    return ss


@njit(**_OPT)
def _divide_into(dst, src, d):
    for i in range(src.size):
        dst[i] = src[i] / d


@njit(**_OPT)
def _zero(row):
    for i in range(row.size):
        row[i] = 0


@njit(**_OPT)
def _h_ok(ss, big, homogeneous):
    """The oracle's divergence test, passed: finite, non-zero where phi is homogeneous
    (h = 0 is a dead network there; for tanh & co. it is the fixed point q* = 0 that
    h underflowed to), and (unless renormalised, when |hh| <= sqrt(N) anyway) below
    the limit."""
    return math.isfinite(ss) and (ss > 0.0 or not homogeneous) and (homogeneous or big == 0)


# BEGIN ACTIVATION linear
_PHI_ACT0 = _REGISTRY["linear"].kernel_phi
_DPHI_ACT0 = _REGISTRY["linear"].kernel_dphi


@njit(**_OPT)
def _act_rows_ACT0(kind, h1, h2, t, d1, d2, dt, a1, a2, at, dd, a):
    """Next GEMM input from this layer's rows: x = h / d (the renormalised hh),
    a1 = phi(x1), a2 = phi(x2), at = phi'(x1) * t / dt, or for KIND_REC a1 and
    dd = phi'(x1); the KEEP kinds also write dd. No fast-math here: a
    recomputed segment must reproduce the forward pass bit for bit."""
    n = h1.size
    if kind == KIND_REC or kind == KIND_FWD_KEEP:
        for i in range(n):
            x = h1[i] / d1
            a1[i] = _PHI_ACT0(x, a)
            dd[i] = _DPHI_ACT0(x, a)
        if kind == KIND_REC:
            return
    elif kind == KIND_JVP_KEEP:
        for i in range(n):
            x = h1[i] / d1
            a1[i] = _PHI_ACT0(x, a)
            g = _DPHI_ACT0(x, a)
            dd[i] = g
            at[i] = g * (t[i] / dt)
    elif kind == KIND_JVP:
        for i in range(n):
            x = h1[i] / d1
            a1[i] = _PHI_ACT0(x, a)
            at[i] = _DPHI_ACT0(x, a) * (t[i] / dt)
    else:
        for i in range(n):
            a1[i] = _PHI_ACT0(h1[i] / d1, a)
    for i in range(n):
        a2[i] = _PHI_ACT0(h2[i] / d2, a)


# END ACTIVATION


# BEGIN DISPATCH
@njit(**_OPT)
def _act_rows(code, kind, h1, h2, t, d1, d2, dt, a1, a2, at, dd, a):
    _act_rows_ACT0(kind, h1, h2, t, d1, d2, dt, a1, a2, at, dd, a)


# END DISPATCH


@njit(**_OPT)
def _forward_point(p, layer, kind, H, A, D, j, xi, has_bias, pf, pi, res, r, limit, cp, cp_ls, ci):
    """One point's epilogue after the layer's GEMM (H rows hold Z @ input).

    Same steps and order as generic.forward with models.mlp: pre-activations (with the
    bias rescaled by exp(-ls)), the tangent, the divergence test (then the
    point's GEMM input rows are zeroed and it is skipped from now on),
    renormalisation, checkpoint (``ci`` >= 0), next GEMM input (and, for the
    KEEP kinds, phi'(hh1) into D[j]), recording.
    """
    if pi[I_DEAD, p]:
        return
    P = pi.shape[1]
    n = H.shape[1]
    dtype = H.dtype.type
    h1 = H[p]
    h2 = H[P + p]
    s = dtype(pf[F_SCALE, p])
    bamp = pf[F_BAMP, p]
    bs1 = math.exp(min(-pf[F_LS1, p], 700.0))
    bs2 = math.exp(min(-pf[F_LS2, p], 700.0))
    ss1, ss2, dot, big = _preact_two(h1, h2, s, xi, bamp, bs1, bs2, has_bias, limit)
    homog = pi[I_HOMOG, p] != 0
    ok = _h_ok(ss1, big, homog) and _h_ok(ss2, big, homog)
    jvp = kind == KIND_JVP or kind == KIND_JVP_KEEP
    acc = 0.0
    sst = 1.0
    if jvp:
        sst = _scale_sumsq(H[2 * P + p], s)
        acc = pf[F_ACC, p] + np.log(sst)
        ok = ok and math.isfinite(acc)
    if not ok:
        pi[I_DIVERGED, p] = layer
        pi[I_DEAD, p] = 1
        pf[F_LS1, p] = 0.0
        pf[F_LS2, p] = 0.0
        _zero(A[p])
        _zero(A[P + p])
        if jvp:
            _zero(A[2 * P + p])
        return
    d1 = dtype(1.0)
    d2 = dtype(1.0)
    if homog:
        rms1 = math.sqrt(ss1 / n)
        rms2 = math.sqrt(ss2 / n)
        d1 = dtype(rms1)
        d2 = dtype(rms2)
        pf[F_LS1, p] += math.log(rms1)
        pf[F_LS2, p] += math.log(rms2)
    if ci >= 0:
        _divide_into(cp[ci, p], h1, d1)
        cp_ls[ci, p] = pf[F_LS1, p]
    t = h1
    at = A[p]
    dt = dtype(1.0)
    if jvp:
        pf[F_ACC, p] = acc
        t = H[2 * P + p]
        at = A[2 * P + p]
        dt = dtype(math.sqrt(sst))
    dd = D[j, p] if kind == KIND_FWD_KEEP or kind == KIND_JVP_KEEP else at
    _act_rows(pi[I_CODE, p], kind, h1, h2, t, d1, d2, dt, A[p], A[P + p], at, dd, pf[F_PARAM, p])
    if r >= 0:
        f1 = np.float64(d1)
        res[R_LOGQ, p, r] = 2.0 * pf[F_LS1, p] + math.log(ss1 / n / (f1 * f1))
        res[R_CORR, p, r] = dot / math.sqrt(ss1 * ss2)
        if jvp:
            res[R_TAN, p, r] = acc


@njit(**_OPT)
def _recompute_point(p, H, A, xi, has_bias, pf, pi, drow):
    """h1 only, as _forward_point computes it, for a VJP segment: next input and phi'."""
    if pi[I_DEAD, p]:
        return
    n = H.shape[1]
    dtype = H.dtype.type
    h1 = H[p]
    s = dtype(pf[F_SCALE, p])
    bs = math.exp(min(-pf[F_LSR, p], 700.0))
    ss1 = _preact_one(h1, s, xi, pf[F_BAMP, p], bs, has_bias)
    d1 = dtype(1.0)
    if pi[I_HOMOG, p] != 0 and ss1 > 0.0:
        rms1 = math.sqrt(ss1 / n)
        d1 = dtype(rms1)
        pf[F_LSR, p] += math.log(rms1)
    _act_rows(
        pi[I_CODE, p], KIND_REC, h1, h1, h1, d1, d1, d1, A[p], A[p], A[p], drow, pf[F_PARAM, p]
    )


@njit(**_OPT)
def _restart_point(p, cprow, ls, A, pf, pi, drow):
    """Start a recomputed segment from a checkpoint row hh1: next input and phi'(hh1)."""
    if pi[I_DEAD, p]:
        _zero(A[p])
        return
    pf[F_LSR, p] = ls
    one = A.dtype.type(1.0)
    _act_rows(
        pi[I_CODE, p],
        KIND_REC,
        cprow,
        cprow,
        cprow,
        one,
        one,
        one,
        A[p],
        A[p],
        A[p],
        drow,
        pf[F_PARAM, p],
    )


@njit(**_RED)
def _backward_rows(g, u, d, s):
    """g = phi'(h^{l-1}) * (s * Z^T g); returns |g|^2 (float64)."""
    ss = 0.0
    for i in range(g.size):
        x = d[i] * (s * u[i])
        g[i] = x
        ss += np.float64(x) * np.float64(x)
    return ss


@njit(**_OPT)
def _backward_point(p, lm1, G, U, drow, pf, pi, res, r):
    """One backprop step for a point (generic.backward, mlp.cotangent): g^{l-1} from U = Z^T g^l."""
    if pi[I_DEAD, p] or pi[I_COLLAPSED, p]:
        return
    g = G[p]
    ss = _backward_rows(g, U[p], drow, G.dtype.type(pf[F_SCALE, p]))
    acc = pf[F_GACC, p] + np.log(ss)
    if not math.isfinite(acc):
        pi[I_DIVERGED, p] = lm1
        pi[I_COLLAPSED, p] = 1
        _zero(g)
        return
    pf[F_GACC, p] = acc
    d = G.dtype.type(math.sqrt(ss))
    for i in range(g.size):
        g[i] = g[i] / d
    if r >= 0:
        res[R_GRAD, p, r] = acc


# ---------------------------------------------------------------- matrix-vector products (fused)


# Register-blocked over four rows of Z, so that each load of an input vector
# feeds four multiply-adds; dot products accumulate in the run's dtype, in
# vector lanes (like BLAS: a different order than the GEMM path's, equally
# valid). Remainder rows one at a time.


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


# ---------------------------------------------------------------- one parallel entry point
#
# Every parallel operation is ``run(ctl, ...)``: ``ctl[C_LANES]`` tasks (one
# per thread), each doing ``_lane``: its contiguous share of the points, and
# its share of the chunks of the next layer's Z. A single parallel function
# keeps the JIT time down (Numba's parallel lowering costs seconds per
# function) and a single signature per dtype.
#
# GEMM path, per layer: one BLAS call, then one ``run`` doing the points'
# epilogues *and* generating the Z (and bias noise, double-buffered in
# ``xis[layer % 2]``) of the next GEMM, so the thread pool wakes once per
# layer and the generator runs on every core while BLAS sleeps.
#
# Fused path: one ``run`` for the whole pass. Each lane takes its points
# through every layer, generating each Z itself into its own buffer
# ``Zs[lane]`` (all lanes generate the same Z, as the counter dictates:
# common random numbers). No synchronisation between layers, which at small
# widths costs more than the arithmetic.

# Operations.
OP_PREFETCH = 0  # Z^{nxt} (and xi^{nxt}) only
OP_FORWARD = 1  # forward epilogues of ``layer`` after H = A @ Z.T, then prefetch
OP_RECOMPUTE = 2  # h1 epilogues of a recomputed ``layer`` (phi' into D[j]), then prefetch
OP_RESTART = 3  # segment start from checkpoint ``ci`` (ci < 0: from the input x1)
OP_BACKWARD = 4  # backprop steps ``layer`` -> ``layer - 1`` after U = G @ Z, then prefetch
OP_FUSED_FORWARD = 5  # the whole forward pass
OP_FUSED_BACKWARD = 6  # the whole backward pass (all segments)
# Entries of the int64 control vector ``ctl``.
C_OP = 0
C_LANES = 1
C_LAYER = 2
C_KIND = 3
C_J = 4  # D index (recompute / backward)
C_R = 5  # record index of the layer written (-1: none)
C_CI = 6  # checkpoint index (-1: none)
C_NXT = 7  # layer whose Z to generate next (0: none)
C_NXT_BIAS = 8  # 1: generate its bias noise too
C_DEPTH = 9
C_EVERY = 10  # checkpoint spacing (0: no checkpoints)
C_HAS_BIAS = 11
C_ZSLOT = 12  # which of the stored weight buffers Zs[., slot] the prefetch fills
C_ZSTORE = 13  # 1: VJP keeps a segment's Z^l from its recomputation for its backward steps
# (with C_FULL: every Z^l from the forward pass)
C_FULL = 14  # 1: VJP keeps phi'(h1) of every layer from the forward pass (no recomputation)
N_C = 15


@njit(**_OPT)
def _fill_share(Z, xis, nxt, nxt_bias, keys, wbuf, obuf, lane, lanes):
    """Lane ``lane``'s share of Z^{nxt} (and xi^{nxt} into xis[nxt % 2]); nothing if nxt == 0."""
    if nxt <= 0:
        return
    n = Z.shape[0]
    zflat = Z.reshape(n * n)
    lay = np.uint64(nxt)
    nch = ((n * n + 3) // 4 + CHUNK - 1) // CHUNK
    for c in range(lane * nch // lanes, (lane + 1) * nch // lanes):
        nb = _normals_chunk(c, n * n, lay, keys[0], _STREAM_WEIGHT, keys[1], keys[2], wbuf, obuf)
        _store_chunk(zflat, c, n * n, nb, obuf)
    if nxt_bias:
        xi = xis[nxt % 2]
        nch = ((n + 3) // 4 + CHUNK - 1) // CHUNK
        for c in range(lane * nch // lanes, (lane + 1) * nch // lanes):
            nb = _normals_chunk(c, n, lay, keys[0], _STREAM_BIAS, keys[1], keys[2], wbuf, obuf)
            _store_chunk(xi, c, n, nb, obuf)


@njit(**_OPT)
def _fill_layer(Z, xi, layer, bias, keys, wbuf, obuf):
    """Z^{layer} (and xi^{layer}) by one lane alone."""
    n = Z.shape[0]
    zflat = Z.reshape(n * n)
    lay = np.uint64(layer)
    nch = ((n * n + 3) // 4 + CHUNK - 1) // CHUNK
    for c in range(nch):
        nb = _normals_chunk(c, n * n, lay, keys[0], _STREAM_WEIGHT, keys[1], keys[2], wbuf, obuf)
        _store_chunk(zflat, c, n * n, nb, obuf)
    if bias:
        nch = ((n + 3) // 4 + CHUNK - 1) // CHUNK
        for c in range(nch):
            nb = _normals_chunk(c, n, lay, keys[0], _STREAM_BIAS, keys[1], keys[2], wbuf, obuf)
            _store_chunk(xi, c, n, nb, obuf)


@njit(**_OPT)
def _restart_share(p0, lanes, ci, x1, A, cp, cp_ls, pf, pi, D):
    P = pi.shape[1]
    for p in range(p0, P, lanes):
        if ci < 0:
            pf[F_LSR, p] = 0.0
            for i in range(x1.size):
                A[p, i] = x1[i]
        else:
            _restart_point(p, cp[ci, p], cp_ls[ci, p], A, pf, pi, D[0, p])


@njit(**_OPT)
def _fused_forward_lane(
    p0, lanes, ctl, keys, limit, H, A, D, Zs, xi, cp, cp_ls, pf, pi, res, rec, wbuf, obuf
):
    """``Zs`` (slots, N, N): with C_FULL and C_ZSTORE, Z^l goes to slot l - 1
    and stays for the backward pass; else slot 0 is overwritten every layer."""
    P = pi.shape[1]
    depth = ctl[C_DEPTH]
    every = ctl[C_EVERY]
    kind = ctl[C_KIND]
    has_bias = ctl[C_HAS_BIAS] != 0
    full = ctl[C_FULL] != 0
    keep_all = full and ctl[C_ZSTORE] != 0
    jvp = kind == KIND_JVP
    for layer in range(1, depth + 1):
        Z = Zs[layer - 1] if keep_all else Zs[0]
        _fill_layer(Z, xi, layer, has_bias, keys, wbuf, obuf)
        ci = -1
        if every > 0 and layer % every == 0 and layer < depth:
            ci = layer // every - 1
        r = rec[layer]
        kl = kind
        if full and layer < depth:
            kl = KIND_JVP_KEEP if jvp else KIND_FWD_KEEP
        for p in range(p0, P, lanes):
            if pi[I_DEAD, p] == 0:
                if jvp:
                    _matvec3(Z, A[p], A[P + p], A[2 * P + p], H[p], H[P + p], H[2 * P + p])
                else:
                    _matvec2(Z, A[p], A[P + p], H[p], H[P + p])
                _forward_point(
                    p, layer, kl, H, A, D, layer, xi, has_bias, pf, pi, res, r, limit, cp, cp_ls, ci
                )


@njit(**_OPT)
def _fused_backward_lane(
    p0, lanes, ctl, keys, H, A, G, U, D, Zs, xi, x1, cp, cp_ls, pf, pi, res, rec, wbuf, obuf
):
    """``Zs`` (slots, N, N): with C_ZSTORE, slot l - start - 1 keeps Z^l of the
    segment from its recomputation to its backward step (one generation per
    layer instead of two); else slot 0 is regenerated every time. With
    C_FULL the forward pass kept phi'(h1) of every layer (D[l]) and, with
    C_ZSTORE, every Z^l: the backward steps alone, nothing recomputed."""
    P = pi.shape[1]
    depth = ctl[C_DEPTH]
    every = ctl[C_EVERY]
    has_bias = ctl[C_HAS_BIAS] != 0
    store = ctl[C_ZSTORE] != 0
    if ctl[C_FULL] != 0:
        for layer in range(depth, 1, -1):
            Z = Zs[layer - 1] if store else Zs[0]
            if not store and layer < depth:  # Z^depth is still there from the forward pass
                _fill_layer(Z, xi, layer, False, keys, wbuf, obuf)
            r = rec[layer - 1]
            for p in range(p0, P, lanes):
                if pi[I_DEAD, p] == 0 and pi[I_COLLAPSED, p] == 0:
                    _vecmat(Z, G[p], U[p])
                    _backward_point(p, layer - 1, G, U, D[layer - 1, p], pf, pi, res, r)
        return
    nseg = (depth - 1) // every + 1
    for seg in range(nseg - 1, -1, -1):
        start = seg * every
        stop = min(start + every, depth)
        _restart_share(p0, lanes, seg - 1, x1, A, cp, cp_ls, pf, pi, D)
        for layer in range(start + 1, stop):
            Z = Zs[layer - start - 1] if store else Zs[0]
            _fill_layer(Z, xi, layer, has_bias, keys, wbuf, obuf)
            for p in range(p0, P, lanes):
                if pi[I_DEAD, p] == 0:
                    _matvec(Z, A[p], H[p])
                    _recompute_point(p, H, A, xi, has_bias, pf, pi, D[layer - start, p])
        for layer in range(stop, max(start, 1), -1):
            Z = Zs[layer - start - 1] if store else Zs[0]
            if layer == stop or not store:
                _fill_layer(Z, xi, layer, False, keys, wbuf, obuf)
            r = rec[layer - 1]
            for p in range(p0, P, lanes):
                if pi[I_DEAD, p] == 0 and pi[I_COLLAPSED, p] == 0:
                    _vecmat(Z, G[p], U[p])
                    _backward_point(p, layer - 1, G, U, D[layer - 1 - start, p], pf, pi, res, r)


@njit(**_OPT)
def _lane(
    lane, ctl, keys, limit, H, A, G, U, D, Zs, xis, x1, cp, cp_ls, pf, pi, res, rec, wbuf, obuf
):
    op = ctl[C_OP]
    lanes = ctl[C_LANES]
    P = pi.shape[1]
    p0 = lane  # points lane, lane + lanes, ...: activation groups are contiguous, so
    # striding spreads each activation's cost over every lane.
    layer = ctl[C_LAYER]
    has_bias = ctl[C_HAS_BIAS] != 0
    w = wbuf[lane]
    o = obuf[lane]
    if op == OP_FUSED_FORWARD:
        if P > p0:
            _fused_forward_lane(
                p0,
                lanes,
                ctl,
                keys,
                limit,
                H,
                A,
                D,
                Zs[lane],
                xis[lane],
                cp,
                cp_ls,
                pf,
                pi,
                res,
                rec,
                w,
                o,
            )
        return
    if op == OP_FUSED_BACKWARD:
        if P > p0:
            _fused_backward_lane(
                p0,
                lanes,
                ctl,
                keys,
                H,
                A,
                G,
                U,
                D,
                Zs[lane],
                xis[lane],
                x1,
                cp,
                cp_ls,
                pf,
                pi,
                res,
                rec,
                w,
                o,
            )
        return
    if op == OP_FORWARD:
        xi = xis[layer % 2]
        for p in range(p0, P, lanes):
            _forward_point(
                p,
                layer,
                ctl[C_KIND],
                H,
                A,
                D,
                ctl[C_J],
                xi,
                has_bias,
                pf,
                pi,
                res,
                ctl[C_R],
                limit,
                cp,
                cp_ls,
                ctl[C_CI],
            )
    elif op == OP_RECOMPUTE:
        xi = xis[layer % 2]
        for p in range(p0, P, lanes):
            _recompute_point(p, H, A, xi, has_bias, pf, pi, D[ctl[C_J], p])
    elif op == OP_RESTART:
        _restart_share(p0, lanes, ctl[C_CI], x1, A, cp, cp_ls, pf, pi, D)
    elif op == OP_BACKWARD:
        for p in range(p0, P, lanes):
            _backward_point(p, layer - 1, G, U, D[ctl[C_J], p], pf, pi, res, ctl[C_R])
    _fill_share(Zs[0, ctl[C_ZSLOT]], xis, ctl[C_NXT], ctl[C_NXT_BIAS] != 0, keys, w, o, lane, lanes)


@njit(**_PAR)
def run(ctl, keys, limit, H, A, G, U, D, Zs, xis, x1, cp, cp_ls, pf, pi, res, rec, wbuf, obuf):
    """Operation ``ctl[C_OP]`` on ``ctl[C_LANES]`` parallel lanes (see above).

    ``keys`` = (sample, k0, k1) uint64; ``Zs`` (lanes or 1, slots, N, N) and ``xis``
    (>= 2, N) weight and bias buffers; H, A: (rows * P, N) GEMM output and
    input; G, U (P, N): gradients and Z^T g; D (every, P, N): phi'(h1) of the
    segment; cp (checkpoints, P, N), cp_ls: hh1 and its log-scale.
    """
    for lu in prange(ctl[C_LANES]):
        _lane(
            np.int64(lu),
            ctl,
            keys,
            limit,
            H,
            A,
            G,
            U,
            D,
            Zs,
            xis,
            x1,
            cp,
            cp_ls,
            pf,
            pi,
            res,
            rec,
            wbuf,
            obuf,
        )
