"""What one time step of a gated recurrent unit (GRU) computes (NumPy; engines.generic drives it).

Cho et al. (2014), with the reset gate inside the product and PyTorch's
convention for which side of the update gate keeps the old state:

    r_t = sigma(W_r h_{t-1} + U_r x_t + b_r)
    z_t = sigma(W_z h_{t-1} + U_z x_t + b_z + update_bias)
    n_t = phi(W_n (r_t * h_{t-1}) + U_n x_t + b_n)
    h_t = (1 - z_t) * n_t + z_t * h_{t-1}

phi is the grid's activation, the gates are the logistic sigmoid
sigma(x) = 1 / (1 + exp(-x)) (``sigmoid``, evaluated without overflow).
Every gate g = r, z, n (stream offset 0, 1, 2; PyTorch's order) has

    W_g = sqrt(sw2/N) Z_g,   U_g = sqrt(su2/N) Z_{U,g},   b_g = sqrt(sb2) xi_g,

Z_g from stream rng.STREAM_GATE + g, Z_{U,g} from rng.STREAM_GATE_INPUT + g, xi_g
from rng.STREAM_BIAS at layer g, all drawn **once** per sample and tied across the
T = depth steps. The inputs x_t (i.i.d. N(0, q_x) entries, stream
rng.STREAM_SEQUENCE at layer t) are the same for both trajectories, which start
from the two initial states h_0 = x1, x2. ``update_bias`` is a grid axis: large
update_bias drives z -> 1, h_t ~ h_{t-1}, so memory is kept and gradients pass
through time undamped.

The tangent (JVP, forward in time from dh_0 = v0) and the cotangent (VJP,
backpropagation through time from dE/dh_T = gamma) are the exact derivatives of
the step above, with a_g the gate pre-activations and m = r * h_{t-1}:

    dh_t = (1 - z) dn + z dh + (h - n) dz,   dz = z (1 - z) W_z dh,
    dr = r (1 - r) W_r dh,   dn = phi'(a_n) W_n (dr * h + r * dh);

    g_n = phi'(a_n) (1 - z) g,   g_m = W_n^T g_n,
    g_{t-1} = z g + r g_m + W_z^T (z (1 - z) (h - n) g) + W_r^T (r (1 - r) h g_m).

The state is {"h": (N, 2P)} (trajectory 1 in columns [0:P], trajectory 2 in
[P:2P]); tangents and cotangents are (N, P), of trajectory 1. A step is two
GEMMs over all columns: [Z_r; Z_z] h_{t-1}, then Z_n (r_t * h_{t-1}), which
needs r_t first. Nothing is
renormalised (LOG_SCALE = False): the gates are not homogeneous.
"""

import sys

import numpy as np

from .architecture import Architecture
from .gates import (
    input_bias,
    preactivation,
    recall,
    remember,
    sigmoid,
    streams,
    tied_weights,
    trajectory_one,
)
from .mlp import cotangent_start, scale, tangent_start  # noqa: F401  (the MLP's)

LOG_SCALE = False
TIED_WEIGHTS = True  # weights(unit, t): one [Z_r; Z_z; Z_n] for every step
STEP_VALUES = 6  # (N, P) arrays of gate values a VJP keeps per step (gates.remember)
GATES = ("r", "z", "n")  # gate g uses streams STREAM_GATE + g, STREAM_GATE_INPUT + g
UPDATE = GATES.index("z")  # the gate that update_bias shifts
BIAS_AXIS = "update_bias"


# ---------------------------------------------------------------- the step, for engines.generic


def arrays(state):
    """The arrays of a state that can leave the float range."""
    return (state["h"],)


def observe(state):
    """(h, zeros): log q_t = log mean h_t^2, c_t from the two trajectories' h_t."""
    return state["h"], np.zeros_like(state["h"][0], dtype=np.float64)


