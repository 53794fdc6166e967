"""The mean-field theory on a whole (sigma_w2, sigma_b2) grid at once, float64.

``grid(act, param, sigma_w2, sigma_b2, q0)`` gives what ``meanfield.point`` gives at
every grid point (q*, chi1, c*, chi_c, xi_q, xi_c, plus log chi1), with the
conventions of ``meanfield`` (read its docstring), at a small fraction of the cost:
a 40 x 40 tanh grid takes well under a second instead of about a minute.

* q*, the length map, chi1, the length map's slope (xi_q) and the depth scales are
  computed per point with ``meanfield``'s own helpers (about 0.3 ms a point), so they
  agree with it to the last bit. Divergence of q^l is monotone in both variances (a
  larger length map reaches larger iterates), so a point dominated by one where
  ``meanfield`` raised NoFixedPoint (sigma_w2 and sigma_b2 both at least as large)
  is not computed: it has no fixed point either.
* c* and chi_c in the chaotic phase (chi1 > 1, q* > 0) are what makes ``meanfield``
  slow: every point needs ~30 nested bivariate quadratures. Here the correlation map
  at q is Mehler's expansion

      E[phi(u1) phi(u2)] = sum_n A_n^2 c^n,   A_n = E[phi(sqrt(q) z) h_n(z)],

  h_n = He_n / sqrt(n!) the orthonormal Hermite polynomials, and likewise
  E[phi'(u1) phi'(u2)] = sum_n B_n^2 c^n. The A_n, B_n (n <= N) come from one matrix
  product per grid: the split Gauss-Legendre rule of ``gaussian`` on z nodes shared
  by every point (a kink not at 0 gets per-point panels). Every term is >= 0, so for
  0 <= c <= 1 the truncation error is at most c^(N+1) times the known tail
  E[phi^2] - sum_n A_n^2; the series is used for c up to the per-point threshold
  where that bound (and the one for chi_c) is below TAIL_TOL. Smooth activations at
  moderate q (tanh, erf, ... on the usual grids) have tails at rounding level, so
  the series is exact on all of [0, 1]; where it falls short, a second pass with
  more terms (N_MEHLER) covers most of the rest.
* Where c* lies above that threshold (kinked activations or a large q, close to the
  edge of chaos), the map is evaluated by conditioning, with the panels of
  ``gaussian.expect2`` (10 nodes a panel instead of 20), vectorised over those
  points.
* The root of c_map(c) - c in [0, 1) is found with a safeguarded Newton iteration on
  h = (c_map(c) - c) / (1 - c) in u = 1 - c, or in u = sqrt(1 - c) where phi' jumps
  (the map then has a (1 - c)^(3/2) term): h is close to linear in u, so points
  close to the edge of chaos (c* -> 1, where c_map - c has a near-double root) take
  few steps. The series' own root is a lower bound of c* (every dropped term is
  >= 0) and starts the quadrature branch.

Agreement with ``meanfield`` (tests/test_theory_grid.py): q*, chi1, xi_q exactly;
c* and chi_c to ~1e-12. Close to the edge of chaos both are limited by rounding,
not by quadrature: c_map - c is known to ~1e-16, so c* only to ~1e-16 / (1 - chi_c),
and xi_c = -1/log(chi_c) magnifies that by another 1/(1 - chi_c). Within ~1e-4
(relative, in sigma_w2) of the critical line, xi_c from here and from ``meanfield``
(and from ``meanfield`` with finer quadrature) differ by 1e-6 relative and more.
"""

import math

import numpy as np
from numpy.polynomial.legendre import leggauss

from vxsim.errors import VxsimError
from vxsim.theory import gaussian, meanfield

N_MEHLER = (300, 1500)  # terms of the series: a first pass, then where it falls short
TAIL_TOL = 1e-14
C_ONE = 1e-14  # meanfield: a chaotic c* closer to 1 than this is 1
NEWTON_MAXITER = 100
NEWTON_POLISH = 1e-9
C_XTOL = 1e-15

