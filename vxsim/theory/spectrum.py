"""The spectrum of the input-output Jacobian of a deep random MLP: free probability, float64.

Network (vxsim's convention: layer 1 applies no phi to the input x, mean square q0):

    h^1 = W^1 x + b^1,  h^l = W^l phi(h^{l-1}) + b^l,  W = sqrt(sigma_w2 / N) Z,
    J^l = dh^l/dx = W^l D^{l-1} W^{l-1} ... D^1 W^1,  D^k = diag(phi'(h^k)),

and lambda are the eigenvalues of J^l J^l^T (the squared singular values s^2).
At infinite width the factors are asymptotically free (Pennington, Schoenholz &
Ganguli 2017, 2018), so the S-transform of J J^T is the product of the factors':

    S_{JJ^T}(z) = S_{WW^T}(z)^l  prod_{k=1}^{l-1} S_{D_k^2}(z),
    S_{WW^T}(z) = (1 + z)^{s1} / sigma_w2   (s1 = -1: Marchenko-Pastur, i.i.d. entries
                                             of unit variance; s1 = 0: Haar orthogonal).

Moments. Writing S_X(z) = (1/m1)(1 - v z + O(z^2)), v = m2/m1^2 - 1 (the normalised
variance), means multiply and normalised variances add under free products. With
mu_j(q) = E[phi'(sqrt(q) z)^(2j)], z ~ N(0, 1), along the mean-field trajectory
q^1 = sigma_w2 q0 + sigma_b2, q^{k+1} = sigma_w2 E[phi(sqrt(q^k) z)^2] + sigma_b2:

    lambda_mean(l)     = sigma_w2^l prod_{k=1}^{l-1} mu1(q^k),
    lambda_var_norm(l) = l (-s1) + sum_{k=1}^{l-1} (mu2(q^k) / mu1(q^k)^2 - 1).

At the fixed point q^k = q* for every k: lambda_mean = sigma_w2 chi1^(l-1) = chi1^l / mu1
(chi1 = sigma_w2 mu1(q*): the l weight factors against l - 1 derivative factors) and
lambda_var_norm = l (mu2/mu1^2 - 1 - s1) - (mu2/mu1^2 - 1), the issue's
l (mu2/mu1^2 - 1 - s1) less one derivative factor.

Density (at the fixed point: every D^k has the law of phi'(h)^2, h ~ N(0, q*)). With
psi_X(y) = sum_k m_k y^k (the moment generating function), chi_X = psi_X^{-1} and
S_X(z) = chi_X(z) (1 + z)/z, put x = chi_D(z), i.e. z = psi_D(x) = E[d x / (1 - d x)],
d = phi'(h)^2. Then chi_X(z) = S_W(z)^l x^(l-1) ((1 + z)/z)^(l-2), and a real lambda
has z = psi_X(1/lambda) from

    F(w) = log lambda + l (s1 log(1 + z) - log sigma_w2) + (l-1) w + (l-2) (log(1 + z) - log z) = 0,

x = e^w (solved for w by Newton's method, F's imaginary part taken mod 2 pi), and
G(lambda) = (1 + z)/lambda, so the density of t = log lambda is

    rho_log(t) = lambda rho(lambda) = -Im z / pi.

Working in t = log lambda and w = log x keeps spectra spread over 10^(+-1000) in
float64 (a Gaussian net's density of log lambda decays only like e^(t/(l+1)) as
lambda -> 0). The root on the physical branch is followed by continuation from
lambda far above the spectrum (z ~ lambda_mean/lambda) downward, at
lambda (1 + i ETA), each point then polished at ETA = 0; the step in t adapts to the
predictor's miss in w and to the change of z. D's law enters as bins: on panels of
width 0.01 in z (cut at the activation's kinks) phi'(h)^2 is taken as linear, so each
panel's Gaussian mass is spread uniformly over an interval of d (flat pieces, relu's,
are atoms); E[1/(1 - d x)] and E[d/(1 - d x)^2] over a bin are closed forms (logs)
that stay exact up to the real axis, where the subordination x may touch the cut of
psi_D (an orthogonal net at small depth). Near x = 0 the same law's moment series
sum_j E[d^j] x^j is used instead (no cancellation); the two agree to rounding, so
F is continuous for Newton's method. The bins' moments differ from the exact ones
by O(1e-5); the mass and the first two moments of the density come out right to
~1e-4 (tests/test_spectrum_theory.py), the trapezoidal rule on the adaptive grid
dominating that.

Special cases: l = 1 (or a linear phi) has d = 1: lambda follows the Fuss-Catalan law
of order l scaled by sigma_w2^l for Gaussian weights (moments
sigma_w2^(lk) binom((l+1)k, k)/(lk + 1)); with Haar orthogonal weights and a constant
d the spectrum is one point mass at sigma_w2^l prod mu1. A law of d with an atom at 0
(relu: P(phi' = 0) = 1/2) gives lambda an atom at 0 of that mass for l >= 2 (free
multiplicative convolution keeps the largest atom at 0); the continuous density then
integrates to 1 minus it. Haar weights at l = 2 with d made of one nonzero atom and
one at 0 (relu) give two atoms: point_mass at sigma_w2^2 and atom_at_zero.
"""