def start(unit):
    """h_0: the two initial states x1 | x2, each repeated for the P grid points."""
    P = unit.P
    h = np.concatenate([np.repeat(unit.x1[:, None], P, 1), np.repeat(unit.x2[:, None], P, 1)], 1)
    return {"h": h.astype(unit.dtype)}


def weights(unit, layer):
    """[Z_r; Z_z; Z_n] (3N x N), the same object at every step (tied)."""
    return tied_weights(unit, len(GATES))


def gates(unit, t, h, W):
    """Gate values at step t from h_{t-1} = h (N, k P), k = 2 (both trajectories) or 1.

    Returns r, 1 - r, z, 1 - z, a_n (the candidate's pre-activation) and n = phi(a_n).
    One GEMM gives the r and z pre-activations; the candidate needs r first.
    """
    N = unit.width
    copies = h.shape[1] // unit.P
    bias = input_bias(unit, t, len(GATES), UPDATE, BIAS_AXIS)[:, : copies * unit.P]
    a_rz = preactivation(unit, W[: 2 * N], h, bias[: 2 * N])
    r, one_minus_r = sigmoid(a_rz[:N])
    z, one_minus_z = sigmoid(a_rz[N:])
    a_n = preactivation(unit, W[2 * N :], r * h, bias[2 * N :])
    n = unit.activate("phi", a_n)
    return {"r": r, "1-r": one_minus_r, "z": z, "1-z": one_minus_z, "a_n": a_n, "n": n}


def step(unit, t, state, W):
    """h_t = (1 - z_t) * n_t + z_t * h_{t-1}, both trajectories."""
    h = state["h"]
    g = gates(unit, t, h, W)
    remember(unit, t, state, g)
    return {"h": g["1-z"] * g["n"] + g["z"] * h}


def _gates_one(unit, t, prev, W):
    """Trajectory 1's h_{t-1} and gate values at step t (the step's own when it just ran)."""
    h = trajectory_one(unit, prev["h"])
    g = recall(unit, t, prev)
    return h, (g if g is not None else gates(unit, t, h, W))


def tangent(unit, t, prev, W, v):
    """dh_t = (1 - z) dn + z dh + (h - n) dz (module docstring), trajectory 1."""
    N = unit.width
    h, g = _gates_one(unit, t, prev, W)
    s = scale(unit)
    da = s * (W[: 2 * N] @ v)
    dr = g["r"] * g["1-r"] * da[:N]
    dz = g["z"] * g["1-z"] * da[N:]
    dn = unit.activate("dphi", g["a_n"]) * (s * (W[2 * N :] @ (dr * h + g["r"] * v)))
    return g["1-z"] * dn + g["z"] * v + (h - g["n"]) * dz


def cotangent(unit, t, prev, W, gh):
    """g_{t-1} = z g + r g_m + W_z^T (z (1-z) (h-n) g) + W_r^T (r (1-r) h g_m), trajectory 1."""
    N = unit.width
    h, g = _gates_one(unit, t, prev, W)
    s = scale(unit)
    g_an = unit.activate("dphi", g["a_n"]) * g["1-z"] * gh
    g_m = s * (W[2 * N :].T @ g_an)
    g_ar = g["r"] * g["1-r"] * h * g_m
    g_az = g["z"] * g["1-z"] * (h - g["n"]) * gh
    back = s * (W[: 2 * N].T @ np.concatenate([g_ar, g_az]))
    return g["z"] * gh + g["r"] * g_m + back


ARCHITECTURE = Architecture(
    name="gru",
    order=3,
    steps=sys.modules[__name__],
    axes={"sigma_u2": [1.0], BIAS_AXIS: [0.0]},
    signed_axes=(BIAS_AXIS,),  # a gate-bias shift may be negative
    recurrent=True,
    gates=len(GATES),
    streams=streams(len(GATES)),
    growth_law="exponential",
    fast_paths=("numba", "cuda"),  # fused step kernels (engines.numba_rnn, engines.cuda_rnn)
    mean_field=None,  # no mean-field theory: measured only
)
