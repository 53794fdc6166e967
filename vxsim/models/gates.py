"""What the recurrent models share: tied gate matrices, the input drive, the sigmoid.

An RNN with G gates (Elman: G = 1, GRU: 3, LSTM: 4) has, for every gate g,

    W_g = sqrt(sw2/N) Z_g,   U_g = sqrt(su2/N) Z_{U,g},   b_g = sqrt(sb2) xi_g,

Z_g from stream rng.STREAM_GATE + g, Z_{U,g} from rng.STREAM_GATE_INPUT + g and xi_g
from rng.STREAM_BIAS at layer g, drawn **once** per sample (``unit.tied``) and
used at every time step. The inputs x_t have i.i.d. N(0, q_x) entries (stream
rng.STREAM_SEQUENCE at layer t), shared by both trajectories and every grid point.
"""

import numpy as np

from .. import rng
from .mlp import scale


def sigmoid(x):
    """(sigma(x), 1 - sigma(x)) for sigma(x) = 1/(1 + exp(-x)), without overflow.

    With e = exp(-|x|) <= 1: sigma(|x|) = 1/(1 + e) and sigma(-|x|) = e/(1 + e),
    and 1 - sigma(x) = sigma(-x), so both are accurate in both tails.
    """
    e = np.exp(-np.abs(x))
    big = 1.0 / (1.0 + e)
    small = e * big
    positive = x >= 0
    return np.where(positive, big, small), np.where(positive, small, big)


def tied_weights(unit, n_gates):
    """The stacked (G N x N) [Z_0; Z_1; ...] in the run's precision, the same at every step."""
    return unit.tied(
        "W", lambda: np.concatenate([unit.matrix(0, rng.STREAM_GATE + g) for g in range(n_gates)])
    )


def drive(unit, t, n_gates):
    """[Z_{U,g} x_t] / sqrt(N) stacked over gates, (G N,) float64: U_g x_t = sqrt(su2) * this."""
    Z_U = unit.tied(
        "U",
        lambda: np.concatenate(
            [unit.matrix(0, rng.STREAM_GATE_INPUT + g, np.float64) for g in range(n_gates)]
        ),
    )
    x = np.sqrt(unit.config.input_variance) * unit.normals(t, rng.STREAM_SEQUENCE)
    return Z_U @ x / np.sqrt(unit.width)


def input_bias(unit, t, n_gates, shifted=None, axis=None):
    """U_g x_t + b_g per column, (G N, 2P) float64, plus the grid axis ``axis`` on gate ``shifted``.

    b_g = sqrt(sb2) xi_g with xi_g tied; the shift is a gate-bias axis (update_bias,
    forget_bias).
    """
    N = unit.width
    xi = unit.tied(
        "xi", lambda: np.concatenate([unit.normals(g, rng.STREAM_BIAS) for g in range(n_gates)])
    )
    sb = unit.per_point(np.sqrt(unit.grid.sigma_b2))
    su = unit.per_point(np.sqrt(unit.grid.extra["sigma_u2"]))
    out = xi[:, None] * sb[None, :] + drive(unit, t, n_gates)[:, None] * su[None, :]
    if axis is not None:
        out[shifted * N : (shifted + 1) * N] += unit.per_point(unit.grid.extra[axis])[None, :]
    return out


def preactivation(unit, Zg, h, bias):
    """sqrt(sw2/N) (Zg @ h) + bias, per column, in the run's precision."""
    copies = h.shape[1] // unit.P
    return scale(unit, copies) * (Zg @ h) + bias.astype(h.dtype)


def trajectory_one(state):
    """The first trajectory's columns of a (rows, 2P) state array."""
    return state[:, : state.shape[1] // 2]