import math
from typing import NamedTuple

import numpy as np
from numpy.polynomial.legendre import leggauss
from scipy import special

from vxsim import laws
from vxsim.errors import VxsimError
from vxsim.theory import gaussian, meanfield

ETA = 1e-9  # lambda (1 + i ETA): the root's side of the real axis
NEWTON_TOL = 1e-11  # |F| at convergence (F is a log: relative accuracy of 1/lambda)
NEWTON_MAXITER = 60
Z_TOL = 0.02  # the largest accepted relative change of z per step
STEP_TOL = 0.002  # the predictor's largest accepted miss in w per step
TAIL_TOL = 1e-9  # stop below the bulk where the mass left below is estimated under this
MAX_STEPS = 40000
PANEL = 0.25  # width in z of the law-of-d panels
_GL_T, _GL_W = leggauss(20)


def _weight_law(label):
    """(s1, free_law) of a weight law label ("gaussian", "orthogonal", "student_t(5)", ...).

    From the law's record in vxsim.laws: s1 = -1 and "marchenko_pastur" for the laws
    with i.i.d. entries of unit variance, 0 and "haar" for orthogonal. A label that
    is no law raises VxsimError naming the allowed ones.
    """
    try:
        law, _ = laws.parse(label)
    except ValueError as err:
        raise VxsimError(str(err)) from None
    return float(law.s1), law.free_law


class Moments(NamedTuple):
    """Free-probability moments of lambda at each layer of ``layers`` (arrays over them)."""

    layers: np.ndarray
    q_star: float  # the fixed point reached from q^1 (NaN where q^l diverges)
    chi1: float  # sigma_w2 mu1(q*)
    mu1: float  # E[phi'(sqrt(q*) z)^2]
    mu2: float  # E[phi'(sqrt(q*) z)^4]
    s1: float
    free_law: str
    log_lambda_mean: np.ndarray
    lambda_mean: np.ndarray  # exp(log_lambda_mean); inf/0 beyond the float range
    lambda_var_norm: np.ndarray


def _law(init):
    s1, free_law = _weight_law(init)
    return float(s1), free_law


def _mu(fa, q):
    """(mu1, mu2) = (E[phi'(sqrt(q) z)^2], E[phi'(sqrt(q) z)^4]); q = 0: the q -> 0+ limits."""

    def d2(x):
        y = fa.dphi(x)
        return y * y

    def d4(x):
        y = fa.dphi(x)
        return (y * y) ** 2

    return meanfield._expect(fa, d2, q), meanfield._expect(fa, d4, q)


def _checked(activation, sigma_w2, sigma_b2, q0):
    fa = meanfield._resolve(activation)
    sw2 = meanfield._finite("sigma_w2", sigma_w2)
    sb2 = meanfield._finite("sigma_b2", sigma_b2)
    q0 = meanfield._finite("q0", q0)
    return fa, sw2, sb2, q0


