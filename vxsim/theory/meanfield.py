"""Mean-field (infinite-width) theory of the plain MLP, float64 (DESIGN.md section 1).

Network: h^l = W^l phi(h^{l-1}) + b^l, W_ij ~ N(0, sigma_w2/N), b_i ~ N(0, sigma_b2).
Expectations are over z ~ N(0, 1) (``gaussian.expect``) or over a pair (u1, u2) of
N(0, q) variables with correlation c (``gaussian.expect2``).

Every function takes an activation as ``(act, param)``: ``act`` an
``activations.Activation`` (``param`` its parameter; None means the default) or a
label string such as "tanh" or "leaky_relu(0.2)" (``param`` None means the label's
own value). Variances must be finite and >= 0; anything else raises VxsimError.

Conventions where the physics leaves a choice:

* q* is the fixed point that the length map reaches from the input's q^0 = q0
  (default 1): the map is increasing in q, so the iterates move monotonically to
  the nearest fixed point in the direction of q' - q. It is found by bracketing and
  root finding, never by iterating (the approach is 1/l slow at sigma_b2 = 0).
  With sigma_b2 = 0 and phi(0) = 0, q = 0 is a fixed point; it is returned when
  q' < q all the way down to 1e-12 q0 (a nonzero fixed point below that is
  reported as 0). Where q' = q at q0 itself within rounding (1e-13 relative),
  q* = q0.
* Homogeneous activations (relu, leaky_relu, linear): q' = sigma_w2 m2 q + sigma_b2
  with m2 = E[phi(z)^2]; q* = sigma_b2 / (1 - sigma_w2 m2) for sigma_w2 m2 < 1. At
  sigma_w2 m2 = 1 (ReLU at sigma_w2 = 2) and sigma_b2 = 0 every q is a fixed point
  and q* = q0.
* Where q^l grows without bound (sigma_w2 m2 >= 1 and sigma_b2 > 0 for the
  homogeneous ones, ELU/softplus/GELU... with sigma_w2 lim q'/q > 1, ...) the
  functions raise NoFixedPoint instead of returning a number. For activations whose
  q'/q tends to 1 or more as q grows, a fixed point above Q_CAP_MARGINAL = 1e12 is
  reported as none.
* At q* = 0 the expectations are their q -> 0+ limits (one-sided at a kink at 0),
  and c* = 1 (every correlation is a fixed point of the linearised map).
* c* is the stable fixed point of the correlation map in [0, 1]: 1 when chi1 <= 1
  (ordered phase), else the unique root in [0, 1) (the map is convex on [0, 1]).
  A chaotic c* closer to 1 than 1e-14 is returned as 1.
* Depth scales: xi = -1/log(chi) for 0 < chi < 1, inf for chi >= 1, 0 for chi = 0.
"""

import math
from dataclasses import dataclass

import numpy as np
from scipy import optimize

from vxsim import activations
from vxsim.errors import VxsimError
from vxsim.theory import gaussian

Q_FLOOR = 1e-12
NOISE = 1e-13
Q_CAP_MARGINAL = 1e12
Q_CAP = 1e250
SW2_CAP = 1e8
_TINY = 5e-324


class NoFixedPoint(VxsimError):
    """The length map has no finite fixed point: q^l grows without bound."""


@dataclass(frozen=True)
class _Act:
    """An activation with its parameter bound; phi, dphi, d2phi are functions of x alone."""

    act: object
    a: float

    @property
    def label(self):
        return activations.label(self.act, self.a)

    @property
    def kinks(self):
        return tuple(sorted({float(k) for k in self.act.kinks(self.a)}))

    def phi(self, x):
        return self.act.phi(x, self.a)

    def dphi(self, x):
        return self.act.dphi(x, self.a)

    def d2phi(self, x):
        return self.act.d2phi(x, self.a)

    def at(self, f, x):
        return float(np.asarray(f(np.array([float(x)])))[0])


