"""The theory's critical line (chi1 = 1) as a figure draws it.

For the plain MLP (an architecture that declares ``dense_critical_line``) the
line is recomputed from ``theory.critical_sigma_w2`` on a fine sigma_b2 grid
(plus the file's own sigma_b2 values), so that it is smooth where it bends
(tanh near sigma_b2 = 0 rises like sqrt(sigma_b2)). For other architectures it
is the file's own ``analysis/theory_critical_sigma_w2`` at the grid's sigma_b2:
that is where the sweep put the theory of its architecture.
"""

import numpy as np

from .. import config, models, theory
from ..errors import VxsimError

N_POINTS = 41


def sigma_b2_grid(low, high, grid=(), n=N_POINTS):
    """n sigma_b2 from low to high, together with the given grid values, sorted.

    Spaced as low + (high - low) t^2 with t evenly spaced in [0, 1]: near sigma_b2 = 0
    the line moves like sigma_w2 - sigma_w2(0) ~ sqrt(sigma_b2) (tanh, erf, ELU), so
    the points are evenly spaced along it there.
    """
    t = np.linspace(0.0, 1.0, n)
    dense = low + (high - low) * t * t if high > low else np.array([low])
    return np.unique(np.concatenate([dense, np.asarray(grid, dtype=np.float64)]))


def architecture_of(raw_config):
    """The architecture a file's config names (the default one where it names none)."""
    default = config.default_raw()["network"]["architecture"]
    return raw_config.get("network", {}).get("architecture", default)


def dense(architecture):
    """Whether a figure recomputes this architecture's critical line (``mlp_line``)."""
    return architecture in models.names() and models.get(architecture).dense_critical_line


def dense_architecture():
    """The name of the architecture whose critical line ``mlp_line`` draws."""
    return next(arch.name for arch in models.records() if arch.dense_critical_line)


def mlp_line(label, sigma_b2, q0=1.0):
    """sigma_w2 with chi1(q*(sigma_w2, sigma_b2)) = 1 at each sigma_b2; NaN where none exists."""
    out = np.full(len(sigma_b2), np.nan)
    for i, sb2 in enumerate(sigma_b2):
        try:
            out[i] = theory.critical_sigma_w2(label, None, float(sb2), q0=q0)
        except VxsimError:
            pass
    return out