# shared z nodes of the Hermite projections: uniform panels (small enough to resolve
# h_N's oscillations) out to gaussian.Z_MAX, a geometric ladder towards 0 for large q
_H_STEP = 0.5
_H_LADDER_SCALE = 0.05
_H_CHUNK = 2_000_000  # array entries per block

# conditioning rule (the high-c branch)
_C_NGL = 10
_C_T, _C_W = leggauss(_C_NGL)
_C_CHUNK = 2_000_000

KEYS = ("q_star", "chi1", "log_chi1", "c_star", "chi_c", "xi_q", "xi_c")


def grid(act, param, sigma_w2, sigma_b2, q0=1.0):
    """The mean-field theory at every point of the grid sigma_w2 x sigma_b2.

    ``act``, ``param``: the activation as in ``meanfield`` (an Activation or a label
    such as "tanh" or "leaky_relu(0.2)"; ``param`` None means the default or the
    label's value). ``sigma_w2`` (n_w), ``sigma_b2`` (n_b): 1-d arrays of finite
    variances >= 0. ``q0``: the input's q^0, from which q* is reached.

    Returns a dict of float64 arrays of shape (n_w, n_b): ``q_star`` (NaN where
    ``meanfield`` raises NoFixedPoint), ``chi1`` and ``log_chi1`` (for homogeneous
    activations sigma_w2 E[phi'(z)^2], the same at every q, so given also where q*
    is infinite; NaN there otherwise), ``c_star``, ``chi_c``, ``xi_q`` and ``xi_c``
    (NaN where there is no q*; c* = 1 and chi_c = chi1 in the ordered phase
    chi1 <= 1 and at q* = 0; xi = inf where chi >= 1).
    """
    fa = meanfield._resolve(act, param)
    sw = _axis("sigma_w2", sigma_w2)
    sb = _axis("sigma_b2", sigma_b2)
    q0 = meanfield._finite("q0", q0)
    shape = (sw.size, sb.size)
    out = {key: np.full(shape, np.nan) for key in KEYS}
    q = _q_stars(fa, sw, sb, q0)
    out["q_star"] = q

    SW = np.broadcast_to(sw[:, None], shape)
    SB = np.broadcast_to(sb[None, :], shape)
    has = np.isfinite(q)
    idx = np.nonzero(has)
    sw_p, sb_p, q_p = SW[idx], SB[idx], q[idx]
    n = sw_p.size
    e_phi2, e_dphi2, chi_q = np.empty(n), np.empty(n), np.empty(n)
    phi2, dphi2 = meanfield._square(fa.phi), meanfield._square(fa.dphi)
    for k in range(n):
        e_phi2[k] = gaussian.expect(phi2, q_p[k], fa.kinks)
        e_dphi2[k] = meanfield._expect(fa, dphi2, q_p[k])
        chi_q[k] = meanfield._chi_q(fa, sw_p[k], q_p[k])
    chi1 = sw_p * e_dphi2  # meanfield._chi1
    q_next = sw_p * e_phi2 + sb_p  # meanfield._length_map

    c_star = np.ones(n)
    chi_c = chi1.copy()
    chaotic = (chi1 > 1.0) & (q_p > 0.0)
    if np.any(chaotic):
        args = (v[chaotic] for v in (sw_p, sb_p, q_p, q_next, e_phi2, e_dphi2))
        c_star[chaotic], chi_c[chaotic] = _chaotic(fa, *args)

    out["chi1"][idx] = chi1
    out["c_star"][idx] = c_star
    out["chi_c"][idx] = chi_c
    out["xi_q"][idx] = [meanfield.depth_scale(x) for x in chi_q]
    out["xi_c"][idx] = [meanfield.depth_scale(x) for x in chi_c]
    if fa.act.homogeneous:
        # chi1 = sigma_w2 E[phi'(z)^2] at every q: also where q^l diverges
        none = ~has
        out["chi1"][none] = SW[none] * meanfield._slope2(fa)
    with np.errstate(divide="ignore"):
        out["log_chi1"] = np.log(out["chi1"])
    return out