def _resolve(act, param=None):
    if isinstance(act, _Act):
        return act
    if isinstance(act, str):
        try:
            obj, p = activations.parse(act)
        except ValueError as err:
            raise VxsimError(str(err)) from None
    elif isinstance(act, activations.Activation):
        obj, p = act, act.default_param
    else:
        raise VxsimError(f"not an activation: {act!r}")
    if not obj.mlp_theory:
        raise VxsimError(
            f"no MLP mean-field theory for {obj.name!r}: its phi' is singular at 0 "
            "(residual networks: theory.residual has its closed-form moments)"
        )
    if param is not None:
        p = _finite("param", param, nonneg=False)
        if not obj.takes_param and p != obj.default_param:
            raise VxsimError(f"activation {obj.name!r} takes no parameter (got {param!r})")
    return _Act(obj, p)


def _finite(name, value, nonneg=True):
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise VxsimError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(x):
        raise VxsimError(f"{name} must be finite, got {value!r}")
    if nonneg and x < 0.0:
        raise VxsimError(f"{name} must be >= 0, got {value!r}")
    return x


def _square(f):
    def g(x):
        y = f(x)
        return y * y

    return g


def _expect(fa, f, q):
    """E[f(sqrt(q) z)]; at q = 0 the q -> 0+ limit (the mean of f's one-sided values at 0)."""
    if q == 0.0:
        return 0.5 * (fa.at(f, _TINY) + fa.at(f, -_TINY))
    return gaussian.expect(f, q, fa.kinks)


def _slope2(fa):
    """E[phi'(z)^2] = E[phi(z)^2] = (phi'(0+)^2 + phi'(0-)^2) / 2 for a homogeneous phi, exactly."""
    return _expect(fa, _square(fa.dphi), 0.0)


def second_moment(act, param, q):
    """V(q) = E[phi(sqrt(q) z)^2]."""
    fa = _resolve(act, param)
    return gaussian.expect(_square(fa.phi), _finite("q", q), fa.kinks)


def length_map(act, param, sigma_w2, sigma_b2, q):
    """q' = sigma_w2 E[phi(sqrt(q) z)^2] + sigma_b2."""
    fa = _resolve(act, param)
    sw2, sb2 = _finite("sigma_w2", sigma_w2), _finite("sigma_b2", sigma_b2)
    return _length_map(fa, sw2, sb2, _finite("q", q))


def _length_map(fa, sw2, sb2, q):
    return sw2 * gaussian.expect(_square(fa.phi), q, fa.kinks) + sb2


def iterate_length_map(act, param, sigma_w2, sigma_b2, q0, depth):
    """[q^0, q^1, ..., q^depth] with q^{l+1} = sigma_w2 E[phi(sqrt(q^l) z)^2] + sigma_b2."""
    fa = _resolve(act, param)
    sw2, sb2 = _finite("sigma_w2", sigma_w2), _finite("sigma_b2", sigma_b2)
    qs = [_finite("q0", q0)]
    for _ in range(int(depth)):
        qs.append(_length_map(fa, sw2, sb2, qs[-1]))
    return np.array(qs)


def q_star(act, param, sigma_w2, sigma_b2, q0=1.0):
    """Fixed point q* = sigma_w2 E[phi(sqrt(q*) z)^2] + sigma_b2 reached from q^0 = q0.

    Raises NoFixedPoint where q^l grows without bound. See the module docstring for
    q* = 0, the homogeneous activations and the marginal ReLU case (q* = q0).
    """
    fa = _resolve(act, param)
    sw2, sb2 = _finite("sigma_w2", sigma_w2), _finite("sigma_b2", sigma_b2)
    return _q_star(fa, sw2, sb2, _finite("q0", q0))


def _no_fixed_point(fa, sw2, sb2, why):
    return NoFixedPoint(
        f"no finite fixed point q* for {fa.label} at sigma_w2={sw2:g}, sigma_b2={sb2:g}: {why}"
    )


