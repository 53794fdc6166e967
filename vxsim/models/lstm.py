"""What one time step of an LSTM computes (NumPy; engines.generic drives it).

Hochreiter & Schmidhuber (1997) with a forget gate (Gers et al. 2000), no peepholes:

    i_t = sigma(W_i h_{t-1} + U_i x_t + b_i)
    f_t = sigma(W_f h_{t-1} + U_f x_t + b_f + forget_bias)
    g_t = phi(W_g h_{t-1} + U_g x_t + b_g)
    o_t = sigma(W_o h_{t-1} + U_o x_t + b_o)
    c_t = f_t * c_{t-1} + i_t * g_t,    h_t = o_t * phi(c_t)

phi is the grid's activation, the gates are the logistic sigmoid
(``models.gates.sigmoid``). Every gate k = i, f, g, o (stream offset 0..3,
PyTorch's order) has W_k = sqrt(sw2/N) Z_k, U_k = sqrt(su2/N) Z_{U,k},
b_k = sqrt(sb2) xi_k, drawn once per sample from the streams of ``models.gru``
and tied across the T = depth steps; the inputs x_t are shared by both
trajectories, which start from (h_0, c_0) = (x1, 0) and (x2, 0).
``forget_bias`` is a grid axis: large forget_bias drives f -> 1, so the cell
keeps its content and gradients along c decay slowly (Gers et al. 2000;
Jozefowicz et al. 2015 recommend forget_bias = 1).

The state is (h, c). Tangents and cotangents are of the whole state, stacked as
(2N, P) arrays [dh; dc] of trajectory 1: the tangent starts at (v0, 0), the
cotangent at dE/d(h_T, c_T) = (gamma, 0) (E = <gamma, h_T>), and the recorded
log norms are of the stacked vector. With a the (4N,) gate pre-activations and
every W_k applied to the previous h:

    di = i (1 - i) W_i dh,  df = f (1 - f) W_f dh,  do = o (1 - o) W_o dh,  dg = phi'(a_g) W_g dh
    dc_t = df c + f dc + di g + i dg,    dh_t = do phi(c_t) + o phi'(c_t) dc_t;

    e = g_c + o phi'(c_t) g_h        (the whole gradient reaching c_t)
    g_{c,t-1} = f e,
    g_{h,t-1} = W_i^T (i (1-i) g e) + W_f^T (f (1-f) c e) + W_g^T (phi'(a_g) i e)
                + W_o^T (o (1-o) phi(c_t) g_h).

Nothing is renormalised (LOG_SCALE = False); log q_t and c_t are of h_t.
"""

import sys

import numpy as np

from . import inputs
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
from .mlp import scale

LOG_SCALE = False
TIED_WEIGHTS = True  # weights(unit, t): one [Z_i; Z_f; Z_g; Z_o] for every step
TANGENT_BLOCKS = 2  # a tangent is [dh; dc], 2N rows: the Jacobian spectrum has 2N values
STEP_VALUES = 10  # (N, P) arrays of gate values a VJP keeps per step (gates.remember)
GATES = ("i", "f", "g", "o")  # gate k uses streams STREAM_GATE + k, STREAM_GATE_INPUT + k
I, F, G, O = 0, 1, 2, 3  # gate k: rows k N : (k + 1) N of the stacked pre-activations
BIAS_AXIS = "forget_bias"


def arrays(state):
    """The arrays of a state that can leave the float range."""
    return (state["h"], state["c"])


def observe(state):
    """(h, zeros): log q_t = log mean h_t^2, c_t from the two trajectories' h_t."""
    return state["h"], np.zeros_like(state["h"][0], dtype=np.float64)


def start(unit):
    """(h_0, c_0) = (x1 | x2, 0), each repeated for the P grid points."""
    P = unit.P
    h = np.concatenate([np.repeat(unit.x1[:, None], P, 1), np.repeat(unit.x2[:, None], P, 1)], 1)
    return {"h": h.astype(unit.dtype), "c": np.zeros_like(h, dtype=unit.dtype)}


def tangent_start(unit):
    """(dh_0, dc_0) = (v0, 0) stacked, (2N, P)."""
    v = np.repeat(unit.v0[:, None], unit.P, 1).astype(unit.dtype)
    return np.concatenate([v, np.zeros_like(v)])