def _axis(name, values):
    arr = np.asarray(values, dtype=float)
    if arr.ndim != 1:
        raise VxsimError(f"{name} must be a 1-d array, got shape {arr.shape}")
    bad = ~np.isfinite(arr) | (arr < 0.0)
    if np.any(bad):
        raise VxsimError(f"{name} must be finite and >= 0, got {float(arr[bad][0])!r}")
    return arr


# ------------------------------------------------------------------------------ q*


def _q_stars(fa, sw, sb, q0):
    """meanfield._q_star at every point; NaN where it raises NoFixedPoint.

    A point whose sigma_w2 and sigma_b2 are both >= those of a point without a fixed
    point has none either (the length map is larger there and increasing in q, so
    its iterates from q0 are larger), and is skipped.
    """
    q = np.full((sw.size, sb.size), np.nan)
    # the smallest sigma_w2 without a fixed point at any sigma_b2 done so far (all of
    # them <= the current one)
    sw_none = math.inf
    for j in np.argsort(sb, kind="stable"):
        for i in np.argsort(sw, kind="stable"):
            if sw[i] >= sw_none:
                break
            try:
                q[i, j] = meanfield._q_star(fa, float(sw[i]), float(sb[j]), q0)
            except meanfield.NoFixedPoint:
                sw_none = sw[i]
                break
    return q


# ------------------------------------------------------------------ c* and chi_c


