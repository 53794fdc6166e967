"""Gaussian expectations for the mean-field theory, in float64.

Two rules, chosen per call:

* **Gauss–Hermite** (``N_GH`` = 200 nodes, probabilists' weight) for functions
  without kinks while the variance is moderate (``q <= Q_GH`` = 1). There the
  integrand f(sqrt(q) z) is analytic in a strip around the real z axis wide enough
  for the rule to converge to rounding: tanh, whose poles at x = +-i pi/2 are the
  nearest of the registry's smooth activations, is right to ~2e-15 at q = 1 (but
  only to ~2e-10 at q = 2 and ~3e-7 at q = 4, hence the switch).
* **Split Gauss–Legendre** otherwise: the z axis, cut at |z| = Z_MAX, is split
  into panels at a fixed ladder of z values, at every kink (where f, f' or f''
  jump, so that no panel straddles one), and, when the Gaussian is wider than the
  activation's features (std > 1), at a geometric ladder of x values near x = 0;
  each panel gets an ``N_GL``-point Gauss–Legendre rule. Quadrature straight
  across a kink loses digits (the integrand's derivative jumps), so kinks are
  always panel edges here.

Bivariate expectations E[f(u1) g(u2)] are done by conditioning:
u1 = sqrt(q1) z1, u2 = sqrt(q2) (c z1 + s z2), s = sqrt(1 - c^2), so

    E[f(u1) g(u2)] = E_z1[ f(sqrt(q1) z1) * E_z2[ g(m(z1) + sigma z2) ] ],
    m(z1) = sqrt(q2) c z1,  sigma = sqrt(q2) s.

The inner expectation is a 1-d Gaussian expectation with a shifted mean, split at
g's kinks in its own coordinates, so it stays exact near c = 1 where sigma -> 0.
As a function of z1 it is g's kink smoothed over a width s/|c|; the outer rule
gets panel edges at that kink and at a geometric ladder around it down to that
width, so the outer integral stays accurate as c -> 1 too. At c = +-1 exactly the
expectation is the 1-d E[f(u1) g(+-sqrt(q2/q1) u1)].
"""

import math

import numpy as np
from numpy.polynomial.hermite_e import hermegauss
from numpy.polynomial.legendre import leggauss

INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)

N_GH = 200
Q_GH = 1.0
N_GL = 20
Z_MAX = 12.0

_GH_Z, _GH_W = hermegauss(N_GH)
_GH_W = _GH_W / math.sqrt(2.0 * math.pi)
_GL_T, _GL_W = leggauss(N_GL)

_Z_LADDER = np.array([0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 5.0, 6.0, 7.0, 8.0, 10.0, Z_MAX])
_Z_LADDER = np.concatenate([-_Z_LADDER[:0:-1], _Z_LADDER])
_X_LADDER = 2.0 ** np.arange(-5.0, 7.0)
_X_LADDER = np.concatenate([-_X_LADDER[::-1], [0.0], _X_LADDER])
_GRADE = 2.0 ** np.arange(-2.0, 8.0)


def _split_nodes(zb):
    """Nodes and weights (Gaussian density included) of the split rule.

    ``zb``: breakpoints in z, shape (..., B), each row sorted, inside [-Z_MAX, Z_MAX]
    and spanning it. Returns z and w of shape (..., (B - 1) * N_GL).
    """
    a, b = zb[..., :-1, None], zb[..., 1:, None]
    half = 0.5 * (b - a)
    z = 0.5 * (a + b) + half * _GL_T
    w = half * _GL_W * np.exp(-0.5 * z * z) * INV_SQRT_2PI
    shape = zb.shape[:-1] + (-1,)
    return z.reshape(shape), w.reshape(shape)


def _breaks(mean, std, x_points):
    """Sorted z breakpoints for E[f(mean + std z)], one row per mean.

    ``x_points`` are x locations that must be panel edges (kinks); the x ladder is
    added when the Gaussian is wider than the activation's O(1) features.
    """
    mean = np.atleast_1d(np.asarray(mean, dtype=float))
    xs = np.asarray(tuple(x_points), dtype=float)
    if std > 1.0:
        xs = np.concatenate([xs, _X_LADDER])
    extra = (xs[None, :] - mean[:, None]) / std if xs.size else np.empty((mean.size, 0))
    extra = np.clip(extra, -Z_MAX, Z_MAX)
    zb = np.concatenate([np.broadcast_to(_Z_LADDER, (mean.size, _Z_LADDER.size)), extra], axis=1)
    return np.sort(zb, axis=1)