def _layers(layers):
    try:
        arr = np.atleast_1d(np.asarray(layers, dtype=float))
    except (TypeError, ValueError):
        raise VxsimError(f"layers must be whole numbers >= 1, got {layers!r}") from None
    if arr.size == 0 or not np.all(np.isfinite(arr)) or np.any(arr < 1) or np.any(arr % 1):
        raise VxsimError(f"layers must be whole numbers >= 1, got {layers!r}")
    return arr.astype(np.int64)


def fixed_point(fa, sw2, sb2, q0):
    """q* reached by the network's own trajectory, from q^1 = sigma_w2 q0 + sigma_b2.

    Homogeneous activations: their mu_j do not depend on q > 0, so any q > 0 serves
    (1 where q^l diverges). NaN where q^l diverges for the others.
    """
    q1 = sw2 * q0 + sb2
    try:
        return meanfield._q_star(fa, sw2, sb2, q1)
    except meanfield.NoFixedPoint:
        return 1.0 if fa.act.homogeneous else math.nan


def trajectory_terms(fa, sw2, sb2, q0, depth):
    """(log mu1(q^k), mu2(q^k)/mu1(q^k)^2 - 1) for k = 1..depth along the trajectory.

    Once q^k stops moving (|q^{k+1} - q^k| <= 1e-15 q^k) the rest repeat the last;
    homogeneous activations have q-independent mu_j (evaluated at q = 1 for q > 0).
    Where q^k passes meanfield.Q_CAP (divergence) the remaining terms are NaN.
    """
    log_mu1 = np.full(depth, np.nan)
    v = np.full(depth, np.nan)
    q = sw2 * q0 + sb2
    for k in range(depth):
        if not q <= meanfield.Q_CAP:
            break
        mu1, mu2 = _mu(fa, 1.0 if (fa.act.homogeneous and q > 0.0) else q)
        log_mu1[k] = math.log(mu1) if mu1 > 0.0 else -math.inf
        v[k] = mu2 / mu1**2 - 1.0 if mu1 > 0.0 else math.nan
        q_next = meanfield._length_map(fa, sw2, sb2, q) if not fa.act.homogeneous else q
        if fa.act.homogeneous or abs(q_next - q) <= 1e-15 * q:
            log_mu1[k + 1 :], v[k + 1 :] = log_mu1[k], v[k]
            break
        q = q_next
    return log_mu1, v


def layer_sums(activation, sigma_w2, sigma_b2, layers, q0=1.0):
    """(log lambda_mean, sum_{k<l} (mu2/mu1^2 - 1)(q^k)) at each of ``layers``, any weight law.

    log lambda_mean(l) = l log sigma_w2 + sum_{k<l} log mu1(q^k) (the same for every
    law of unit entry variance); lambda_var_norm(l) = l (-s1) + the second array.
    """
    fa, sw2, sb2, q0 = _checked(activation, sigma_w2, sigma_b2, q0)
    ls = _layers(layers)
    log_mu1, v = trajectory_terms(fa, sw2, sb2, q0, int(ls.max()) - 1)
    cum_log = np.concatenate([[0.0], np.cumsum(log_mu1)])
    cum_v = np.concatenate([[0.0], np.cumsum(v)])
    log_sw2 = math.log(sw2) if sw2 > 0.0 else -math.inf
    with np.errstate(invalid="ignore"):
        return ls * log_sw2 + cum_log[ls - 1], cum_v[ls - 1]


def moments(activation, sigma_w2, sigma_b2, init="gaussian", layers=(1,), q0=1.0):
    """lambda_mean, lambda_var_norm at each of ``layers`` (module docstring); q*, chi1, mu1, mu2.

    lambda_mean(l) = sigma_w2^l prod_{k<l} mu1(q^k),
    lambda_var_norm(l) = l (-s1) + sum_{k<l} (mu2(q^k)/mu1(q^k)^2 - 1).
    """
    fa, sw2, sb2, q0 = _checked(activation, sigma_w2, sigma_b2, q0)
    s1, free_law = _law(init)
    ls = _layers(layers)
    log_mean, sum_v = layer_sums(fa, sw2, sb2, ls, q0)
    var_norm = ls * (-s1) + sum_v
    with np.errstate(over="ignore"):
        mean = np.exp(log_mean)
    q = fixed_point(fa, sw2, sb2, q0)
    mu1, mu2 = _mu(fa, q) if math.isfinite(q) else (math.nan, math.nan)
    return Moments(ls, q, sw2 * mu1, mu1, mu2, s1, free_law, log_mean, mean, var_norm)


