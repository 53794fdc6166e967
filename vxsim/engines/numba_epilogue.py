"""Per-point epilogues of the Numba engine, and the template of its generated module.

The engine (``numba_cpu``) never imports this file, nor ``numba_dispatch.py``, as
they stand. It reads their text and writes one module for the registered
activations into a cache directory, named by a hash of the kernel sources,
``rng.py``, ``activations.py`` and the Numba version, then imports that copy. In
the copy, the block between ``# BEGIN ACTIVATION`` and ``# END ACTIVATION`` is
repeated once per activation (``ACT0`` -> ``ACT0``, ``ACT1``, ... bound to that
activation's ``phi``/``dphi`` from the registry), the ``_act_rows`` dispatcher
between ``# BEGIN DISPATCH`` and ``# END DISPATCH`` is rewritten to branch on the
activation code, and ``numba_dispatch.py`` follows (less its import of
this file). So

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
  layer's GEMM input.
"""

import math

import numpy as np
from numba import njit

from vxsim.activations import REGISTRY as _REGISTRY
from vxsim.engines import layout
from vxsim.engines.layout import (
    EXP_CAP,
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
    R_CORR,
    R_GRAD,
    R_LOGQ,
    R_TAN,
)
from vxsim.engines.numba_types import OPT_NOREF as _OPT
from vxsim.engines.numba_types import RED_NOREF as _RED

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


@njit(inline="always", **_OPT)
def _bias_scale(ls, has_bias):
    """exp(-ls), -ls capped at EXP_CAP: the bias's factor for a state renormalised by
    e^ls. 1 without calling exp where ls = 0 (exp(0) = 1 exactly: every layer of a
    non-homogeneous phi) or where there is no bias (the factor is unused): two libm
    calls less per point and layer."""
    if ls == 0.0 or not has_bias:
        return 1.0
    return math.exp(min(-ls, EXP_CAP))


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
# Whether the rows are renormalised (d1, d2 != 1): only where phi is homogeneous
# (pi[I_HOMOG] is the registry's flag; d1 = d2 = 1 always otherwise). A constant, so
# that for every other phi LLVM compiles x = h without the division by 1 (the same
# bits): measured 6-12% of tanh's pass in float32 (2026-12-04, one thread), at no
# extra compile time (compiling the loops a second time with d = 1 cost ~15 s).
_RENORM_ACT0 = _REGISTRY["linear"].homogeneous


@njit(**_OPT)
def _act_rows_ACT0(kind, h1, h2, t, d1, d2, dt, a1, a2, at, dd, a):
    """Next GEMM input from this layer's rows: x = h / d (the renormalised hh),
    a1 = phi(x1), a2 = phi(x2), at = phi'(x1) * t / dt, or for KIND_REC a1 and
    dd = phi'(x1); the KEEP kinds also write dd. No fast-math here: a
    recomputed segment must reproduce the forward pass bit for bit."""
    n = h1.size
    if kind == KIND_REC or kind == KIND_FWD_KEEP:
        for i in range(n):
            x = h1[i] / d1 if _RENORM_ACT0 else h1[i]
            a1[i] = _PHI_ACT0(x, a)
            dd[i] = _DPHI_ACT0(x, a)
        if kind == KIND_REC:
            return
    elif kind == KIND_JVP_KEEP:
        for i in range(n):
            x = h1[i] / d1 if _RENORM_ACT0 else h1[i]
            a1[i] = _PHI_ACT0(x, a)
            g = _DPHI_ACT0(x, a)
            dd[i] = g
            at[i] = g * (t[i] / dt)
    elif kind == KIND_JVP:
        for i in range(n):
            x = h1[i] / d1 if _RENORM_ACT0 else h1[i]
            a1[i] = _PHI_ACT0(x, a)
            at[i] = _DPHI_ACT0(x, a) * (t[i] / dt)
    else:
        for i in range(n):
            a1[i] = _PHI_ACT0(h1[i] / d1 if _RENORM_ACT0 else h1[i], a)
    for i in range(n):
        a2[i] = _PHI_ACT0(h2[i] / d2 if _RENORM_ACT0 else h2[i], a)


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
    bs1 = _bias_scale(pf[F_LS1, p], has_bias)
    bs2 = _bias_scale(pf[F_LS2, p], has_bias)
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
    bs = _bias_scale(pf[F_LSR, p], has_bias)
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
