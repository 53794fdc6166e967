"""What one layer of a deep random MLP computes, in NumPy (the oracle's arithmetic).

    h^1 = sqrt(sw2/N) Z^1 x + sqrt(sb2) xi^1
    h^l = sqrt(sw2/N) Z^l phi(h^{l-1}) + sqrt(sb2) xi^l

Columns of a (N, P) array are grid points. Pre-activations are carried as
h = exp(log_s) * hh: for positively homogeneous phi (relu, leaky, linear)
hh is renormalised to unit mean square every layer and log_s absorbs the
scale, phi(h) = exp(log_s) phi(hh) and phi'(h) = phi'(hh); otherwise log_s
stays 0 and h is the true pre-activation.
"""

import sys

import numpy as np

from .. import rng
from . import inputs
from .architecture import Architecture
from .inputs import mean_square

# exp(-log_s) rescales the bias of a renormalised state (h = e^log_s hh); -log_s is capped
# here so that exp cannot overflow. Defined once: the residual model, the Numba epilogue
# (engines.layout re-exports it) and the CUDA header (VX_EXP_CAP, generated) use it.
EXP_CAP = 700.0


def preactivation(zx, scale, bias_term, log_s, homogeneous):
    """hh' from zx = Z phi(hh) (or Z x at the first layer).

    h' = sqrt(sw2/N) Z phi(h) + sqrt(sb2) xi; with h = e^{log_s} hh and phi
    homogeneous, h' = e^{log_s} (sqrt(sw2/N) Z phi(hh) + e^{-log_s} sqrt(sb2) xi).
    Returns (hh', log_s') where homogeneous columns are renormalised to unit
    mean square and log_s' = log_s + log rms.
    """
    bias_scale = np.exp(np.minimum(-log_s, EXP_CAP))
    h = zx * scale + (bias_term * bias_scale).astype(zx.dtype)
    rms = np.sqrt(mean_square(h))
    renorm = homogeneous & (rms > 0)
    divisor = np.where(renorm, rms, 1.0).astype(zx.dtype)
    return h / divisor, log_s + np.where(renorm, np.log(np.where(renorm, rms, 1.0)), 0.0)


# ---------------------------------------------------------------- the step, for engines.generic
#
# State of both trajectories as 2P columns: {"h": hh (N, 2P), "ls": log-scale (2P,)},
# h = exp(ls) hh. At layer 0, "h" holds the inputs x1 | x2 (post-activation: layer 1
# applies no phi to them).

LOG_SCALE = True
TIED_WEIGHTS = False  # weights(unit, layer): a fresh Z^l for every layer
STEP_VALUES = 0  # (N, P) arrays a VJP keeps per layer beside the state (gated RNNs: gates)


def arrays(state):
    """The arrays of a state that can leave the float range."""
    return (state["h"],)


def observe(state):
    """(hh, log-scale) whose log mean square is log q^l and whose columns give c^l."""
    return state["h"], state["ls"]


def start(unit):
    """Layer 0: the two inputs, each repeated for the P grid points."""
    P = unit.P
    h = np.concatenate([np.repeat(unit.x1[:, None], P, 1), np.repeat(unit.x2[:, None], P, 1)], 1)
    return {"h": h.astype(unit.dtype), "ls": unit.xp.zeros(2 * P)}


def tangent_start(unit):
    """t^0 = v0, the input tangent, for every grid point."""
    return np.repeat(unit.v0[:, None], unit.P, 1).astype(unit.dtype)


def cotangent_start(unit):
    """g^L = gamma (E = <gamma, h^L>), for every grid point."""
    gamma = unit.asarray(inputs.output_direction(unit.config, unit.width, unit.sample))
    return np.repeat(gamma[:, None], unit.P, 1).astype(unit.dtype)


def weights(unit, layer):
    """Z^l, fresh for every layer."""
    return unit.matrix(layer)


def scale(unit, copies=1):
    """sqrt(sigma_w2 / N) per column, in the run's precision."""
    return unit.tied(
        ("scale", copies),
        lambda: unit.per_point(np.sqrt(unit.grid.sigma_w2 / unit.width), copies).astype(unit.dtype),
    )


def bias_term(unit, layer):
    """b^l = sqrt(sigma_b2) xi^l per column (N, 2P), float64."""
    xi = unit.asarray(inputs.bias(unit.config, unit.width, unit.sample, layer))
    sb = unit.tied("sqrt_sigma_b2", lambda: unit.per_point(np.sqrt(unit.grid.sigma_b2)))
    return xi[:, None] * sb[None, :]


def advance(unit, layer, state, Z, bias):
    """h^l = sqrt(sw2/N) Z phi(h^{l-1}) + bias (Z x at layer 1), renormalised (preactivation).

    The state holds both trajectories (2P columns) or, when the VJP recomputes a
    segment, trajectory 1 alone (P columns); ``bias`` is given for both.
    """
    columns = state["h"].shape[1]
    copies = columns // unit.P
    a = state["h"] if layer == 1 else unit.activate("phi", state["h"])
    h, ls = preactivation(
        Z @ a,
        scale(unit, copies),
        bias[:, :columns],
        state["ls"],
        unit.homogeneous_columns(copies),
    )
    return {"h": h, "ls": ls}


def step(unit, layer, state, Z):
    return advance(unit, layer, state, Z, bias_term(unit, layer))


def tangent(unit, layer, prev, Z, t):
    """t^l = sqrt(sw2/N) Z^l (phi'(h^{l-1}) * t^{l-1}) (t^1 = sqrt(sw2/N) Z^1 v0)."""
    if layer > 1:
        t = unit.activate("dphi", prev["h"][:, : unit.P]) * t
    return scale(unit) * (Z @ t)


def cotangent(unit, layer, prev, Z, g):
    """g^{l-1} = phi'(h^{l-1}) * sqrt(sw2/N) (Z^l)^T g^l."""
    return unit.activate("dphi", prev["h"][:, : unit.P]) * (scale(unit) * (Z.T @ g))


def mean_field(config):
    """The mean-field maps q -> q*, chi1 on the grid (theory.architectures.maps)."""
    from ..theory.architectures import maps  # here, so that importing a model needs no SciPy

    return maps(config)


ARCHITECTURE = Architecture(
    name="mlp",
    order=0,  # first in lists (messages, docs)
    steps=sys.modules[__name__],
    streams=(rng.STREAM_INPUT, rng.STREAM_OUTPUT_GRAD, rng.STREAM_WEIGHT, rng.STREAM_BIAS),
    growth_law="exponential",
    mean_field=mean_field,
    fast_paths=("numba", "cuda"),  # fused kernels (engines.numba_cpu, engines.cuda_gpu)
    dense_critical_line=True,
    spectrum_theory=True,  # J^l = W^l D^{l-1} ... W^1: free products (theory.spectrum)
)
