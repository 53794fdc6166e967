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


def streams(n_gates):
    """The rng streams an RNN with ``n_gates`` gates draws: inputs, output direction,
    biases xi_g, the sequence x_t, and Z_g, Z_{U,g} for every gate."""
    return (
        rng.STREAM_INPUT,
        rng.STREAM_OUTPUT_GRAD,
        rng.STREAM_BIAS,
        rng.STREAM_SEQUENCE,
        *(rng.STREAM_GATE + g for g in range(n_gates)),
        *(rng.STREAM_GATE_INPUT + g for g in range(n_gates)),
    )


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


# Steps t whose input drives one GEMM computes, and how many such blocks are kept:
# a step's drive is asked for up to three times (step, tangent, cotangent), and
# the VJP's segments revisit the steps of the last checkpoint interval going down.
DRIVE_BLOCK = 64
DRIVE_BLOCKS_KEPT = 3


def drive(unit, t, n_gates):
    """[Z_{U,g} x_t] / sqrt(N) stacked over gates, (G N,) float64: U_g x_t = sqrt(su2) * this.

    Computed for DRIVE_BLOCK consecutive steps at once, Z_U [x_t0 ... x_t0+B-1]
    (one GEMM, reading Z_U once, instead of a matrix-vector product per step and
    use), and kept for the last DRIVE_BLOCKS_KEPT blocks.
    """
    blocks = unit.tied("drives", dict)
    block = (t - 1) // DRIVE_BLOCK
    if block not in blocks:
        Z_U = unit.tied(
            "U",
            lambda: np.concatenate(
                [unit.matrix(0, rng.STREAM_GATE_INPUT + g, np.float64) for g in range(n_gates)]
            ),
        )
        steps = range(
            block * DRIVE_BLOCK + 1, min((block + 1) * DRIVE_BLOCK, unit.config.depth) + 1
        )
        X = np.stack([unit.normals(s, rng.STREAM_SEQUENCE) for s in steps], axis=1)
        blocks[block] = Z_U @ (np.sqrt(unit.config.input_variance) * X) / np.sqrt(unit.width)
        while len(blocks) > DRIVE_BLOCKS_KEPT:
            del blocks[next(iter(blocks))]  # the oldest
    return blocks[block][:, (t - 1) % DRIVE_BLOCK]


def input_bias(unit, t, n_gates, shifted=None, axis=None):
    """U_g x_t + b_g per column, (G N, 2P) float64, plus the grid axis ``axis`` on gate ``shifted``.

    b_g = sqrt(sb2) xi_g with xi_g tied; the shift is a gate-bias axis (update_bias,
    forget_bias).
    """
    N = unit.width
    xi = unit.tied(
        "xi", lambda: np.concatenate([unit.normals(g, rng.STREAM_BIAS) for g in range(n_gates)])
    )
    sb = unit.tied("sqrt_sigma_b2", lambda: unit.per_point(np.sqrt(unit.grid.sigma_b2)))
    su = unit.tied("sqrt_sigma_u2", lambda: unit.per_point(np.sqrt(unit.grid.extra["sigma_u2"])))
    out = xi[:, None] * sb[None, :] + drive(unit, t, n_gates)[:, None] * su[None, :]
    if axis is not None:
        shift = unit.tied(axis, lambda: unit.per_point(unit.grid.extra[axis]))
        out[shifted * N : (shifted + 1) * N] += shift[None, :]
    return out


def preactivation(unit, Zg, h, bias):
    """sqrt(sw2/N) (Zg @ h) + bias, per column, in the run's precision."""
    copies = h.shape[1] // unit.P
    return scale(unit, copies) * (Zg @ h) + bias.astype(h.dtype)


def remember(unit, t, prev, values):
    """Keep the gate values that step t computed from the state ``prev``.

    The driver calls a step's tangent (and, recomputing a VJP segment, the
    cotangent of the last step it recomputed) with the very same state object
    right after the step, before anything else touches it: ``recall`` then
    hands back trajectory 1's columns instead of a second GEMM. While a VJP
    keeps every layer (``unit.step_store``, see engines.generic.vjp_plan), a
    copy of trajectory 1's values is kept for the cotangent of step t too.
    """
    unit.step_gates = (t, prev, values)
    if unit.step_store is not None:
        unit.step_store[t] = {name: value[:, : unit.P].copy() for name, value in values.items()}


def recall(unit, t, prev):
    """Trajectory 1's gate values of step t from ``prev``, if kept (see ``remember``), else None."""
    kept = unit.step_gates
    if kept is not None and kept[0] == t and kept[1] is prev:
        return {name: value[:, : unit.P] for name, value in kept[2].items()}
    if unit.step_store:
        return unit.step_store.pop(t, None)  # the backward pass uses each once
    return None


def trajectory_one(unit, state):
    """The first trajectory's columns of a state array ((rows, 2P), or (rows, P) already)."""
    return state[:, : unit.P]
