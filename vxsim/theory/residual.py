"""Mean-field theory of residual MLPs (Yang & Schoenholz 2017), float64.

The network is h^0 = x, h^l = h^{l-1} + alpha (W^l phi(h^{l-1}) + b^l) with
W_ij ~ N(0, sigma_w2 / N), b_i ~ N(0, sigma_b2). At infinite width the branch is
uncorrelated with the skip path, so

    q^l = q^{l-1} + alpha^2 (sigma_w2 E[phi(sqrt(q^{l-1}) z)^2] + sigma_b2),   q^0 = q0,

and (gradient independence) each layer multiplies the mean squared tangent, and
the mean squared gradient going down, by

    chi^l = 1 + alpha^2 sigma_w2 E[phi'(sqrt(q^{l-1}) z)^2]  >= 1.

So E|t^l|^2 / |t^0|^2 = prod_{k<=l} chi^k and E|g^l|^2 / |g^L|^2 = prod_{k>l} chi^k.
There is no fixed point and no ordered phase: q grows without bound, and how fast
chi^l approaches 1 sets the law. Where E[phi'^2](q) ~ 1/q^p and q^l ~ l^(1/p)
the gradients grow like a power of l (alpha-ReLU: phi = relu^a, 1/2 < a < 1);
for tanh, q^l ~ l and E[phi'^2] ~ q^(-1/2) give exp(c sqrt(l)) instead; for ReLU
chi^l is constant and growth is exponential again. Either way the analysis fits a
power law (``analysis.growth``: log |g|^2 against log l), and the theory's
exponent here is the same fit applied to the mean-field curve, over the same
layers, so data and theory are compared like for like.
"""

import numpy as np

from .. import activations
from . import gaussian

Q_MIN, Q_MAX, N_TABLE = 1e-8, 1e12, 1601


def moment_function(act, param=None):
    """q -> (E[phi(sqrt(q) z)^2], E[phi'(sqrt(q) z)^2]) on arrays of q.

    Closed forms where the registry has them (relu_power); otherwise quadrature
    on a log-spaced q grid, interpolated linearly in log-log: the moments are
    smooth in log q and 80 nodes per decade keep the error near 1e-5.
    """
    obj, p = activations.parse(act) if isinstance(act, str) else (act, act.default_param)
    p = p if param is None else float(param)
    if obj.moments is not None:
        return lambda q: obj.moments(np.asarray(q, dtype=float), p)
    kinks = tuple(obj.kinks(p))
    log_q = np.linspace(np.log(Q_MIN), np.log(Q_MAX), N_TABLE)
    table = np.array(
        [
            [gaussian.expect(lambda x, f=f: f(x, p) ** 2, q, kinks) for q in np.exp(log_q)]
            for f in (obj.phi, obj.dphi)
        ]
    )
    with np.errstate(divide="ignore"):
        log_table = np.log(table)

    def moments(q):
        x = np.log(np.clip(q, Q_MIN, Q_MAX))
        return tuple(np.exp(np.interp(x, log_q, row)) for row in log_table)

    return moments


def curves(moments, sigma_w2, sigma_b2, alpha, q0, depth):
    """Mean-field q^l and log prod chi^k for every point of the arrays (broadcast together).

    Returns (q, log_chi) of shape (depth + 1, ...): q[l] = q^l, and
    log_chi[l] = sum_{k=1}^{l} log chi^k (log_chi[0] = 0), so the JVP curve is
    log_chi[l] and the VJP curve at layer l is log_chi[L] - log_chi[l].
    """
    sw2, sb2, a = np.broadcast_arrays(
        *(np.asarray(v, dtype=float) for v in (sigma_w2, sigma_b2, alpha))
    )
    q = np.full(sw2.shape, float(q0))
    qs, logs = [q], [np.zeros(sw2.shape)]
    for _ in range(depth):
        phi2, dphi2 = moments(q)
        logs.append(logs[-1] + np.log1p(a * a * sw2 * dphi2))
        q = q + a * a * (sw2 * phi2 + sb2)
        qs.append(q)
    return np.stack(qs), np.stack(logs)