class Density(NamedTuple):
    """The spectral density of lambda at one depth, at the fixed point q*.

    ``log_lambda`` increasing; ``rho_log`` the density of t = log lambda (its
    integral over t is the continuous part's mass); ``atom_at_zero`` the mass of
    lambda = 0; ``point_mass`` (lambda, mass) when the whole spectrum is one point
    (then log_lambda is empty); ``mass_outside`` the estimated continuous mass left
    below the grid.
    """

    layer: int
    log_lambda: np.ndarray
    rho_log: np.ndarray
    atom_at_zero: float
    point_mass: tuple
    mass_outside: float
    log_lambda_mean: float  # of the fixed-point law (every D^k at q*)
    lambda_var_norm: float

    @property
    def rho(self):
        """rho(lambda) = rho_log / lambda (0 or inf beyond the float range: use rho_log)."""
        with np.errstate(over="ignore", under="ignore"):
            return np.exp(np.log(np.maximum(self.rho_log, 1e-320)) - self.log_lambda)

    def moment_ratio(self, k):
        """E[lambda^k] / lambda_mean^k from the density (atom at 0 contributes nothing)."""
        if self.point_mass is not None:
            at, mass = self.point_mass
            return mass * math.exp(k * (math.log(at) - self.log_lambda_mean))
        f = np.exp(k * (self.log_lambda - self.log_lambda_mean)) * self.rho_log
        return float(np.trapezoid(f, self.log_lambda))

    def mass(self):
        """Continuous mass on the grid plus the atoms."""
        if self.point_mass is not None:
            return self.point_mass[1] + self.atom_at_zero
        return float(np.trapezoid(self.rho_log, self.log_lambda)) + self.atom_at_zero

    def cdf(self, log_lambda):
        """P(log lambda <= t) (atom at 0 included; trapezoidal in t between grid points)."""
        t = np.asarray(log_lambda, dtype=float)
        if self.point_mass is not None:
            at, mass = self.point_mass
            return self.atom_at_zero + np.where(t >= math.log(at), mass, 0.0)
        seg = 0.5 * (self.rho_log[1:] + self.rho_log[:-1]) * np.diff(self.log_lambda)
        cum = self.atom_at_zero + self.mass_outside + np.concatenate([[0.0], np.cumsum(seg)])
        return np.interp(t, self.log_lambda, cum, left=self.atom_at_zero, right=cum[-1])


def derivative_law(fa, q):
    """Nodes d_i = phi'(sqrt(q) z_i)^2 and weights (sum 1) of the law of D^2 at q.

    Gauss-Legendre (20 points) on panels of width PANEL in z over [-12, 12], cut at
    the activation's kinks (k / sqrt(q)); q = 0 gives the point law at phi'(0)^2
    (the mean of the one-sided values at a kink).
    """
    if q == 0.0:
        d = 0.5 * (fa.at(fa.dphi, 5e-324) ** 2 + fa.at(fa.dphi, -5e-324) ** 2)
        return np.array([d]), np.array([1.0])
    r = math.sqrt(q)
    edges = np.arange(-gaussian.Z_MAX, gaussian.Z_MAX + PANEL / 2, PANEL)
    kinks = [k / r for k in fa.kinks if abs(k / r) < gaussian.Z_MAX]
    edges = np.unique(np.concatenate([edges, kinks]))
    a, b = edges[:-1, None], edges[1:, None]
    z = (0.5 * (a + b) + 0.5 * (b - a) * _GL_T).ravel()
    w = (
        0.5 * (b - a) * _GL_W * np.exp(-0.5 * (0.5 * (a + b) + 0.5 * (b - a) * _GL_T) ** 2)
    ).ravel()
    d = fa.dphi(r * z) ** 2
    return d, w / w.sum()