def _chaotic(fa, sw, sb, q, q_next, e_phi2, e_dphi2):
    """c* and chi_c = sigma_w2 E[phi'(u1) phi'(u2)] at c* for chaotic points (arrays).

    Same root as meanfield._c_star: 0 where c_map(0) <= 0, else the root of
    c_map(c) - c in (0, 1), 1 when that is within C_ONE of 1.
    """
    n = sw.size
    r = np.sqrt(q)
    a_map = sw / q_next  # c_map(c) = a_map * E[phi(u1) phi(u2)] + b_map
    b_map = sb / q_next
    slope_k = q * a_map  # c_map'(c) = slope_k * E[phi'(u1) phi'(u2)]
    # h(t) = (c_map(c) - c) / t^2 with t = sqrt(1 - c): h(0+) = 1 - c_map'(1) < 0
    h_zero = 1.0 - slope_k * e_dphi2
    c_star = np.zeros(n)
    chi_c = np.empty(n)
    power = _root_power(fa)
    # brackets in c: c_map(c) - c >= 0 at c_pos (h there h_pos), < 0 at c_neg
    c_pos, h_pos = np.zeros(n), np.empty(n)

    def solve(ids, rule, c_neg, h_neg, c0=None):
        def evaluate(sub, c):
            k = ids[sub]
            e, d = rule(sub, c)
            return a_map[k] * e + b_map[k], slope_k[k] * d, sw[k] * d

        def u(c):
            return (1.0 - c) ** (1.0 / power)

        u0 = None if c0 is None else u(c0)
        return _solve(evaluate, power, u(c_neg), h_neg, u(c_pos[ids]), h_pos[ids], u0)

    rest = np.arange(n)
    for stage, nt in enumerate(N_MEHLER):
        A, B = _hermite_coefficients(fa, r[rest], nt)
        a2, b2 = A * A, B * B
        if stage == 0:
            # c = 0: c_map(0) <= 0 gives c* = 0 (odd activations at sigma_b2 = 0, where
            # quadrature gives E[phi] = 0 or ~1e-18, as its summation order falls)
            g0 = a_map * a2[:, 0] + b_map
            chi_c[:] = sw * b2[:, 0]
            h_pos[:] = g0
            keep = g0 > 0.0
            rest, a2, b2 = rest[keep], a2[keep], b2[keep]
            if rest.size == 0:
                break

        def series(sub, c, a2=a2, b2=b2):  # the points still open (rest)
            return _power_series(a2[sub], c), _power_series(b2[sub], c)

        k = rest
        # every term of the series is >= 0: for 0 <= c <= 1 the truncation error is
        # at most c^(nt + 1) times its value at c = 1, known from the 1-d integrals
        tail_a = np.abs(e_phi2[k] - a2.sum(axis=1)) + 1e-16 * e_phi2[k]
        tail_b = np.abs(e_dphi2[k] - b2.sum(axis=1)) + 1e-16 * e_dphi2[k]
        with np.errstate(divide="ignore"):
            log_thr = np.minimum(
                np.log(TAIL_TOL / (a_map[k] * tail_a)), np.log(TAIL_TOL / (sw[k] * tail_b))
            )
        thr = np.exp(np.minimum(log_thr / (nt + 1), 0.0))
        e_thr, _ = series(slice(None), thr)
        g_thr = a_map[k] * e_thr + b_map[k] - thr
        with np.errstate(divide="ignore", invalid="ignore"):
            h_thr = g_thr / (1.0 - thr) ** (1.0 / power)
        low = (thr >= 1.0) | (g_thr < 0.0)
        if np.any(low):
            sub = np.nonzero(low)[0]
            c_neg = np.minimum(thr[sub], 1.0)
            h_neg = np.where(thr[sub] < 1.0, h_thr[sub], h_zero[k[sub]])

            def rule(s, c, sub=sub, series=series):
                return series(sub[s], c)

            c_star[k[sub]], chi_c[k[sub]] = solve(k[sub], rule, c_neg, h_neg)
        high = ~low & (thr > c_pos[k])
        c_pos[k[high]], h_pos[k[high]] = thr[high], h_thr[high]
        rest, a2, b2 = k[~low], a2[~low], b2[~low]
        if rest.size == 0:
            break
        if stage == len(N_MEHLER) - 1:
            # the truncated series is below the map, so its root is at or below c*:
            # a bracket end, and the first guess, for the quadrature below
            def rule(s, c, series=series):
                return series(s, c)

            c_trunc, _ = solve(rest, rule, np.ones(rest.size), h_zero[rest])
            better = (c_trunc < 1.0) & (c_trunc > c_pos[rest])
            c_pos[rest[better]] = c_trunc[better]
            h_pos[rest[better]] = 0.0

    if rest.size:

        def conditioned(s, c):
            pairs = ((fa.phi, fa.phi), (fa.dphi, fa.dphi))
            return _expect2_many(pairs, r[rest[s]], c, fa.kinks)

        c_star[rest], chi_c[rest] = solve(
            rest, conditioned, np.ones(rest.size), h_zero[rest], c0=c_pos[rest]
        )

    one = 1.0 - c_star < C_ONE
    c_star[one] = 1.0
    chi_c[one] = sw[one] * e_dphi2[one]
    return c_star, chi_c


def _power_series(coef, c):
    """sum_n coef[:, n] c^n for each row, 0 <= c <= 1."""
    with np.errstate(divide="ignore", invalid="ignore"):
        powers = np.exp(np.log(c)[:, None] * np.arange(coef.shape[1]))
    powers[:, 0] = 1.0
    return np.einsum("pn,pn->p", coef, powers)


