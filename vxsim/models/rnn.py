"""What one time step of an Elman RNN computes (NumPy; engines.generic drives it).

    u_t = W phi(u_{t-1}) + U x_t + b      (u_1 = W h_0 + U x_1 + b)

with W = sqrt(sw2/N) Z_W, U = sqrt(su2/N) Z_U and b = sqrt(sb2) xi drawn **once**
per sample and tied across all T = depth steps, and inputs x_t with i.i.d.
N(0, q_x) entries, fresh every step and the same for both trajectories (which
start from the two initial states h_0 = x1, x2). The pre-activation u_t plays the
MLP's h^l: the step is the MLP's with tied weights and the drive U x_t added to
the bias, so the tangent (forward in time from h_0) and the gradient
(backpropagation through time from step T) are the MLP's too.
"""

import numpy as np

from .. import rng
from .mlp import (  # noqa: F401  (the rest of the model is the MLP's)
    LOG_SCALE,
    advance,
    arrays,
    cotangent,
    cotangent_start,
    observe,
    start,
    tangent,
    tangent_start,
)


def weights(unit, layer):
    """Z_W, the same at every step."""
    return unit.tied("W", lambda: unit.matrix(0, rng.STREAM_GATE))


def drive(unit, t):
    """Z_U x_t / sqrt(N) (N,), float64: U x_t = sqrt(su2) * this."""
    Z_U = unit.tied("U", lambda: unit.matrix(0, rng.STREAM_GATE_INPUT, np.float64))
    x = np.sqrt(unit.config.input_variance) * unit.normals(t, rng.STREAM_SEQUENCE)
    return Z_U @ x / np.sqrt(unit.width)


def bias_term(unit, t):
    """U x_t + b per column (N, 2P), float64; b = sqrt(sb2) xi, xi tied."""
    xi = unit.tied("xi", lambda: unit.normals(0, rng.STREAM_BIAS))
    sb = unit.per_point(np.sqrt(unit.grid.sigma_b2))
    su = unit.per_point(np.sqrt(unit.grid.extra["sigma_u2"]))
    return xi[:, None] * sb[None, :] + drive(unit, t)[:, None] * su[None, :]


def step(unit, t, state, Z):
    return advance(unit, t, state, Z, bias_term(unit, t))