class DerivativeLaw(NamedTuple):
    """The law of d = phi'(h)^2 twice: quadrature nodes (d, wt), and atoms plus bins.

    The bins carry a piecewise-constant density (equal mass, edges at quantiles),
    whose Stieltjes-type integrals are closed forms analytic up to the real axis.
    """

    d: np.ndarray
    wt: np.ndarray
    atom_d: np.ndarray
    atom_w: np.ndarray
    lo: np.ndarray  # bin edges
    hi: np.ndarray
    mass: np.ndarray  # bin masses
    d_max: float
    power: np.ndarray = np.empty(0)  # M_j = E[d^j] of the atoms and bins, j = 1..SERIES


BIN_STEP = 0.01  # width in z of the panels that make the bins of d
SERIES_BELOW = 0.1  # |x| max d under which z = sum_j M_j x^j (SERIES terms: < 1e-16 left)
SERIES = 18


def binned(fa, q, d, wt):
    """DerivativeLaw at q: the nodes (d, wt), and bins from panels of width BIN_STEP in z.

    On each panel [z_j, z_j+1] of h = sqrt(q) z (edges at the kinks too), d(h) is taken
    as linear, so the panel's Gaussian mass Phi(z_j+1) - Phi(z_j) is spread uniformly
    over [d_j, d_j+1]: a bin of d. Panels where d does not change (relu's flat pieces)
    are atoms. The bins' error in any smooth expectation is O(BIN_STEP^2), ~1e-5.
    """
    if q == 0.0 or d.size == 1:
        empty = np.empty(0)
        return _with_powers(DerivativeLaw(d, wt, d, wt, empty, empty, empty, float(d.max())))
    r = math.sqrt(q)
    edges = np.arange(-gaussian.Z_MAX, gaussian.Z_MAX + BIN_STEP / 2, BIN_STEP)
    kinks = [k / r for k in fa.kinks if abs(k / r) < gaussian.Z_MAX]
    edges = np.unique(np.concatenate([edges, kinks]))
    cdf = special.ndtr(edges)
    mass = np.diff(cdf)
    mass /= mass.sum()
    inner = 1e-12 * np.diff(edges)  # one-sided values at the panel edges (kinks)
    d_lo = fa.dphi(r * (edges[:-1] + inner)) ** 2
    d_hi = fa.dphi(r * (edges[1:] - inner)) ** 2
    flat = np.abs(d_hi - d_lo) <= 1e-14 * np.maximum(np.abs(d_hi), 1e-300)
    lo, hi = np.minimum(d_lo, d_hi), np.maximum(d_lo, d_hi)
    atom_d, atom_w = np.unique(d_lo[flat], return_inverse=True)[0], None
    if atom_d.size:
        idx = np.searchsorted(atom_d, d_lo[flat])
        atom_w = np.bincount(idx, weights=mass[flat], minlength=atom_d.size)
    else:
        atom_w = np.empty(0)
    keep = ~flat
    return _with_powers(
        DerivativeLaw(d, wt, atom_d, atom_w, lo[keep], hi[keep], mass[keep], float(hi.max()))
    )


def _with_powers(law):
    """M_j = E[d^j], j = 1..SERIES: atoms sum w d^j, a bin m (b^(j+1) - a^(j+1))/((j+1)(b-a))
    = m sum_(i<=j) a^i b^(j-i) / (j+1) (no cancellation in narrow bins)."""
    a, b = law.lo, law.hi
    power = np.empty(SERIES)
    pa = [np.ones_like(a)]
    pb = [np.ones_like(b)]
    for _ in range(SERIES):
        pa.append(pa[-1] * a)
        pb.append(pb[-1] * b)
    for j in range(1, SERIES + 1):
        inside = sum(pa[i] * pb[j - i] for i in range(j + 1)) / (j + 1)
        power[j - 1] = np.dot(law.mass, inside) + np.dot(law.atom_w, law.atom_d**j)
    return law._replace(power=power)