def _solve(evaluate, power, u_lo, h_lo, u_hi, h_hi, u0=None):
    """Root c = 1 - u^power of c_map(c) - c, per point, by safeguarded Newton in u.

    h(u) = (c_map(c) - c) / u^power changes sign once in [u_lo, u_hi]:
    h(u_lo) = h_lo < 0 <= h(u_hi) = h_hi (u_lo = 0 stands for u -> 0+, where
    h -> 1 - c_map'(1)). With u = (1 - c)^(1/power) chosen so that h is close to
    linear in u (``_root_power``), Newton's method takes few steps even where c* is
    close to 1 and c_map - c has a near-double root. ``u0``: first guesses (default:
    linear interpolation of h). ``evaluate(sub, c)`` gives (c_map, c_map', chi_c) at
    c for the points ``sub``. Returns (c*, chi_c), both from the last evaluation:
    one more after the Newton step fell below NEWTON_POLISH (so that its error is of
    the order of the step squared), or the one whose step was below C_XTOL.
    """
    n = u_lo.size
    lo, hi = u_lo.copy(), u_hi.copy()
    if u0 is None:
        span = h_hi - h_lo
        u0 = lo - h_lo * (hi - lo) / np.where(span > 0.0, span, 1.0)
    u = np.where((u0 > lo) & (u0 <= hi), u0, 0.5 * (lo + hi))
    c_out, chi_out = np.full(n, np.nan), np.full(n, np.nan)
    last = np.zeros(n, dtype=bool)
    active = np.arange(n)
    for _ in range(NEWTON_MAXITER):
        if active.size == 0:
            break
        ua = u[active]
        eps = ua**power
        c = 1.0 - eps
        cmap, slope, chi = evaluate(active, c)
        g = cmap - c
        c_out[active], chi_out[active] = c, chi
        neg = g < 0.0
        lo[active] = np.where(neg, ua, lo[active])
        hi[active] = np.where(neg, hi[active], ua)
        # h = g / u^p, h' = -p (g' u^p + g) / u^(p + 1) with g' = c_map' - 1
        with np.errstate(divide="ignore", invalid="ignore"):
            un = ua + g * ua / (power * ((slope - 1.0) * eps + g))
        la, ha = lo[active], hi[active]
        bad = ~((un > la) & (un < ha)) | ~np.isfinite(un)
        un = np.where(bad, 0.5 * (la + ha), un)
        dc = np.abs(un**power - eps)
        done = last[active] | (g == 0.0) | (dc <= C_XTOL) | (ha - la <= 1e-300)
        last[active] = ~bad & (dc <= NEWTON_POLISH)
        u[active] = un
        active = active[~done]
    return c_out, chi_out


def _root_power(fa):
    """The power p in c = 1 - u^p for _solve.

    Near c = 1 the map has a (1 - c)^(3/2) term where phi' jumps (ReLU-like kinks),
    so h is close to linear in u = sqrt(1 - c); otherwise its leading terms are
    1, (1 - c), (1 - c)^(3/2)..., close to linear in u = 1 - c.
    """
    for k in fa.kinks:
        up = fa.at(fa.dphi, np.nextafter(k, math.inf))
        down = fa.at(fa.dphi, np.nextafter(k, -math.inf))
        if up != down:
            return 2.0
    return 1.0


# --------------------------------------------------------- Hermite coefficients


def _shared_edges(r_max):
    """Panel edges in z shared by all points: uniform steps and a ladder towards 0."""
    steps = np.arange(_H_STEP, gaussian.Z_MAX + 0.5 * _H_STEP, _H_STEP)
    j_max = max(3, min(200, math.ceil(math.log2(max(r_max, 1e-300) / _H_LADDER_SCALE))))
    ladder = 2.0 ** -np.arange(3.0, j_max + 1.0)
    pos = np.concatenate([ladder[::-1], steps])
    return np.concatenate([-pos[::-1], [0.0], pos])


def _hermite_table(z, nt):
    """h_n(z) = He_n(z) / sqrt(n!) for n = 0..nt, shape (nt + 1, z.size)."""
    H = np.empty((nt + 1, z.size))
    H[0] = 1.0
    if nt >= 1:
        H[1] = z
    for k in range(1, nt):
        H[k + 1] = (z * H[k] - math.sqrt(k) * H[k - 1]) / math.sqrt(k + 1)
    return H


