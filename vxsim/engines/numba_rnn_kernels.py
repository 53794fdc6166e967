"""Fused epilogues of the residual and recurrent nets (Elman, GRU, LSTM) on the Numba engine.

A template, like ``numba_epilogue.py``: ``numba_rnn`` writes a copy with the block
between ``# BEGIN ACTIVATION`` and ``# END ACTIVATION`` repeated per registered
activation (``_rows_ACT0`` -> ``_rows_ACT1`` ..., bound to that activation's kernel
phi and phi') and the dispatcher ``_act`` rewritten to branch on the activation
code, into its cache directory, and imports that. As it stands (``linear`` only)
it is an ordinary module.

What they compute is the models' step (models/rnn.py, gru.py, lstm.py, gates.py),
with every grid point's two trajectories (and tangent) as **rows** of C-order
arrays, so that the stacked gate GEMM of a step is one BLAS call ``H = A @ Z.T``
over all of them (numba_rnn does the GEMMs). Per step, after its GEMM(s), one
parallel call (``run``) does, per point, everything else in one pass, with no
temporaries: the pre-activations

    a = s * (Z_g h) + dtype(xi_g sqrt(sb2) + (Z_{U,g} x_t / sqrt(N)) sqrt(su2) [+ shift]),

the gates sigma(a) (1 / (1 + e), e / (1 + e), e = exp(-|a|)), the state update of
both trajectories, the tangent (JVP) or the cotangent (VJP) of the model's
docstring, float64 squared norms and the correlation dot product, the tangent's
and gradient's renormalisation with its float64 log-norm accumulator, the
oracle's divergence rule (engines.generic: a state leaving [-limit, limit] or
the float range; for Elman with a homogeneous phi, h = 0) and the records.
Row layouts (P points, N = width):

* Elman (mlp.advance with tied Z and the drive as bias): ``H`` rows hold hh
  (renormalised for homogeneous phi, log-scale in ``pf``), ``A`` rows
  phi(hh1), phi(hh2), phi'(hh1) * t: the next GEMM input.
* GRU: ``A`` rows h1, h2, v (state and tangent, the first GEMM's input),
  ``A2`` rows r h1, r h2, dr h1 + r v (the second's), ``Q`` the gate values.
* LSTM: ``A`` rows h1, h2, dh; ``X`` rows c1, c2, dc; ``Q`` the gate values.
* residual MLP (models.residual): ``X`` rows hh1, hh2, t (renormalised where phi is
  homogeneous), ``A`` rows phi(hh1), phi(hh2), phi'(hh1) t; ``run`` then draws the
  next GEMM's Z^l on the same lanes (``nxt``).

``run_fused`` (small widths) takes each point through a whole pass on one lane:
matrix-vector products ``_mv`` / ``_vm`` against the tied Z, then the same
per-point functions.

A VJP step reads trajectory 1's state at t-1 from the store ``S`` (slot
``slot``; numba_rnn lowers engines.schedule's operations onto slots) and writes
the cotangent rows ``G`` ([g_h | g_c] for the LSTM).
"""

import math

import numpy as np
from numba import njit, prange