def _eta_terms(law, x):
    """z = E[d x/(1 - d x)], 1 + z = E[1/(1 - d x)], dz/dx = E[d/(1 - d x)^2].

    Near the cut (|x| max d >= NODES_BELOW) from the atoms and bins: a bin of mass m
    on [a, b] (density m/D, D = b - a) gives, with A = log(1 - b x) - log(1 - a x),
    m E[1/(1 - d x)] = -m A/(x D) and m E[d/(1 - d x)^2] = (m/x) (A/(x D) +
    1/((1 - a x)(1 - b x))); A = log1p(-D x/(1 - a x)) keeps narrow bins exact.
    Away from it (|x| max d < SERIES_BELOW) from the same law's moment series
    z = sum_j M_j x^j, which has no cancellation at small x and joins the closed
    forms continuously (the same law), as Newton's method needs.
    """
    if abs(x) * law.d_max < SERIES_BELOW:
        k = np.arange(1, SERIES + 1)
        xk = x ** (k - 1)
        z = x * np.dot(law.power, xk)
        return z, 1.0 + z, np.dot(law.power * k, xk)
    if abs(x.imag) < 1e-200 * abs(x):
        x = complex(x.real, -1e-200 * abs(x))  # on the real axis: the side of lambda (1 + i0)
    inv = 1.0 / (1.0 - law.atom_d * x)
    onepz = np.dot(law.atom_w, inv)
    dz = np.dot(law.atom_w, law.atom_d * inv * inv)
    if law.mass.size:
        oa, ob = 1.0 - law.lo * x, 1.0 - law.hi * x
        # A/(x D) = log(ob/oa)/(x D) = log1p(-D x/oa)/(x D): accurate in narrow bins
        ratio = _log1p(-(law.hi - law.lo) * x / oa) / ((law.hi - law.lo) * x)
        onepz -= np.dot(law.mass, ratio)
        dz += np.dot(law.mass, ratio + 1.0 / (oa * ob)) / x
    return onepz - 1.0, onepz, dz


def _log1p(u):
    """log(1 + u) for complex u, accurate for small |u| (real part by log1p)."""
    re, im = u.real, u.imag
    return 0.5 * np.log1p(re * (2.0 + re) + im * im) + 1j * np.arctan2(im, 1.0 + re)


def _wrap(f):
    return complex(f.real, (f.imag + math.pi) % (2.0 * math.pi) - math.pi)


def _residual(w, t, c, law, eta=ETA):
    """F(w) and dF/dw at log lambda = t (module docstring); c = (l, s1, log sigma_w2)."""
    L, s1, log_sw2 = c
    with np.errstate(all="ignore"):
        x = np.exp(w)
        z, onepz, dz = _eta_terms(law, x)
        if z == 0 or onepz == 0:
            return None, None, z
        l1, lz = np.log(onepz), np.log(z)
        f = t + 1j * eta + L * (s1 * l1 - log_sw2) + (L - 1) * w + (L - 2) * (l1 - lz)
        df = (L - 1) + x * dz * ((L * s1 + L - 2) / onepz - (L - 2) / z)
    if not (np.isfinite(f) and np.isfinite(df)) or df == 0:
        return None, None, z
    return _wrap(f), df, z


def _newton(w, t, c, law, eta=ETA):
    """Damped Newton on F(w) = 0 from w; (w, z, iterations) or None."""
    f, df, z = _residual(w, t, c, law, eta)
    if f is None:
        return None
    for it in range(NEWTON_MAXITER):
        if abs(f) < NEWTON_TOL:
            return w, z, it
        step = f / df
        scale = 1.0
        for _ in range(30):
            w_new = w - scale * step
            f_new, df_new, z_new = _residual(w_new, t, c, law, eta)
            if f_new is not None and abs(f_new) < abs(f):
                break
            scale *= 0.5
        else:
            return None
        w, f, df, z = w_new, f_new, df_new, z_new
    return (w, z, NEWTON_MAXITER) if abs(f) < 1e3 * NEWTON_TOL else None