def _q_star(fa, sw2, sb2, q0):
    if fa.act.homogeneous:
        gain = sw2 * _slope2(fa)
        if abs(gain - 1.0) <= 1e-12:
            if sb2 == 0.0:
                return q0
            raise _no_fixed_point(fa, sw2, sb2, "q^l grows linearly (q' = q + sigma_b2)")
        if gain < 1.0:
            return sb2 / (1.0 - gain)
        if sb2 == 0.0 and q0 == 0.0:
            return 0.0
        raise _no_fixed_point(
            fa, sw2, sb2, f"q^l grows geometrically (q' = {gain:.6g} q + sigma_b2)"
        )

    def T(q):
        return _length_map(fa, sw2, sb2, q)

    def F(q):
        # q' - q, set to 0 where it is below the rounding of the quadrature: an
        # exponentially flat map (hard_tanh at sigma_w2 = 1) or one with q' - q = O(1)
        # at q ~ 1e12 (softplus at sigma_w2 = 2) must not fake a sign change
        t = T(q)
        return 0.0 if abs(t - q) <= NOISE * (t + q) else t - q

    def dF(q):
        return _chi_q(fa, sw2, q) - 1.0

    f0 = F(q0)
    if f0 == 0.0:
        return q0
    q1 = T(q0)
    if f0 > 0.0:
        # q^l increases: the first root above q^1 (every iterate is below q*)
        big = fa.at(fa.phi, 1e10) / 1e10, fa.at(fa.phi, -1e10) / 1e10
        growth = sw2 * 0.5 * (big[0] ** 2 + big[1] ** 2)
        cap = Q_CAP if growth < 1.0 - 1e-14 else Q_CAP_MARGINAL
        lo, hi = q1, 2.0 * q1
        while F(hi) >= 0.0:
            dip = _turn(F, dF, lo, hi, -1.0)
            if dip is not None:
                hi = dip
                break
            lo, hi = hi, (2.0 if hi < 1e6 * max(q0, 1.0) else 16.0) * hi
            if hi > cap:
                raise _no_fixed_point(
                    fa, sw2, sb2, f"q^l grows without bound (sigma_w2 lim q'/q = {growth:.6g})"
                )
    else:
        # q^l decreases: the largest root below q^1
        hi, lo = q1, 0.5 * q1
        while F(lo) <= 0.0:
            bump = _turn(F, dF, lo, hi, 1.0)
            if bump is not None:
                lo = bump
                break
            hi, lo = lo, 0.5 * lo
            if lo < Q_FLOOR * q0:
                if T(0.0) == 0.0:
                    return 0.0
                lo = 0.0
                break
    root = optimize.brentq(F, lo, hi, xtol=1e-300, rtol=1e-15, maxiter=500)
    if not abs(T(root) - root) <= 1e-9 * root:
        raise VxsimError(
            f"q* did not converge for {fa.label} at sigma_w2={sw2:g}, sigma_b2={sb2:g}: "
            f"q* ~ {root:g}, |q' - q| = {abs(T(root) - root):g}"
        )
    return root


def _turn(F, dF, lo, hi, sign):
    """A point of [lo, hi] where q' - q has sign ``sign``, when it has the other sign at both ends.

    A root pair between two scan points (q' - q dipping below 0 and back, near a
    saddle-node of the length map) is caught by the slope dF = chi_q - 1: where it
    turns inside (sign * dF < 0 at lo and > 0 at hi), its extremum is checked.
    ``F(q)`` is q' - q (0 within rounding). None when there is no such point.
    """
    if not (-sign * dF(lo) < 0.0 < -sign * dF(hi)):
        return None
    res = optimize.minimize_scalar(
        lambda q: -sign * F(q), bounds=(lo, hi), method="bounded", options={"xatol": 1e-14 * hi}
    )
    return float(res.x) if sign * F(res.x) > 0.0 else None


def _qstar_or(fa, sw2, sb2, q, q0):
    if q is None:
        return _q_star(fa, sw2, sb2, q0)
    return _finite("q", q)


def chi1(act, param, sigma_w2, sigma_b2, q=None, q0=1.0):
    """chi1 = sigma_w2 E[phi'(sqrt(q*) z)^2], the per-layer growth of E||dE/dh^l||^2.

    ``q`` defaults to q*(sigma_w2, sigma_b2) from q0.
    """
    fa = _resolve(act, param)
    sw2, sb2 = _finite("sigma_w2", sigma_w2), _finite("sigma_b2", sigma_b2)
    return _chi1(fa, sw2, _qstar_or(fa, sw2, sb2, q, q0))