from vxsim.activations import REGISTRY as _REGISTRY
from vxsim.engines.layout import (
    EXP_CAP,
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
from vxsim.engines.numba_normals import CHUNK, SCRATCH_ROWS, _fill_chunk, fill_share
from vxsim.engines.numba_types import OPT as _OPT
from vxsim.engines.numba_types import PAR as _PAR
from vxsim.engines.numba_types import RED as _RED

# Rows of the per-point float64 table ``pf`` (numba_rnn fills the first five).
F_SCALE = 0  # sqrt(sigma_w2 / N), as rounded to the run's dtype
F_SB = 1  # sqrt(sigma_b2)
F_SU = 2  # sqrt(sigma_u2)
F_SHIFT = 3  # the gate-bias axis (update_bias, forget_bias; 0 for Elman)
F_PARAM = 4  # activation parameter, as rounded to the run's dtype
F_LS1 = 5  # Elman: log-scale of hh1
F_LS2 = 6  # Elman: log-scale of hh2
F_ACC = 7  # accumulated log |t|^2 (JVP)
F_LSR = 8  # Elman: log-scale of a recomputed hh1 (VJP segment)
F_GACC = 9  # accumulated log |g|^2 (VJP)
F_ALPHA = 10  # residual: the branch scale alpha, as rounded to the run's dtype
N_F = 11

# What ``run`` does (its ``op``).
E_FWD = np.int64(0)  # Elman step after H = A @ Z.T (rows: both trajectories, or 1 recomputed)
E_START = np.int64(1)  # Elman: A[p] = phi(S[slot][p]) (a segment's restart), LSR from S_ls
E_BWD = np.int64(2)  # Elman backward after U = G @ Z
G_FWD1 = np.int64(3)  # GRU: r, z after H = A @ [Z_r; Z_z].T; A2 = r h (, dr h + r v)
G_FWD2 = np.int64(4)  # GRU: n, h_t (, tangent) after H2 = A2 @ Z_n.T
G_BWD1 = np.int64(5)  # GRU: n, phi'(a_n) of trajectory 1; GN = phi'(a_n) (1 - z) g
G_BWD2 = np.int64(6)  # GRU: g_m = s U2 (U2 = GN @ Z_n); GB = [r (1-r) h g_m | z (1-z) (h-n) g]
G_BWD3 = np.int64(7)  # GRU: g = z g + r g_m + s U (U = GB @ [Z_r; Z_z]); keep >= 0: G_BWD1
# of the next backward step from its kept gates QS[keep] on the same call
L_FWD = np.int64(8)  # LSTM step after H = A @ Z.T
L_BWD1 = np.int64(9)  # LSTM gates of trajectory 1; e, GB = gradients of the pre-activations
L_BWD2 = np.int64(10)  # LSTM: [g_h | g_c] = [s U | f e] (U = GB @ Z); keep >= 0: L_BWD1 of
# the next backward step from its kept gates QS[keep] and S[slot] on the same call
R_FWD = np.int64(11)  # residual layer after H = A @ Z^l.T (rows 2, or 1 recomputed)
R_START = np.int64(12)  # residual: a segment's restart from S[slot] (slot < 0: the input)
R_BWD = np.int64(13)  # residual backward after U = G @ Z^l

# Columns of a GRU row of Q (blocks of N).
Q_R, Q_1R, Q_Z, Q_1Z, Q_N, Q_DN, Q_DZ = 0, 1, 2, 3, 4, 5, 6
# ... of an LSTM row of Q.
Q_I, Q_1I, Q_F, Q_1F, Q_O, Q_1O, Q_G, Q_DG, Q_PC, Q_DC, Q_C, Q_E = range(12)
Q_BLOCKS = 12
# A backward step's gate values are a Q row's first blocks (GRU: r, 1-r, z, 1-z, n,
# phi'(a_n); LSTM: i .. 1-o, g, phi'(a_g), phi(c_t), phi'(c_t)): models.gru / lstm
# STEP_VALUES of them. The forward pass (or a segment's recomputation) copies them into
# the store ``QS`` (slot ``qslot``), and a backward step reading them needs no GEMM of
# its own but the transposed ones.
KEPT_BLOCKS = (0, 6, 10)  # per ARCH_ELMAN, ARCH_GRU, ARCH_LSTM

WANT_PHI = np.int64(0)
WANT_DPHI = np.int64(1)
WANT_BOTH = np.int64(2)


# BEGIN ACTIVATION linear
_PHI_ACT0 = _REGISTRY["linear"].kernel_phi
_DPHI_ACT0 = _REGISTRY["linear"].kernel_dphi


@njit(**_OPT)
def _rows_ACT0(which, x, phi, dphi, a):
    """phi(x) into ``phi`` (which != WANT_DPHI), phi'(x) into ``dphi`` (which != WANT_PHI)."""
    n = x.size
    if which != WANT_DPHI:
        for i in range(n):
            phi[i] = _PHI_ACT0(x[i], a)
    if which != WANT_PHI:
        for i in range(n):
            dphi[i] = _DPHI_ACT0(x[i], a)


# END ACTIVATION


# BEGIN DISPATCH
@njit(**_OPT)
def _act(code, which, x, phi, dphi, a):
    _rows_ACT0(which, x, phi, dphi, a)


# END DISPATCH


# ---------------------------------------------------------------- small pieces


@njit(**_OPT)
def _sigmoid(x, sig, one_minus):
    """sig = sigma(x), one_minus = 1 - sigma(x) (gates.sigmoid: both tails accurate)."""
    one = x.dtype.type(1.0)
    for i in range(x.size):
        e = x.dtype.type(math.exp(-abs(x[i])))
        big = one / (one + e)
        small = e * big
        if x[i] >= 0:
            sig[i] = big
            one_minus[i] = small
        else:
            sig[i] = small
            one_minus[i] = big


@njit(**_OPT)
def _preact(h, s, xi, drv, sb, su, shift, bs):
    """In place h = s * h + dtype(((xi sb + drv su) + shift) * bs) (gates.input_bias,
    gates.preactivation; ``bs`` = exp(-ls) rescales it for a renormalised Elman state)."""
    dtype = h.dtype.type
    for i in range(h.size):
        h[i] = h[i] * s + dtype(((xi[i] * sb + drv[i] * su) + shift) * bs)


@njit(**_RED)
def _sumsq(x):
    ss = 0.0
    for i in range(x.size):
        ss += np.float64(x[i]) * np.float64(x[i])
    return ss


@njit(**_RED)
def _dot(x, y):
    d = 0.0
    for i in range(x.size):
        d += np.float64(x[i]) * np.float64(y[i])
    return d


@njit(**_OPT)
def _big(x, limit):
    """How many |x| exceed ``limit``."""
    n = 0
    for i in range(x.size):
        n += abs(x[i]) > limit
    return n


@njit(**_OPT)
def _divide(x, d):
    for i in range(x.size):
        x[i] = x[i] / d


@njit(**_OPT)
def _zero(x):
    for i in range(x.size):
        x[i] = 0


@njit(**_OPT)
def _copy(dst, src):
    for i in range(src.size):
        dst[i] = src[i]


@njit(**_OPT)
def _gates(b, p, qslot):
    """Trajectory 1's gate values of a backward step: the kept row QS[qslot, p], or
    (qslot < 0) the row Q[p] just recomputed."""
    if qslot >= 0:
        return b.QS[qslot, p]
    return b.Q[p]


@njit(**_OPT)
def _keep_gates(b, p, qslot, blocks):
    """Trajectory 1's gate values (the first ``blocks`` of its Q row) into QS[qslot, p]."""
    if qslot >= 0:
        n = b.A.shape[1]
        _copy(b.QS[qslot, p], b.Q[p, : blocks * n])


@njit(**_OPT)
def _renormalise(v, ss):
    """v / |v| where |v| > 0 (generic._renormalise); returns log |v|^2 (-inf for 0)."""
    if ss > 0.0:
        _divide(v, v.dtype.type(math.sqrt(ss)))
    return np.log(ss)


@njit(**_OPT)
def _die(p, t, pi, pf, rows):
    """The oracle's kill: flag the point at step t, zero its rows (state, tangent)."""
    pi[I_DIVERGED, p] = t
    pi[I_DEAD, p] = 1
    pf[F_LS1, p] = 0.0
    pf[F_LS2, p] = 0.0
    for row in rows:
        _zero(row)


@njit(**_OPT)
def _record(p, r, res, pf, ss1, ss2, dot, n, ls1, jvp, acc):
    """log q = 2 ls + log(|h1|^2 / N), c = <h1, h2> / (|h1| |h2|), log |t|^2."""
    if r < 0:
        return
    res[R_LOGQ, p, r] = 2.0 * ls1 + np.log(ss1 / n)
    res[R_CORR, p, r] = dot / math.sqrt(ss1 * ss2)
    if jvp:
        res[R_TAN, p, r] = acc


@njit(**_OPT)
def _gradient_step(p, t, g, ss, pf, pi, res, r):
    """After a cotangent: accumulate log |g|^2, flag a collapse (non-finite), renormalise,
    record (generic.backward)."""
    acc = pf[F_GACC, p] + np.log(ss)
    if not math.isfinite(acc):
        pi[I_DIVERGED, p] = t - 1
        pi[I_COLLAPSED, p] = 1
        _zero(g)
        return
    pf[F_GACC, p] = acc
    _renormalise(g, ss)
    if r >= 0:
        res[R_GRAD, p, r] = acc


# ---------------------------------------------------------------- Elman and residual: shared tails


@njit(**_OPT)
def _recomputed(p, b, h, keep, code, a):
    """A recomputed trajectory-1 state hh1 (``h``): A[p] = phi(hh1), kept in S[keep] with
    its log-scale F_LSR (keep >= 0)."""
    _act(code, WANT_PHI, h, b.A[p], b.A[p], a)
    if keep >= 0:
        _copy(b.S[keep, p], h)
        b.S_ls[keep, p] = b.pf[F_LSR, p]


@njit(**_OPT)
def _next_input(p, b, h1, h2, tv, ss1, ss2, sst, acc, r, jvp, keep, code, a):
    """After a live step: hh1 kept in S[keep] (with F_LS1), the records, the tangent tv
    renormalised (log |t|^2 accumulated as ``acc``), and the next GEMM's input rows
    A = phi(hh1), phi(hh2), phi'(hh1) t."""
    pf, A = b.pf, b.A
    P = b.pi.shape[1]
    if keep >= 0:
        _copy(b.S[keep, p], h1)
        b.S_ls[keep, p] = pf[F_LS1, p]
    _record(p, r, b.res, pf, ss1, ss2, _dot(h1, h2), h1.size, pf[F_LS1, p], jvp, acc)
    if jvp:
        _renormalise(tv, sst)
        pf[F_ACC, p] = acc
        at = A[2 * P + p]
        _act(code, WANT_BOTH, h1, A[p], at, a)
        for i in range(h1.size):
            at[i] = at[i] * tv[i]
    else:
        _act(code, WANT_PHI, h1, A[p], A[p], a)
    _act(code, WANT_PHI, h2, A[P + p], A[P + p], a)


@njit(**_OPT)
def _restart(p, b, slot, h):
    """A segment's restart from a stored hh1 (into ``h``, unless it is S[slot, p] itself):
    A[p] = phi(hh1), F_LSR its log-scale."""
    b.pf[F_LSR, p] = b.S_ls[slot, p]
    _act(b.pi[I_CODE, p], WANT_PHI, h, b.A[p], b.A[p], b.A.dtype.type(b.pf[F_PARAM, p]))


@njit(**_OPT)
def _dphi_stored(p, b, slot):
    """phi'(hh_{t-1}) of a backward step, from the stored hh1 S[slot, p], into Q[p]."""
    d = b.Q[p]
    _act(b.pi[I_CODE, p], WANT_DPHI, b.S[slot, p], d, d, d.dtype.type(b.pf[F_PARAM, p]))
    return d


# ---------------------------------------------------------------- Elman (models.rnn)


@njit(**_OPT)
def _elman_fwd(p, b, drv, t, r, rows, jvp, keep):
    """u_t = s Z phi(hh) + e^-ls (U x_t + b) per trajectory (mlp.advance), renormalised where
    phi is homogeneous; the tangent s Z (phi'(hh1) t); divergence; records; next GEMM input.
    ``rows`` = 1: a recomputed trajectory 1 (log-scale F_LSR, no checks, no records)."""
    pf, pi = b.pf, b.pi
    P = pi.shape[1]
    H, A = b.H, b.A
    n = H.shape[1]
    dtype = H.dtype.type
    s = dtype(pf[F_SCALE, p])
    sb, su, a = pf[F_SB, p], pf[F_SU, p], dtype(pf[F_PARAM, p])
    homog = pi[I_HOMOG, p] != 0
    code = pi[I_CODE, p]
    if rows == 1:
        h = H[p]
        _preact(h, s, b.xi, drv, sb, su, 0.0, math.exp(min(-pf[F_LSR, p], EXP_CAP)))
        ss = _sumsq(h)
        if homog and ss > 0.0:
            rms = math.sqrt(ss / n)
            _divide(h, dtype(rms))
            pf[F_LSR, p] += math.log(rms)
        _recomputed(p, b, h, keep, code, a)
        return
    h1, h2 = H[p], H[P + p]
    _preact(h1, s, b.xi, drv, sb, su, 0.0, math.exp(min(-pf[F_LS1, p], EXP_CAP)))
    _preact(h2, s, b.xi, drv, sb, su, 0.0, math.exp(min(-pf[F_LS2, p], EXP_CAP)))
    ss1, ss2 = _sumsq(h1), _sumsq(h2)
    big = _big(h1, b.limit) + _big(h2, b.limit)
    ok = math.isfinite(ss1) and math.isfinite(ss2)
    if homog:
        ok = ok and ss1 > 0.0 and ss2 > 0.0
    else:
        ok = ok and big == 0
    acc = 0.0
    sst = 0.0
    if jvp:
        tv = H[2 * P + p]
        for i in range(n):
            tv[i] = tv[i] * s
        sst = _sumsq(tv)
        acc = pf[F_ACC, p] + np.log(sst)
        ok = ok and math.isfinite(acc)
    if not ok:
        _die(p, t, pi, pf, (A[p], A[P + p], A[2 * P + p]))
        return
    if homog:
        rms1, rms2 = math.sqrt(ss1 / n), math.sqrt(ss2 / n)
        _divide(h1, dtype(rms1))
        _divide(h2, dtype(rms2))
        pf[F_LS1, p] += math.log(rms1)
        pf[F_LS2, p] += math.log(rms2)
        ss1, ss2 = _sumsq(h1), _sumsq(h2)
    _next_input(p, b, h1, h2, H[2 * P + p], ss1, ss2, sst, acc, r, jvp, keep, code, a)


@njit(**_OPT)
def _elman_start(p, b, slot):
    """A segment's restart from a stored hh1: A[p] = phi(hh1), F_LSR its log-scale."""
    _restart(p, b, slot, b.S[slot, p])


@njit(**_OPT)
def _elman_bwd(p, b, t, r, slot):
    """g_{t-1} = phi'(hh_{t-1}) * (s Z^T g_t) (mlp.cotangent), U = G @ Z given."""
    pf = b.pf
    g, u = b.G[p], b.U[p]
    s = g.dtype.type(pf[F_SCALE, p])
    d = _dphi_stored(p, b, slot)
    for i in range(g.size):
        g[i] = d[i] * (s * u[i])
    _gradient_step(p, t, g, _sumsq(g), pf, b.pi, b.res, r)


# ---------------------------------------------------------------- GRU (models.gru)


@njit(**_OPT)
def _gru_gates_rz(row, h, H, Q, A2, s, xi, drv, sb, su, shift):
    """a_r, a_z in H's row (in place), r, 1-r, z, 1-z into Q's row, A2's row = r * h."""
    n = h.size
    ar = H[row, :n]
    az = H[row, n : 2 * n]
    _preact(ar, s, xi[:n], drv[:n], sb, su, 0.0, 1.0)
    _preact(az, s, xi[n : 2 * n], drv[n : 2 * n], sb, su, shift, 1.0)
    q = Q[row]
    _sigmoid(ar, q[Q_R * n : (Q_R + 1) * n], q[Q_1R * n : (Q_1R + 1) * n])
    _sigmoid(az, q[Q_Z * n : (Q_Z + 1) * n], q[Q_1Z * n : (Q_1Z + 1) * n])
    m = A2[row]
    r = q[Q_R * n : (Q_R + 1) * n]
    for i in range(n):
        m[i] = r[i] * h[i]


@njit(**_OPT)
def _gru_fwd1(p, b, drv, rows, jvp):
    """r_t, z_t of each trajectory row (and dr, dz of the tangent): the second GEMM's input."""
    pf = b.pf
    P = b.pi.shape[1]
    A, H, Q, A2 = b.A, b.H, b.Q, b.A2
    n = A.shape[1]
    dtype = A.dtype.type
    s = dtype(pf[F_SCALE, p])
    sb, su, shift = pf[F_SB, p], pf[F_SU, p], pf[F_SHIFT, p]
    for k in range(rows):
        row = k * P + p
        _gru_gates_rz(row, A[row], H, Q, A2, s, b.xi, drv, sb, su, shift)
    if jvp:
        q = Q[p]
        h, v = A[p], A[2 * P + p]
        da = H[2 * P + p]
        dz = Q[2 * P + p]
        m = A2[2 * P + p]
        for i in range(n):
            dr = q[Q_R * n + i] * q[Q_1R * n + i] * (da[i] * s)
            dz[i] = q[Q_Z * n + i] * q[Q_1Z * n + i] * (da[n + i] * s)
            m[i] = dr * h[i] + q[Q_R * n + i] * v[i]


@njit(**_OPT)
def _gru_candidate(row, H2, Q, s, xi, drv, sb, su, code, a, which):
    """a_n in H2's row (in place), n = phi(a_n) (and phi'(a_n)) into Q's row."""
    n = H2.shape[1]
    an = H2[row]
    _preact(an, s, xi[2 * n : 3 * n], drv[2 * n : 3 * n], sb, su, 0.0, 1.0)
    q = Q[row]
    _act(code, which, an, q[Q_N * n : (Q_N + 1) * n], q[Q_DN * n : (Q_DN + 1) * n], a)


@njit(**_OPT)
def _gru_fwd2(p, b, drv, t, r, rows, jvp, keep, qkeep):
    """h_t = (1 - z) n + z h per trajectory row; the tangent (1-z) dn + z v + (h - n) dz;
    divergence, records (``rows`` = 2), or the store of a recomputed h1 (``rows`` = 1);
    trajectory 1's gate values kept in QS[qkeep] (qkeep >= 0)."""
    pf, pi = b.pf, b.pi
    P = pi.shape[1]
    A, H2, Q = b.A, b.H2, b.Q
    n = A.shape[1]
    dtype = A.dtype.type
    s = dtype(pf[F_SCALE, p])
    sb, su = pf[F_SB, p], pf[F_SU, p]
    code, a = pi[I_CODE, p], dtype(pf[F_PARAM, p])
    for k in range(rows):
        row = k * P + p
        which = WANT_BOTH if ((jvp or qkeep >= 0) and k == 0) else WANT_PHI
        _gru_candidate(row, H2, Q, s, b.xi, drv, sb, su, code, a, which)
    _keep_gates(b, p, qkeep, 6)
    acc = 0.0
    sst = 0.0
    if jvp:
        q = Q[p]
        h, v, dz, dan = A[p], A[2 * P + p], Q[2 * P + p], H2[2 * P + p]
        for i in range(n):
            dn = q[Q_DN * n + i] * (s * dan[i])
            v[i] = q[Q_1Z * n + i] * dn + q[Q_Z * n + i] * v[i] + (h[i] - q[Q_N * n + i]) * dz[i]
        sst = _sumsq(v)
        acc = pf[F_ACC, p] + np.log(sst)
    for k in range(rows):
        row = k * P + p
        h, q = A[row], Q[row]
        for i in range(n):
            h[i] = q[Q_1Z * n + i] * q[Q_N * n + i] + q[Q_Z * n + i] * h[i]
    if keep >= 0:
        _copy(b.S[keep, p], A[p])
    if rows == 1:
        return
    h1, h2 = A[p], A[P + p]
    ss1, ss2 = _sumsq(h1), _sumsq(h2)
    ok = math.isfinite(ss1) and math.isfinite(ss2) and _big(h1, b.limit) + _big(h2, b.limit) == 0
    if jvp:
        ok = ok and math.isfinite(acc)
    if not ok:
        _die(p, t, pi, pf, (A[p], A[P + p], A[2 * P + p]))
        return
    _record(p, r, b.res, pf, ss1, ss2, _dot(h1, h2), n, 0.0, jvp, acc)
    if jvp:
        _renormalise(A[2 * P + p], sst)
        pf[F_ACC, p] = acc


@njit(**_OPT)
def _gru_bwd1(p, b, drv, qslot):
    """Trajectory 1's n, phi'(a_n) (its r, z came from _gru_fwd1), or all its gates kept
    (qslot >= 0); GN = phi'(a_n) (1 - z) g."""
    pf = b.pf
    dtype = b.A.dtype.type
    s = dtype(pf[F_SCALE, p])
    if qslot < 0:
        _gru_candidate(p, b.H2, b.Q, s, b.xi, drv, pf[F_SB, p], pf[F_SU, p], b.pi[I_CODE, p],
                       dtype(pf[F_PARAM, p]), WANT_BOTH)  # fmt: skip
    _gru_gn(p, b, _gates(b, p, qslot))


@njit(**_OPT)
def _gru_gn(p, b, q):
    """GN = phi'(a_n) (1 - z) g, the gate values q of the step."""
    n = b.A.shape[1]
    g, gn = b.G[p], b.GN[p]
    for i in range(n):
        gn[i] = q[Q_DN * n + i] * q[Q_1Z * n + i] * g[i]


@njit(**_OPT)
def _gru_bwd2(p, b, slot, qslot):
    """g_m = s U2 (in place), GB = [r (1-r) h g_m | z (1-z) (h - n) g]."""
    n = b.A.shape[1]
    s = b.A.dtype.type(b.pf[F_SCALE, p])
    q, g, gm, gb, h = _gates(b, p, qslot), b.G[p], b.U2[p], b.GB[p], b.S[slot, p]
    for i in range(n):
        gm[i] = s * gm[i]
        gb[i] = q[Q_R * n + i] * q[Q_1R * n + i] * h[i] * gm[i]
        gb[n + i] = q[Q_Z * n + i] * q[Q_1Z * n + i] * (h[i] - q[Q_N * n + i]) * g[i]


@njit(**_OPT)
def _gru_bwd3(p, b, t, r, qslot, qnext):
    """g_{t-1} = z g + r g_m + s U (gru.cotangent); renormalised, accumulated; then
    (qnext >= 0) the next backward step's GN from its kept gates QS[qnext]: no call of
    its own."""
    n = b.A.shape[1]
    s = b.A.dtype.type(b.pf[F_SCALE, p])
    q, g, gm, u = _gates(b, p, qslot), b.G[p], b.U2[p], b.U[p]
    for i in range(n):
        g[i] = q[Q_Z * n + i] * g[i] + q[Q_R * n + i] * gm[i] + s * u[i]
    _gradient_step(p, t, g, _sumsq(g), b.pf, b.pi, b.res, r)
    if qnext >= 0 and b.pi[I_COLLAPSED, p] == 0:
        _gru_gn(p, b, b.QS[qnext, p])


# ---------------------------------------------------------------- LSTM (models.lstm)


@njit(**_OPT)
def _lstm_gates(row, c, H, Q, s, xi, drv, sb, su, shift, code, a, derivs):
    """Pre-activations in H's row (in place; forget_bias on f), i, f, o and their
    complements, g = phi(a_g), c_t = f c + i g and phi(c_t) into Q's row; with
    ``derivs`` phi'(a_g) and phi'(c_t) too."""
    n = c.size
    hr = H[row]
    q = Q[row]
    for k in range(4):
        _preact(hr[k * n : (k + 1) * n], s, xi[k * n : (k + 1) * n], drv[k * n : (k + 1) * n],
                sb, su, shift if k == 1 else 0.0, 1.0)  # fmt: skip
    _sigmoid(hr[:n], q[Q_I * n : (Q_I + 1) * n], q[Q_1I * n : (Q_1I + 1) * n])
    _sigmoid(hr[n : 2 * n], q[Q_F * n : (Q_F + 1) * n], q[Q_1F * n : (Q_1F + 1) * n])
    _sigmoid(hr[3 * n :], q[Q_O * n : (Q_O + 1) * n], q[Q_1O * n : (Q_1O + 1) * n])
    which = WANT_BOTH if derivs else WANT_PHI
    _act(
        code, which, hr[2 * n : 3 * n], q[Q_G * n : (Q_G + 1) * n], q[Q_DG * n : (Q_DG + 1) * n], a
    )
    cn = q[Q_C * n : (Q_C + 1) * n]
    for i in range(n):
        cn[i] = q[Q_F * n + i] * c[i] + q[Q_I * n + i] * q[Q_G * n + i]
    _act(code, which, cn, q[Q_PC * n : (Q_PC + 1) * n], q[Q_DC * n : (Q_DC + 1) * n], a)


@njit(**_OPT)
def _lstm_fwd(p, b, drv, t, r, rows, jvp, keep, qkeep):
    """c_t = f c + i g, h_t = o phi(c_t) per trajectory row; the tangent (dh, dc) of the
    model's docstring; divergence (h or c), records; or a recomputed (h1, c1) stored;
    trajectory 1's gate values kept in QS[qkeep] (qkeep >= 0)."""
    pf, pi = b.pf, b.pi
    P = pi.shape[1]
    A, X, H, Q = b.A, b.X, b.H, b.Q
    n = A.shape[1]
    dtype = A.dtype.type
    s = dtype(pf[F_SCALE, p])
    sb, su, shift = pf[F_SB, p], pf[F_SU, p], pf[F_SHIFT, p]
    code, a = pi[I_CODE, p], dtype(pf[F_PARAM, p])
    for k in range(rows):
        row = k * P + p
        derivs = (jvp or qkeep >= 0) and k == 0
        _lstm_gates(row, X[row], H, Q, s, b.xi, drv, sb, su, shift, code, a, derivs)
    _keep_gates(b, p, qkeep, 10)
    acc = 0.0
    sst = 0.0
    if jvp:
        q = Q[p]
        c, dh, dc, da = X[p], A[2 * P + p], X[2 * P + p], H[2 * P + p]
        for i in range(n):
            di = q[Q_I * n + i] * q[Q_1I * n + i] * (s * da[i])
            df = q[Q_F * n + i] * q[Q_1F * n + i] * (s * da[n + i])
            dg = q[Q_DG * n + i] * (s * da[2 * n + i])
            do = q[Q_O * n + i] * q[Q_1O * n + i] * (s * da[3 * n + i])
            dcn = df * c[i] + q[Q_F * n + i] * dc[i] + di * q[Q_G * n + i] + q[Q_I * n + i] * dg
            dc[i] = dcn
            dh[i] = do * q[Q_PC * n + i] + q[Q_O * n + i] * q[Q_DC * n + i] * dcn
        sst = _sumsq(dh) + _sumsq(dc)
        acc = pf[F_ACC, p] + np.log(sst)
    big = 0
    for k in range(rows):
        row = k * P + p
        h, c, q = A[row], X[row], Q[row]
        for i in range(n):
            c[i] = q[Q_C * n + i]
            h[i] = q[Q_O * n + i] * q[Q_PC * n + i]
        big += _big(h, b.limit) + _big(c, b.limit)
    if keep >= 0:
        _copy(b.S[keep, p, :n], A[p])
        _copy(b.S[keep, p, n:], X[p])
    if rows == 1:
        return
    h1, h2 = A[p], A[P + p]
    ss1, ss2 = _sumsq(h1), _sumsq(h2)
    ok = math.isfinite(ss1) and math.isfinite(ss2) and big == 0
    ok = ok and math.isfinite(_sumsq(X[p]) + _sumsq(X[P + p]))
    if jvp:
        ok = ok and math.isfinite(acc)
    if not ok:
        _die(p, t, pi, pf, (A[p], A[P + p], A[2 * P + p], X[p], X[P + p], X[2 * P + p]))
        return
    _record(p, r, b.res, pf, ss1, ss2, _dot(h1, h2), n, 0.0, jvp, acc)
    if jvp:
        if sst > 0.0:
            d = dtype(math.sqrt(sst))
            _divide(A[2 * P + p], d)
            _divide(X[2 * P + p], d)
        pf[F_ACC, p] = acc


@njit(**_OPT)
def _lstm_bwd1(p, b, drv, slot, qslot):
    """Trajectory 1's gates at step t from (h, c)_{t-1} (H = h @ Z.T given), or kept
    (qslot >= 0); then e = g_c + o phi'(c_t) g_h and GB = the pre-activations'
    gradients (lstm.cotangent)."""
    pf = b.pf
    n = b.A.shape[1]
    dtype = b.A.dtype.type
    s = dtype(pf[F_SCALE, p])
    c = b.S[slot, p, n:]
    if qslot < 0:
        _lstm_gates(p, c, b.H, b.Q, s, b.xi, drv, pf[F_SB, p], pf[F_SU, p], pf[F_SHIFT, p],
                    b.pi[I_CODE, p], dtype(pf[F_PARAM, p]), True)  # fmt: skip
    _lstm_gb(p, b, c, _gates(b, p, qslot))


@njit(**_OPT)
def _lstm_gb(p, b, c, q):
    """e = g_c + o phi'(c_t) g_h (into Q[p]) and GB, the pre-activations' gradients, from
    the step's gate values q and c_{t-1} (lstm.cotangent)."""
    n = b.A.shape[1]
    g, gb, qe = b.G[p], b.GB[p], b.Q[p]
    for i in range(n):
        gh, gc = g[i], g[n + i]
        e = gc + q[Q_O * n + i] * q[Q_DC * n + i] * gh
        qe[Q_E * n + i] = e
        gb[i] = q[Q_I * n + i] * q[Q_1I * n + i] * q[Q_G * n + i] * e
        gb[n + i] = q[Q_F * n + i] * q[Q_1F * n + i] * c[i] * e
        gb[2 * n + i] = q[Q_DG * n + i] * q[Q_I * n + i] * e
        gb[3 * n + i] = q[Q_O * n + i] * q[Q_1O * n + i] * q[Q_PC * n + i] * gh


@njit(**_OPT)
def _lstm_bwd2(p, b, t, r, qslot, qnext, snext):
    """(g_h, g_c)_{t-1} = (s U, f e), U = GB @ Z; renormalised, accumulated; then
    (qnext >= 0) the next backward step's e and GB from its kept gates QS[qnext] and
    c_{t-2} in S[snext]: no call of its own."""
    n = b.A.shape[1]
    s = b.A.dtype.type(b.pf[F_SCALE, p])
    q, g, u, qe = _gates(b, p, qslot), b.G[p], b.U[p], b.Q[p]
    for i in range(n):
        g[i] = s * u[i]
        g[n + i] = q[Q_F * n + i] * qe[Q_E * n + i]
    _gradient_step(p, t, g, _sumsq(g), b.pf, b.pi, b.res, r)
    if qnext >= 0 and b.pi[I_COLLAPSED, p] == 0:
        _lstm_gb(p, b, b.S[snext, p, n:], b.QS[qnext, p])


# ---------------------------------------------------------------- residual MLP (models.residual)


@njit(**_OPT)
def _residual_row(hh, h, s, alpha, xi, sb, homog, pf, ls_row, p):
    """In place hh = hh + alpha (s h + dtype(xi sb e^-ls)) (residual.step), renormalised
    (log-scale in pf[ls_row, p]) where phi is homogeneous; returns |hh|^2 (float64)."""
    dtype = hh.dtype.type
    n = hh.size
    bs = math.exp(min(-pf[ls_row, p], EXP_CAP))
    for i in range(n):
        hh[i] = hh[i] + alpha * (s * h[i] + dtype((xi[i] * sb) * bs))
    ss = _sumsq(hh)
    if homog and ss > 0.0:
        rms = math.sqrt(ss / n)
        _divide(hh, dtype(rms))
        pf[ls_row, p] += math.log(rms)
        ss = _sumsq(hh)
    return ss


@njit(**_OPT)
def _residual_fwd(p, b, t, r, rows, jvp, keep):
    """h^l = hh + alpha (s Z phi(hh) + e^-ls sqrt(sb2) xi^l) per trajectory row (X), renormalised
    where phi is homogeneous; the tangent t + alpha s Z (phi'(hh1) t); divergence, records;
    the next GEMM input. ``rows`` = 1: a recomputed hh1 (log-scale F_LSR) only."""
    pf, pi = b.pf, b.pi
    P = pi.shape[1]
    H, A, X = b.H, b.A, b.X
    n = H.shape[1]
    dtype = H.dtype.type
    s, alpha = dtype(pf[F_SCALE, p]), dtype(pf[F_ALPHA, p])
    sb, a = pf[F_SB, p], dtype(pf[F_PARAM, p])
    homog = pi[I_HOMOG, p] != 0
    code = pi[I_CODE, p]
    xi = b.xis[t % 2]
    if rows == 1:
        _residual_row(X[p], H[p], s, alpha, xi, sb, homog, pf, F_LSR, p)
        _recomputed(p, b, X[p], keep, code, a)
        return
    ss1 = _residual_row(X[p], H[p], s, alpha, xi, sb, homog, pf, F_LS1, p)
    ss2 = _residual_row(X[P + p], H[P + p], s, alpha, xi, sb, homog, pf, F_LS2, p)
    big = _big(X[p], b.limit) + _big(X[P + p], b.limit)
    ok = math.isfinite(ss1) and math.isfinite(ss2) and big == 0
    if homog:
        ok = ok and ss1 > 0.0 and ss2 > 0.0
    acc = 0.0
    sst = 0.0
    if jvp:
        tv, ht = X[2 * P + p], H[2 * P + p]
        sa = alpha * s
        for i in range(n):
            tv[i] = tv[i] + sa * ht[i]
        sst = _sumsq(tv)
        acc = pf[F_ACC, p] + np.log(sst)
        ok = ok and math.isfinite(acc)
    if not ok:
        _die(p, t, pi, pf, (A[p], A[P + p], A[2 * P + p], X[p], X[P + p], X[2 * P + p]))
        return
    _next_input(p, b, X[p], X[P + p], X[2 * P + p], ss1, ss2, sst, acc, r, jvp, keep, code, a)


@njit(**_OPT)
def _residual_start(p, b, slot):
    """A recomputed segment's start: hh1 = S[slot] (its log-scale), A = phi(hh1)."""
    _copy(b.X[p], b.S[slot, p])
    _restart(p, b, slot, b.X[p])


@njit(**_OPT)
def _residual_bwd(p, b, t, r, slot):
    """g^{l-1} = g^l + alpha phi'(hh^{l-1}) (s Z^T g^l) (residual.cotangent), U = G @ Z given."""
    pf = b.pf
    g, u = b.G[p], b.U[p]
    dtype = g.dtype.type
    s, alpha = dtype(pf[F_SCALE, p]), dtype(pf[F_ALPHA, p])
    d = _dphi_stored(p, b, slot)
    for i in range(g.size):
        g[i] = g[i] + alpha * d[i] * (s * u[i])
    _gradient_step(p, t, g, _sumsq(g), pf, b.pi, b.res, r)


# ---------------------------------------------------------------- small widths: whole passes


# What a fused-pass op row (numba_rnn lowers engines.schedule's ops to them) does.
OP_FWD = 0  # forward step ``layer`` (both trajectories, tangent rows when jvp)
OP_RESTART = 1  # a segment's start (``slot``: its state's slot; ``layer`` 0: the input)
OP_RECOMPUTE = 2  # trajectory 1 at ``layer`` from S[slot] into S[keep]
OP_BACKWARD = 3  # g_{layer-1} from g_layer, trajectory 1's state at layer-1 in S[slot]
# Columns of an op row (C_QSLOT: the gate store's slot a FWD / RECOMPUTE fills, or a
# BACKWARD reads; -1: none, a backward step recomputes its gates).
C_CODE, C_LAYER, C_RECORD, C_JVP, C_SLOT, C_KEEP, C_QSLOT = range(7)
N_C = 7
# Architectures of the fused pass.
ARCH_ELMAN, ARCH_GRU, ARCH_LSTM = 0, 1, 2


@njit(**_RED)
def _mv(Z, x, y):
    """y = Z @ x, Z (M, K) C-order: four rows per load of x, sums in the run's dtype."""
    m, k = Z.shape
    zero = y.dtype.type(0.0)
    i = 0
    while i + 4 <= m:
        s0 = s1 = s2 = s3 = zero
        for j in range(k):
            v = x[j]
            s0 += Z[i, j] * v
            s1 += Z[i + 1, j] * v
            s2 += Z[i + 2, j] * v
            s3 += Z[i + 3, j] * v
        y[i], y[i + 1], y[i + 2], y[i + 3] = s0, s1, s2, s3
        i += 4
    while i < m:
        s0 = zero
        for j in range(k):
            s0 += Z[i, j] * x[j]
        y[i] = s0
        i += 1


@njit(**_RED)
def _vm(Z, g, u):
    """u = Z^T g, Z (M, K) C-order: u accumulates g_j Z[j, :] row by row."""
    m, k = Z.shape
    for j in range(k):
        u[j] = 0
    for i in range(m):
        gi = g[i]
        for j in range(k):
            u[j] += gi * Z[i, j]


@njit(**_OPT)
def _load(arch, p, b, slot):
    """Trajectory 1's stored state at S[slot] into its rows (GRU, LSTM)."""
    n = b.A.shape[1]
    if arch == ARCH_ELMAN:
        return
    _copy(b.A[p], b.S[slot, p, :n])
    if arch == ARCH_LSTM:
        _copy(b.X[p], b.S[slot, p, n:])


@njit(**_OPT)
def _fused_op(arch, o, p, b, Z, D):
    """One op row ``o`` for point p alone: its matrix-vector products (Z hot in cache), then
    the same per-point epilogues as the GEMM path's."""
    P = b.pi.shape[1]
    n = b.A.shape[1]
    code, t, r, jvp = o[C_CODE], o[C_LAYER], o[C_RECORD], o[C_JVP] != 0
    slot, keep, qslot = o[C_SLOT], o[C_KEEP], o[C_QSLOT]
    drv = D[max(t - 1, 0)]
    if code == OP_RESTART:
        if arch == ARCH_ELMAN:
            if t == 0:
                b.pf[F_LSR, p] = 0.0
                _copy(b.A[p], b.S[0, p])
            else:
                _elman_start(p, b, slot)
        return
    if code == OP_BACKWARD and b.pi[I_COLLAPSED, p] != 0:
        return
    rows = 2 if code == OP_FWD else 1
    kept = code == OP_BACKWARD and qslot >= 0  # the gates are in QS: no products forward
    if code != OP_FWD and not kept:
        _load(arch, p, b, slot)
    tangent = code == OP_FWD and jvp
    if arch == ARCH_ELMAN:
        if code == OP_BACKWARD:
            _vm(Z, b.G[p], b.U[p])
            _elman_bwd(p, b, t, r, slot)
            return
        for k in range(rows + tangent):
            _mv(Z, b.A[k * P + p], b.H[k * P + p])
        _elman_fwd(p, b, drv, t, r, rows, tangent, keep)
    elif arch == ARCH_GRU:
        Zrz, Zn = Z[: 2 * n], Z[2 * n :]
        if not kept:
            for k in range(rows + tangent):
                _mv(Zrz, b.A[k * P + p], b.H[k * P + p])
            _gru_fwd1(p, b, drv, rows, tangent)
            for k in range(rows + tangent):
                _mv(Zn, b.A2[k * P + p], b.H2[k * P + p])
        if code != OP_BACKWARD:
            _gru_fwd2(p, b, drv, t, r, rows, tangent, keep, qslot)
            return
        _gru_bwd1(p, b, drv, qslot)
        _vm(Zn, b.GN[p], b.U2[p])
        _gru_bwd2(p, b, slot, qslot)
        _vm(Zrz, b.GB[p], b.U[p])
        _gru_bwd3(p, b, t, r, qslot, -1)
    else:
        if not kept:
            for k in range(rows + tangent):
                _mv(Z, b.A[k * P + p], b.H[k * P + p])
        if code != OP_BACKWARD:
            _lstm_fwd(p, b, drv, t, r, rows, tangent, keep, qslot)
            return
        _lstm_bwd1(p, b, drv, slot, qslot)
        _vm(Z, b.GB[p], b.U[p])
        _lstm_bwd2(p, b, t, r, qslot, -1, -1)


@njit(**_PAR)
def run_fused(arch, b, ops, first, last, Z, D, lanes):
    """Op rows first..last-1 for every point, each lane taking its points (p = lane,
    lane + lanes, ...) through all of them in turn: no synchronisation between steps,
    the tied Z (and the point's rows) kept hot in cache across the steps. ``D``: the
    drives Z_U x_t / sqrt(N) of every step, (T, G N) float64."""
    P = b.pi.shape[1]
    for lu in prange(lanes):
        for p in range(lu, P, lanes):
            for i in range(first, last):
                if b.pi[I_DEAD, p] != 0:
                    break
                _fused_op(arch, ops[i], p, b, Z, D)


# ---------------------------------------------------------------- the parallel entry point


@njit(**_OPT)
def _point(op, p, b, drv, t, r, rows, jvp, slot, keep, qslot):
    if op == E_FWD:
        _elman_fwd(p, b, drv, t, r, rows, jvp, keep)
    elif op == E_START:
        _elman_start(p, b, slot)
    elif op == E_BWD:
        _elman_bwd(p, b, t, r, slot)
    elif op == G_FWD1:
        _gru_fwd1(p, b, drv, rows, jvp)
    elif op == G_FWD2:
        _gru_fwd2(p, b, drv, t, r, rows, jvp, keep, qslot)
    elif op == G_BWD1:
        _gru_bwd1(p, b, drv, qslot)
    elif op == G_BWD2:
        _gru_bwd2(p, b, slot, qslot)
    elif op == G_BWD3:
        _gru_bwd3(p, b, t, r, qslot, keep)
    elif op == L_FWD:
        _lstm_fwd(p, b, drv, t, r, rows, jvp, keep, qslot)
    elif op == L_BWD1:
        _lstm_bwd1(p, b, drv, slot, qslot)
    elif op == L_BWD2:
        _lstm_bwd2(p, b, t, r, qslot, keep, slot)
    elif op == R_FWD:
        _residual_fwd(p, b, t, r, rows, jvp, keep)
    elif op == R_START:
        _residual_start(p, b, slot)
    elif op == R_BWD:
        _residual_bwd(p, b, t, r, slot)


@njit(**_PAR)
def run(op, b, drv, t, r, rows, jvp, slot, keep, qslot, lanes, nxt, nxt_slot):
    """One epilogue ``op`` of step ``t`` for every live point, on ``lanes`` threads
    (point p = lane, lane + lanes, ...: activation groups are contiguous, so striding
    spreads each one's cost). Backward ops skip collapsed points too. ``b``:
    numba_rnn.RnnBuffers; ``drv``: the step's drive Z_U x_t / sqrt(N), (G N,) float64;
    ``qslot``: the gate store's slot a forward step fills or a backward step reads.
    Then, on the same threads (nxt > 0, residual net), each lane's share of the next
    GEMM's Z^nxt into Zs[nxt_slot] and xi^nxt into xis[nxt % 2] (numba_normals, the
    counter's numbers bit for bit): generation overlaps the epilogue, no pass of its own."""
    P = b.pi.shape[1]
    backward = op == E_BWD or op == G_BWD1 or op == G_BWD2 or op == G_BWD3
    backward = backward or op == L_BWD1 or op == L_BWD2 or op == R_BWD
    for lu in prange(lanes):
        for p in range(lu, P, lanes):
            if b.pi[I_DEAD, p] != 0:
                continue
            if backward and b.pi[I_COLLAPSED, p] != 0:
                continue
            _point(op, p, b, drv, t, r, rows, jvp, slot, keep, qslot)
        lane = np.int64(lu)
        xi = b.xis[nxt % 2]
        fill_share(b.Zs[nxt_slot], xi, nxt, True, b.keys, b.wbuf[lane], b.obuf[lane], lane, lanes)


@njit(**_PAR)
def fill_steps(X, first, sample, stream, k0, k1, lanes):
    """X[j] = rng.normals(seed, sample, first + j, stream, N) for every row j (the input
    sequence x_t of a drive block), bit for bit, rows shared by the lanes: one parallel
    call for a block instead of one per step."""
    B, n = X.shape
    chunks = ((n + 3) // 4 + CHUNK - 1) // CHUNK
    for lu in prange(lanes):
        words = np.empty((4, CHUNK), dtype=np.uint64)
        values = np.empty((SCRATCH_ROWS, CHUNK))
        for j in range(lu, B, lanes):
            for c in range(chunks):
                _fill_chunk(X[j], c, n, np.uint64(first + j), sample, stream, k0, k1, words,
                            values)  # fmt: skip