def expect_shifted(f, mean, std, kinks=()):
    """E[f(mean + std z)], z ~ N(0, 1), for each entry of the array ``mean``; split rule.

    ``std`` is a scalar >= 0; with std = 0 the result is f(mean).
    """
    mean = np.atleast_1d(np.asarray(mean, dtype=float))
    if std == 0.0:
        return np.asarray(f(mean), dtype=float) * np.ones_like(mean)
    z, w = _split_nodes(_breaks(mean, std, kinks))
    return np.sum(f(mean[:, None] + std * z) * w, axis=1)


def _use_hermite(method, q, kinks):
    if method not in ("auto", "hermite", "split"):
        raise ValueError(f"unknown quadrature method {method!r}")
    if method == "auto":
        return not kinks and q <= Q_GH
    return method == "hermite"


def expect(f, q, kinks=(), method="auto"):
    """E[f(sqrt(q) z)], z ~ N(0, 1).

    ``f``: vectorised function of x; ``kinks``: x locations where f, f' or f''
    jump. ``method``: "auto" (Gauss–Hermite for kink-free f at q <= Q_GH, the
    split Gauss–Legendre rule otherwise), "hermite" or "split".
    """
    q = float(q)
    if q == 0.0:
        return float(f(np.zeros(1))[0])
    if _use_hermite(method, q, kinks):
        return float(np.dot(_GH_W, f(math.sqrt(q) * _GH_Z)))
    return float(expect_shifted(f, 0.0, math.sqrt(q), kinks)[0])


def expect2(f, g, q1, q2, c, kinks_f=(), kinks_g=(), method="auto"):
    """E[f(u1) g(u2)] for (u1, u2) jointly Gaussian, zero mean, variances q1, q2, correlation c.

    Conditioning on u1 (see the module docstring); exact at c = +-1, accurate near it.
    """
    q1, q2, c = float(q1), float(q2), float(c)
    if not -1.0 <= c <= 1.0:
        raise ValueError(f"correlation c = {c!r} outside [-1, 1]")
    r1, r2 = math.sqrt(q1), math.sqrt(q2)
    s = math.sqrt(max(0.0, (1.0 - c) * (1.0 + c)))
    if r1 == 0.0 or r2 == 0.0:
        # one side is constant: E[f(u1)] g(0) or f(0) E[g(u2)]
        return expect(f, q1, kinks_f, method) * expect(g, q2, kinks_g, method)
    if s == 0.0:
        ratio = c * r2 / r1
        ks = tuple(kinks_f) + tuple(k / ratio for k in kinks_g)
        return expect(lambda x: f(x) * g(ratio * x), q1, ks, method)
    if _use_hermite(method, max(q1, q2), tuple(kinks_f) + tuple(kinks_g)):
        z1 = _GH_Z[:, None]
        z2 = _GH_Z[None, :]
        vals = f(r1 * z1) * g(r2 * (c * z1 + s * z2))
        # einsum's own loops, not BLAS (whose gemv sums in a thread-count dependent order)
        return float(np.einsum("i,ij,j->", _GH_W, vals, _GH_W))
    # outer breakpoints in z1: f's kinks, and g's kinks as seen through m(z1) with a
    # geometric ladder down to their smoothing width s/|c|
    pts = [k / r1 for k in kinks_f]
    if r1 > 1.0:
        pts.extend(_X_LADDER / r1)
    if c != 0.0:
        width = s / abs(c)
        for k in kinks_g:
            zk = k / (r2 * c)
            pts.append(zk)
            d = width * _GRADE
            d = d[d < 2.0]
            pts.extend(zk + d)
            pts.extend(zk - d)
        if r2 * abs(c) > 1.0:
            pts.extend(_X_LADDER / (r2 * c))
    pts = np.clip(np.asarray(pts, dtype=float), -Z_MAX, Z_MAX)
    zb = np.sort(np.concatenate([_Z_LADDER, pts]))
    z1, w1 = _split_nodes(zb)
    inner = expect_shifted(g, r2 * c * z1, r2 * s, kinks_g)
    return float(np.sum(w1 * f(r1 * z1) * inner))