def _chi1(fa, sw2, q):
    return sw2 * _expect(fa, _square(fa.dphi), q)


def length_map_slope(act, param, sigma_w2, sigma_b2, q=None, q0=1.0):
    """chi_q = dq'/dq = chi1 + sigma_w2 E[phi''(sqrt(q) z) phi(sqrt(q) z)] at q (default q*).

    phi'' is taken in the sense of distributions: a jump J_k of phi' at a kink k adds
    sigma_w2 J_k phi(k) N(k; 0, q) (hard_tanh's kinks at +-1 do; ReLU's at 0 do not,
    as phi(0) = 0). The registry's d2phi is the pointwise (regular) part.
    """
    fa = _resolve(act, param)
    sw2, sb2 = _finite("sigma_w2", sigma_w2), _finite("sigma_b2", sigma_b2)
    return _chi_q(fa, sw2, _qstar_or(fa, sw2, sb2, q, q0))


def _chi_q(fa, sw2, q):
    if sw2 == 0.0:
        return 0.0

    def regular(x):
        d = fa.dphi(x)
        return d * d + fa.phi(x) * fa.d2phi(x)

    slope = _expect(fa, regular, q)
    for k in fa.kinks:
        jump = fa.at(fa.dphi, np.nextafter(k, math.inf)) - fa.at(
            fa.dphi, np.nextafter(k, -math.inf)
        )
        weight = jump * fa.at(fa.phi, k)
        if weight == 0.0:
            continue
        if q == 0.0:
            slope += math.copysign(math.inf, weight) if k == 0.0 else 0.0
        else:
            slope += weight * math.exp(-0.5 * k * k / q) / math.sqrt(2.0 * math.pi * q)
    return sw2 * slope


def correlation_map(act, param, sigma_w2, sigma_b2, c, q=None, q0=1.0):
    """c' = (sigma_w2 E[phi(u1) phi(u2)] + sigma_b2) / q', (u1, u2) ~ N(0, q [[1, c], [c, 1]]).

    q' = sigma_w2 E[phi(sqrt(q) z)^2] + sigma_b2 is the length map at q (default q*,
    where q' = q*). Its slope at c = 1 is chi1.
    """
    fa = _resolve(act, param)
    sw2, sb2 = _finite("sigma_w2", sigma_w2), _finite("sigma_b2", sigma_b2)
    q = _qstar_or(fa, sw2, sb2, q, q0)
    return _c_map(fa, sw2, sb2, _check_c(c), q, _length_map(fa, sw2, sb2, q))


def _check_c(c):
    c = _finite("c", c, nonneg=False)
    if not -1.0 <= c <= 1.0:
        raise VxsimError(f"c must lie in [-1, 1], got {c!r}")
    return c


def _c_map(fa, sw2, sb2, c, q, q_next):
    e = gaussian.expect2(fa.phi, fa.phi, q, q, c, fa.kinks, fa.kinks)
    return (sw2 * e + sb2) / q_next


def c_star(act, param, sigma_w2, sigma_b2, q=None, q0=1.0):
    """Stable fixed point c* of the correlation map in [0, 1] at q (default q*).

    c* = 1 when chi1 <= 1 (ordered phase) and when q = 0; otherwise the root of
    c' = c in [0, 1), unique there because the map is convex on [0, 1] and has slope
    chi1 > 1 at c = 1.
    """
    fa = _resolve(act, param)
    sw2, sb2 = _finite("sigma_w2", sigma_w2), _finite("sigma_b2", sigma_b2)
    q = _qstar_or(fa, sw2, sb2, q, q0)
    return _c_star(fa, sw2, sb2, q, _chi1(fa, sw2, q))