def cotangent_start(unit):
    """dE/d(h_T, c_T) = (gamma, 0) stacked, (2N, P), for E = <gamma, h_T>."""
    gamma = unit.asarray(inputs.output_direction(unit.config, unit.width, unit.sample))
    g = np.repeat(gamma[:, None], unit.P, 1).astype(unit.dtype)
    return np.concatenate([g, np.zeros_like(g)])


def weights(unit, layer):
    """[Z_i; Z_f; Z_g; Z_o] (4N x N), the same object at every step (tied)."""
    return tied_weights(unit, len(GATES))


def gates(unit, t, h, c, W):
    """Gates and the new cell at step t from (h_{t-1}, c_{t-1}) = (h, c), (N, k P), k = 2 or 1.

    One GEMM gives all four pre-activations.
    """
    N = unit.width
    copies = h.shape[1] // unit.P
    bias = input_bias(unit, t, len(GATES), F, BIAS_AXIS)[:, : copies * unit.P]
    a = preactivation(unit, W, h, bias)
    (i, i_c), (f, f_c), (o, o_c) = (sigmoid(a[k * N : (k + 1) * N]) for k in (I, F, O))
    a_g = a[G * N : (G + 1) * N]
    g = unit.activate("phi", a_g)
    c_new = f * c + i * g
    return {
        "i": i, "1-i": i_c, "f": f, "1-f": f_c, "o": o, "1-o": o_c,
        "a_g": a_g, "g": g, "c": c_new, "phi_c": unit.activate("phi", c_new),
    }  # fmt: skip


def step(unit, t, state, W):
    """c_t = f * c_{t-1} + i * g, h_t = o * phi(c_t), both trajectories."""
    k = gates(unit, t, state["h"], state["c"], W)
    remember(unit, t, state, k)
    return {"h": k["o"] * k["phi_c"], "c": k["c"]}


def _gates_one(unit, t, prev, W):
    """Trajectory 1's (h, c)_{t-1} and gate values at step t (the step's own when it just ran)."""
    h, c = trajectory_one(unit, prev["h"]), trajectory_one(unit, prev["c"])
    k = recall(unit, t, prev)
    return h, c, (k if k is not None else gates(unit, t, h, c, W))


def _split(v, N):
    return v[:N], v[N:]


def tangent(unit, t, prev, W, v):
    """(dh_t, dc_t) from (dh, dc) = v (module docstring), trajectory 1, stacked (2N, P)."""
    N = unit.width
    h, c, k = _gates_one(unit, t, prev, W)
    dh, dc = _split(v, N)
    da = scale(unit) * (W @ dh)
    di = k["i"] * k["1-i"] * da[I * N : (I + 1) * N]
    df = k["f"] * k["1-f"] * da[F * N : (F + 1) * N]
    do = k["o"] * k["1-o"] * da[O * N : (O + 1) * N]
    dg = unit.activate("dphi", k["a_g"]) * da[G * N : (G + 1) * N]
    dc_new = df * c + k["f"] * dc + di * k["g"] + k["i"] * dg
    dh_new = do * k["phi_c"] + k["o"] * unit.activate("dphi", k["c"]) * dc_new
    return np.concatenate([dh_new, dc_new])


def cotangent(unit, t, prev, W, gv):
    """(g_h, g_c) at t-1 from (g_h, g_c) = gv at t (module docstring), trajectory 1, (2N, P)."""
    N = unit.width
    h, c, k = _gates_one(unit, t, prev, W)
    gh, gc = _split(gv, N)
    e = gc + k["o"] * unit.activate("dphi", k["c"]) * gh
    g_a = [None] * len(GATES)  # gradients of the four gate pre-activations, in gate order
    g_a[I] = k["i"] * k["1-i"] * k["g"] * e
    g_a[F] = k["f"] * k["1-f"] * c * e
    g_a[G] = unit.activate("dphi", k["a_g"]) * k["i"] * e
    g_a[O] = k["o"] * k["1-o"] * k["phi_c"] * gh
    back = scale(unit) * (W.T @ np.concatenate(g_a))
    return np.concatenate([back, k["f"] * e])


ARCHITECTURE = Architecture(
    name="lstm",
    order=4,
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