def density(activation, sigma_w2, sigma_b2, init="gaussian", layer=1, q0=1.0):
    """The density of t = log lambda at depth ``layer``, every D^k at the fixed point q*.

    Solves F(w) = 0 (module docstring) by continuation in t from far above the
    spectrum downward; the grid in t adapts (finer where the solution bends) and
    stops below the bulk once the mass estimated below it, rho_log / (d log rho_log/dt),
    is under TAIL_TOL.
    """
    fa, sw2, sb2, q0 = _checked(activation, sigma_w2, sigma_b2, q0)
    L = int(_layers(layer)[0])
    if L != _layers(layer)[0] or np.size(layer) != 1:
        raise VxsimError(f"layer must be one whole number >= 1, got {layer!r}")
    if sw2 <= 0.0:
        raise VxsimError("sigma_w2 must be > 0 for a spectrum (J = 0 otherwise)")
    s1, _ = _law(init)
    q = fixed_point(fa, sw2, sb2, q0)
    if not math.isfinite(q):
        raise meanfield.NoFixedPoint(
            f"no fixed point q* for {fa.label} at sigma_w2={sw2:g}, sigma_b2={sb2:g}: "
            "q^l diverges, so there is no fixed-point spectrum"
        )
    if fa.act.homogeneous:
        q = 1.0  # phi'(h)^2 has the same law for every q > 0, and as q -> 0+
    d, wt = derivative_law(fa, q) if L >= 2 else (np.array([1.0]), np.array([1.0]))
    mu1 = float(np.dot(wt, d))
    if mu1 <= 0.0:
        raise VxsimError(f"phi'(h) = 0 almost surely for {fa.label} at q* = {q:g}: J = 0")
    v_d = float(np.dot(wt, d * d)) / mu1**2 - 1.0
    log_mean = L * math.log(sw2) + (L - 1) * math.log(mu1)
    var_norm = L * (-s1) + (L - 1) * v_d
    atom = float(wt[d == 0.0].sum()) if L >= 2 else 0.0
    empty = np.empty(0)
    if s1 == 0.0 and v_d <= 1e-15:
        # Haar weights and a constant phi'^2: J J^T = lambda_mean I exactly
        return Density(L, empty, empty, 0.0, (math.exp(log_mean), 1.0), 0.0, log_mean, var_norm)
    law = _law_at(fa, q, d, wt, L)
    nonzero = law.atom_d > 0.0
    if s1 == 0.0 and L == 2 and law.mass.size == 0 and nonzero.sum() == 1:
        # J J^T = sigma_w2^2 O D^2 O^T: the atoms of d scaled (relu: 0 and sigma_w2^2)
        at = sw2 * sw2 * float(law.atom_d[nonzero][0])
        return Density(
            L, empty, empty, atom, (at, float(law.atom_w[nonzero][0])), 0.0, log_mean, var_norm
        )
    t_grid, rho = _continue(L, s1, math.log(sw2), law, log_mean, var_norm)
    outside = _tail_mass(t_grid, rho)
    return Density(L, t_grid, rho, atom, None, outside, log_mean, var_norm)


def _law_at(fa, q, d, wt, L):
    if L < 2:  # J = W^1: d = 1
        empty = np.empty(0)
        return _with_powers(DerivativeLaw(d, wt, d, wt, empty, empty, empty, 1.0))
    return binned(fa, q, d, wt)