def _c_star(fa, sw2, sb2, q, chi):
    if q == 0.0 or chi <= 1.0:
        return 1.0
    q_next = _length_map(fa, sw2, sb2, q)

    def g(c):
        return _c_map(fa, sw2, sb2, c, q, q_next) - c

    lo = 0.0
    if g(lo) <= 0.0:
        return 0.0
    for k in range(1, 15):
        hi = 1.0 - 10.0**-k
        if g(hi) < 0.0:
            return optimize.brentq(g, lo, hi, xtol=1e-15, rtol=1e-15, maxiter=200)
        lo = hi
    return 1.0


def chi_c(act, param, sigma_w2, sigma_b2, c=None, q=None, q0=1.0):
    """chi_c = sigma_w2 E[phi'(u1) phi'(u2)] at correlation c (default c*) and q (default q*).

    At c = 1 it equals chi1; it is the slope of the correlation map at c.
    """
    fa = _resolve(act, param)
    sw2, sb2 = _finite("sigma_w2", sigma_w2), _finite("sigma_b2", sigma_b2)
    q = _qstar_or(fa, sw2, sb2, q, q0)
    if c is None:
        c = _c_star(fa, sw2, sb2, q, _chi1(fa, sw2, q))
    return _chi_c(fa, sw2, _check_c(c), q)


def _chi_c(fa, sw2, c, q):
    if c == 1.0 or q == 0.0:
        return _chi1(fa, sw2, q)
    return sw2 * gaussian.expect2(fa.dphi, fa.dphi, q, q, c, fa.kinks, fa.kinks)


def depth_scale(chi):
    """xi = -1/log(chi): inf where log(chi) >= 0 (chi >= 1), 0 at chi = 0."""
    chi = float(chi)
    if chi >= 1.0:
        return math.inf
    if chi <= 0.0:
        return 0.0
    return -1.0 / math.log(chi)


def xi_q(act, param, sigma_w2, sigma_b2, q0=1.0):
    """xi_q = -1/log(chi1 + sigma_w2 E[phi''(sqrt(q*) z) phi(sqrt(q*) z)]) (Schoenholz et al. 2017).

    The argument of the log is the length map's slope at q* (``length_map_slope``).
    """
    fa = _resolve(act, param)
    sw2, sb2 = _finite("sigma_w2", sigma_w2), _finite("sigma_b2", sigma_b2)
    return depth_scale(_chi_q(fa, sw2, _q_star(fa, sw2, sb2, _finite("q0", q0))))


def xi_c(act, param, sigma_w2, sigma_b2, q0=1.0):
    """xi_c = -1/log(chi_c), chi_c = sigma_w2 E[phi'(u1) phi'(u2)] at c* (Schoenholz et al. 2017).

    In the ordered phase c* = 1 and chi_c = chi1.
    """
    fa = _resolve(act, param)
    sw2, sb2 = _finite("sigma_w2", sigma_w2), _finite("sigma_b2", sigma_b2)
    q = _q_star(fa, sw2, sb2, _finite("q0", q0))
    chi = _chi1(fa, sw2, q)
    return depth_scale(_chi_c(fa, sw2, _c_star(fa, sw2, sb2, q, chi), q))


def point(label, sigma_w2, sigma_b2, q0=1.0):
    """Everything the theory says at one (sigma_w2, sigma_b2).

    Returns {sigma_w2, sigma_b2, q_star, chi1, c_star, chi_c, xi_q, xi_c} (floats;
    xi = inf on the critical line); raises NoFixedPoint where q* does not exist.
    """
    fa = _resolve(label)
    sw2, sb2 = _finite("sigma_w2", sigma_w2), _finite("sigma_b2", sigma_b2)
    q = _q_star(fa, sw2, sb2, _finite("q0", q0))
    chi = _chi1(fa, sw2, q)
    cs = _c_star(fa, sw2, sb2, q, chi)
    chic = _chi_c(fa, sw2, cs, q)
    return {
        "sigma_w2": sw2,
        "sigma_b2": sb2,
        "q_star": float(q),
        "chi1": float(chi),
        "c_star": float(cs),
        "chi_c": float(chic),
        "xi_q": depth_scale(_chi_q(fa, sw2, q)),
        "xi_c": depth_scale(chic),
    }