def _hermite_coefficients(fa, r, nt):
    """A[p, n] = E[phi(r_p z) h_n(z)] and B[p, n] = E[phi'(r_p z) h_n(z)], n = 0..nt."""
    edges = _shared_edges(float(np.max(r)))
    z, w = gaussian._split_nodes(edges)
    H = _hermite_table(z, nt)
    n_gl = z.size // (edges.size - 1)
    zx, wx, mask = _kink_panels(fa, r, edges, n_gl)
    A = np.empty((r.size, nt + 1))
    B = np.empty((r.size, nt + 1))
    block = max(1, _H_CHUNK // z.size)
    for s in range(0, r.size, block):
        sl = slice(s, s + block)
        x = r[sl, None] * z[None, :]
        W = w[None, :] if mask is None else w[None, :] * mask[sl]
        # einsum's own loops, not a BLAS GEMM: its bits would follow OMP_NUM_THREADS
        A[sl] = np.einsum("pz,nz->pn", fa.phi(x) * W, H)
        B[sl] = np.einsum("pz,nz->pn", fa.dphi(x) * W, H)
    if zx is not None:
        # the panels split at kinks, with h_n by recurrence on their nodes
        x = r[:, None] * zx
        fx, dx = fa.phi(x) * wx, fa.dphi(x) * wx
        h_prev, h = np.zeros_like(zx), np.ones_like(zx)
        for k in range(nt + 1):
            A[:, k] += np.sum(fx * h, axis=1)
            B[:, k] += np.sum(dx * h, axis=1)
            h_prev, h = h, (zx * h - math.sqrt(k) * h_prev) / math.sqrt(k + 1)
    return A, B


def _kink_panels(fa, r, edges, n_gl):
    """Per-point panels for kinks that are not edges of the shared rule.

    Returns (z, w, mask): extra nodes and weights (P, M), zero-padded, and a (P, nodes)
    mask that removes the shared panels they replace; (None, None, None) when every
    kink falls on a shared edge (a kink at 0, or none).
    """
    kinks = [k for k in fa.kinks if k != 0.0]
    if not kinks:
        return None, None, None
    n_panels = edges.size - 1
    mask = np.ones((r.size, n_panels))
    rows = []
    for p, rp in enumerate(r):
        inside = {}
        for k in kinks:
            zk = k / rp
            if not -gaussian.Z_MAX < zk < gaussian.Z_MAX:
                continue
            j = int(np.searchsorted(edges, zk, side="right")) - 1
            if edges[j] == zk:
                continue
            inside.setdefault(j, []).append(zk)
        zs, ws = [], []
        for j, zks in inside.items():
            mask[p, j] = 0.0
            sub = np.array([edges[j], *sorted(zks), edges[j + 1]])
            zz, ww = gaussian._split_nodes(sub)
            zs.append(zz)
            ws.append(ww)
        rows.append((np.concatenate(zs), np.concatenate(ws)) if zs else (np.zeros(0),) * 2)
    width = max(zz.size for zz, _ in rows)
    if width == 0:
        return None, None, None
    zx, wx = np.zeros((r.size, width)), np.zeros((r.size, width))
    for p, (zz, ww) in enumerate(rows):
        zx[p, : zz.size], wx[p, : ww.size] = zz, ww
    return zx, wx, np.repeat(mask, n_gl, axis=1)


# ------------------------------------------------------- conditioning (high c)


def _split_nodes(zb):
    """gaussian._split_nodes with the _C_NGL-point rule."""
    a, b = zb[..., :-1, None], zb[..., 1:, None]
    half = 0.5 * (b - a)
    z = 0.5 * (a + b) + half * _C_T
    w = half * _C_W * np.exp(-0.5 * z * z) * gaussian.INV_SQRT_2PI
    shape = zb.shape[:-1] + (-1,)
    return z.reshape(shape), w.reshape(shape)


def _expect2_many(pairs, r, c, kinks):
    """E[f(u1) g(u2)] for each (f, g) in ``pairs``, u1, u2 ~ N(0, r^2), correlation c.

    Vectorised over points (arrays r, c with 0 < c < 1); the rule of
    gaussian.expect2 (conditioning on u1, panels at the kinks and around g's
    smoothed kink down to its width s/c) with _C_NGL-point panels.
    """
    r = np.asarray(r, dtype=float)
    c = np.asarray(c, dtype=float)
    out = [np.empty(r.size) for _ in pairs]
    if r.size == 0:
        return out
    # sizes of one point's rule, for blocking
    n_out = (gaussian._Z_LADDER.size + 22 * len(kinks) + gaussian._X_LADDER.size) * _C_NGL
    n_in = (gaussian._Z_LADDER.size + len(kinks) + gaussian._X_LADDER.size) * _C_NGL
    block = max(1, _C_CHUNK // (n_out * n_in))
    for s in range(0, r.size, block):
        sl = slice(s, s + block)
        for k, val in enumerate(_expect2_block(pairs, r[sl], c[sl], kinks)):
            out[k][sl] = val
    return out


def _compact(edges, z_max):
    """Rows of panel edges clipped to [-z_max, z_max], sorted, repeats dropped.

    Rows keep a common length (the longest row's), padded with z_max (empty panels).
    """
    e = np.sort(np.clip(edges, -z_max, z_max), axis=-1)
    rep = np.zeros(e.shape, dtype=bool)
    rep[..., 1:] = e[..., 1:] == e[..., :-1]
    e = np.sort(np.where(rep, np.inf, e), axis=-1)
    keep = int(np.max(np.sum(~rep, axis=-1)))
    e = e[..., :keep]
    return np.where(np.isinf(e), z_max, e)


def _expect2_block(pairs, r, c, kinks):
    z_max = gaussian.Z_MAX
    P = r.size
    c = np.maximum(c, 1e-300)  # c > 0 here; keeps k / (r c) defined
    s = np.sqrt(np.maximum(0.0, (1.0 - c) * (1.0 + c)))
    sig, rc = r * s, r * c
    ks = np.asarray(kinks, dtype=float)
    zl = gaussian._Z_LADDER
    # outer edges in z1: the z ladder, f's kinks, g's kinks as seen through
    # m(z1) = r c z1 with a geometric ladder down to their smoothing width s/c,
    # and the x ladder where the Gaussian is wider than the activation's features
    parts = [np.broadcast_to(zl, (P, zl.size))]
    if ks.size:
        zk = ks[None, :] / rc[:, None]
        d = (s / c)[:, None, None] * gaussian._GRADE
        d = np.where(d < 2.0, d, 0.0)  # unused entries become empty panels
        parts += [
            ks[None, :] / r[:, None],
            zk,
            (zk[:, :, None] + d).reshape(P, -1),
            (zk[:, :, None] - d).reshape(P, -1),
        ]
    if np.any(r > 1.0):
        # f's features, and G's at r c (c is close to 1 here)
        xl = gaussian._X_LADDER[None, :] / r[:, None]
        parts.append(np.where((r > 1.0)[:, None], xl, 0.0))
    edges = _compact(np.concatenate(parts, axis=1), z_max)
    z1, w1 = _split_nodes(edges)
    m = rc[:, None] * z1
    sg = np.maximum(sig, 1e-300)[:, None, None]
    # inner edges in z2 for E[g(m + sig z2)]: z ladder, g's kinks, the x ladder
    iparts = [np.broadcast_to(zl, m.shape + (zl.size,))]
    if ks.size:
        iparts.append((ks - m[..., None]) / sg)
    if np.any(sig > 1.0):
        xl = (gaussian._X_LADDER - m[..., None]) / sg
        iparts.append(np.where((sig > 1.0)[:, None, None], xl, 0.0))
    inner_edges = _compact(np.concatenate(iparts, axis=2), z_max)
    z2, w2 = _split_nodes(inner_edges)
    x1 = r[:, None] * z1
    x2 = m[..., None] + sg * z2
    res = []
    for f, g in pairs:
        inner = np.sum(w2 * g(x2), axis=2)
        res.append(np.sum(w1 * f(x1) * inner, axis=1))
    return res