def _continue(L, s1, log_sw2, law, log_mean, var_norm):
    """(t, rho_log) from far above the spectrum down past its bottom (see ``density``)."""
    c = (L, s1, log_sw2)
    mu1 = float(np.dot(law.wt, law.d))
    width = math.sqrt(max(math.log1p(var_norm), 1e-12))  # the bulk's spread in t
    t = log_mean + math.log(math.e * (var_norm + 1.0)) + 2.0 + 2.0 * width
    # far above the spectrum: z = psi_X(1/lambda) ~ lambda_mean/lambda, x ~ z / mu1
    z0 = math.exp(log_mean - t)
    w = complex(math.log(z0 / mu1), 0.0)
    sol = _newton(w, t, c, law)
    if sol is None:
        raise VxsimError("the spectral density's equation did not converge above the spectrum")
    w, z, _ = sol
    dt = min(0.02, width / 200.0)
    dt_max = max(width / 20.0, 0.05 * (L + 1))
    ts, rhos, ws, zs = [t], [max(-_polish(w, z, t, c, law).imag / math.pi, 0.0)], [w], [z]
    peak = rhos[0]
    dt_min = 1e-7 * width
    for _ in range(MAX_STEPS):
        t_new = t - dt
        pred = w if len(ws) < 2 else ws[-1] + (ws[-1] - ws[-2]) * dt / (ts[-2] - ts[-1])
        sol = _newton(pred, t_new, c, law)
        if sol is None:
            if dt <= dt_min:
                raise VxsimError("the spectral density's continuation stalled (step underflow)")
            dt = max(0.5 * dt, dt_min)
            continue
        # the step's error: the predictor's miss in w, and the change of z = psi(1/lambda)
        # relative to its size (z moves alone where w is exactly linear in t: l = 2)
        dz = abs(sol[1] - zs[-1]) / (abs(zs[-1]) + abs(1 + zs[-1]))
        miss = max(abs(sol[0] - pred), dz * STEP_TOL / Z_TOL)
        if miss > STEP_TOL and dt > dt_min:
            dt = max(0.5 * dt, dt_min)
            continue
        w, z, _ = sol
        t = t_new
        r = max(-_polish(w, z, t, c, law).imag / math.pi, 0.0)
        ts.append(t)
        rhos.append(r)
        ws.append(w)
        zs.append(z)
        peak = max(peak, r)
        if miss < STEP_TOL / 4:
            dt = min(dt * 1.5, dt_max)
        if peak > 0.0 and t < log_mean and _below_bulk_done(ts, rhos, peak):
            break
    t_arr, rho_arr = np.array(ts[::-1]), np.array(rhos[::-1])
    rho_arr[rho_arr < 1e-13 * peak] = 0.0  # rounding
    return t_arr, rho_arr


def _polish(w, z, t, c, law):
    """z at the real lambda itself (ETA = 0), from the root at lambda (1 + i ETA).

    Inside the spectrum Newton stays on the nearby complex root; outside it lands on
    the real one, so no O(ETA) density leaks past the edges. Where it fails the
    ETA root's z is kept (an O(ETA) error).
    """
    sol = _newton(w, t, c, law, eta=0.0)
    return z if sol is None else sol[1]


def _tail_slope(ts, rhos):
    """d log rho_log / dt at the last point (positive in a left tail), or None."""
    if len(ts) < 3 or rhos[-1] <= 0.0 or rhos[-2] <= 0.0:
        return None
    return (math.log(rhos[-2]) - math.log(rhos[-1])) / (ts[-2] - ts[-1])


def _below_bulk_done(ts, rhos, peak):
    if rhos[-1] <= 1e-13 * peak:
        return True  # below the spectrum's lower edge
    slope = _tail_slope(ts, rhos)
    return slope is not None and slope > 0.0 and rhos[-1] / slope < TAIL_TOL


def _tail_mass(t, rho):
    """Mass below the grid, rho_log(t0) / slope for an exponential tail in t (0 at an edge)."""
    if t.size < 3 or rho[0] <= 0.0 or rho[1] <= 0.0:
        return 0.0
    slope = (math.log(rho[1]) - math.log(rho[0])) / (t[1] - t[0])
    return float(rho[0] / slope) if slope > 0.0 else 0.0


def fuss_catalan_moment(order, k):
    """k-th moment of the Fuss-Catalan law of ``order`` (l Gaussian factors, sigma_w2 = 1):

    m_k = binom((order + 1) k, k) / (order k + 1).
    """
    return float(special.comb((order + 1) * k, k, exact=True)) / (order * k + 1)