def critical_sigma_w2(act, param, sigma_b2, q0=1.0):
    """The sigma_w2 where chi1(q*(sigma_w2, sigma_b2)) = 1 (the edge of chaos).

    Homogeneous activations: chi1 = sigma_w2 E[phi'(z)^2] for every q, so the answer
    is 1/E[phi'(z)^2] (ReLU 2, leaky_relu(a) 2/(1 + a^2), linear 1). Otherwise brentq
    on chi1 - 1 (to ~1e-15 relative), counting sigma_w2 where q^l diverges as chaotic
    (chi1 - 1 > 0). With sigma_b2 = 0 and phi(0) = 0 the q* = 0 branch has
    chi1 = sigma_w2 E[phi'(0)^2] exactly and ends at sigma_w2 = 1/E[phi'(0)^2]
    (tanh: 1), which is returned when chi1 > 1 just beyond it: there chi1 - 1 grows
    like (sigma_w2 - 1)^2 and stays below rounding for a while.

    Where q* jumps instead (GELU and SiLU at small sigma_b2: the fixed point reached
    from q0 disappears and q^l diverges), chi1 < 1 just below the jump and the jump
    is returned; q* there depends on q0.
    """
    fa = _resolve(act, param)
    return _critical_sigma_w2(fa, _finite("sigma_b2", sigma_b2), _finite("q0", q0))


def _critical_sigma_w2(fa, sb2, q0):
    if fa.act.homogeneous:
        return 1.0 / _slope2(fa)

    def g(sw2):
        try:
            q = _q_star(fa, sw2, sb2, q0)
        except NoFixedPoint:
            return 1.0
        return _chi1(fa, sw2, q) - 1.0

    grid = np.linspace(-50.0, 50.0, 100001)
    sup = float(np.max(_square(fa.dphi)(grid)))
    lo = 0.5 / sup
    if sb2 == 0.0 and fa.at(fa.phi, 0.0) == 0.0:
        edge = 1.0 / _expect(fa, _square(fa.dphi), 0.0)
        try:
            on_zero_branch = _q_star(fa, edge, 0.0, q0) == 0.0
        except NoFixedPoint:
            on_zero_branch = False
        if on_zero_branch and g(edge * (1.0 + 1e-6)) > 0.0:
            return edge
    hi = 2.0 * lo
    while g(hi) < 0.0:
        lo, hi = hi, 2.0 * hi
        if hi > SW2_CAP:
            raise VxsimError(
                f"no critical sigma_w2 below {SW2_CAP:g} for {fa.label} at sigma_b2={sb2:g}"
            )
    return optimize.brentq(g, lo, hi, xtol=1e-15, rtol=1e-15, maxiter=200)


def critical(label, sigma_b2, q0=1.0):
    """{activation, sigma_b2, sigma_w2, q_star} on the critical line at sigma_b2.

    q_star is inf where q^l grows without bound at the critical point (the homogeneous
    activations with sigma_b2 > 0: ReLU at sigma_w2 = 2 has q' = q + sigma_b2).
    """
    fa = _resolve(label)
    sb2, q0 = _finite("sigma_b2", sigma_b2), _finite("q0", q0)
    sw2 = _critical_sigma_w2(fa, sb2, q0)
    try:
        q = _q_star(fa, sw2, sb2, q0)
    except NoFixedPoint:
        q = math.inf
    if q > Q_CAP_MARGINAL:
        q = math.inf
    return {"activation": fa.label, "sigma_b2": sb2, "sigma_w2": float(sw2), "q_star": float(q)}


def critical_line(label, sigma_b2_values, q0=1.0):
    """The critical line at each sigma_b2: {activation, sigma_b2, sigma_w2, q_star}, arrays."""
    fa = _resolve(label)
    rows = [critical(fa, sb2, q0) for sb2 in np.ravel(np.asarray(sigma_b2_values, dtype=object))]
    return {
        "activation": fa.label,
        "sigma_b2": np.array([r["sigma_b2"] for r in rows]),
        "sigma_w2": np.array([r["sigma_w2"] for r in rows]),
        "q_star": np.array([r["q_star"] for r in rows]),
    }
