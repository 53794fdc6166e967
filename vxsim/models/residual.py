"""What one layer of a residual MLP computes (NumPy; engines.generic drives it).

    h^0 = x,   h^l = h^{l-1} + alpha (sqrt(sw2/N) Z^l phi(h^{l-1}) + sqrt(sb2) xi^l)

with ``alpha`` a grid axis (alpha = 1/sqrt(L) keeps the sum of L branches O(1)).
Tangents and gradients keep the skip path:

    t^l = t^{l-1} + alpha sqrt(sw2/N) Z^l (phi'(h^{l-1}) * t^{l-1}),
    g^{l-1} = g^l + alpha phi'(h^{l-1}) * sqrt(sw2/N) (Z^l)^T g^l.

As in the MLP, h = exp(ls) hh with hh renormalised every layer where phi is
positively homogeneous: h^l = e^ls (hh + alpha (s Z phi(hh) + e^-ls b)).
"""

import sys

import numpy as np

from .. import rng
from .architecture import Architecture
from .mlp import (  # noqa: F401  (the rest of the model is the MLP's)
    EXP_CAP,
    LOG_SCALE,
    arrays,
    bias_term,
    cotangent_start,
    mean_square,
    observe,
    scale,
    start,
    tangent_start,
    weights,
)

TIED_WEIGHTS = False  # a fresh Z^l for every layer, as in the MLP
STEP_VALUES = 0


def alpha(unit, copies=1):
    return unit.tied(
        ("alpha", copies),
        lambda: unit.per_point(unit.grid.extra["alpha"], copies).astype(unit.dtype),
    )


def step(unit, layer, state, Z):
    """h^l from h^{l-1} (both trajectories, or trajectory 1 alone when the VJP
    recomputes a segment), renormalised where phi is homogeneous."""
    hh, ls = state["h"], state["ls"]
    columns = hh.shape[1]
    copies = columns // unit.P
    branch = scale(unit, copies) * (Z @ unit.activate("phi", hh))
    bias = bias_term(unit, layer)[:, :columns] * np.exp(np.minimum(-ls, EXP_CAP))
    h = hh + alpha(unit, copies) * (branch + bias.astype(hh.dtype))
    rms = np.sqrt(mean_square(h))
    renorm = unit.homogeneous_columns(copies) & (rms > 0)
    divisor = np.where(renorm, rms, 1.0)
    return {"h": h / divisor.astype(h.dtype), "ls": ls + np.log(divisor)}


def tangent(unit, layer, prev, Z, t):
    """t^l = t^{l-1} + alpha sqrt(sw2/N) Z^l (phi'(h^{l-1}) * t^{l-1})."""
    d = unit.activate("dphi", prev["h"][:, : unit.P])
    return t + alpha(unit) * scale(unit) * (Z @ (d * t))


def cotangent(unit, layer, prev, Z, g):
    """g^{l-1} = g^l + alpha phi'(h^{l-1}) * sqrt(sw2/N) (Z^l)^T g^l."""
    d = unit.activate("dphi", prev["h"][:, : unit.P])
    return g + alpha(unit) * d * (scale(unit) * (Z.T @ g))


def mean_field(config):
    """The power-law growth exponent of the mean-field gradient curves (theory.residual)."""
    from ..theory.architectures import power_law_rates  # here: importing a model needs no SciPy

    return power_law_rates(config)


ARCHITECTURE = Architecture(
    name="residual",
    order=1,
    steps=sys.modules[__name__],
    axes={"alpha": [1.0]},
    streams=(rng.STREAM_INPUT, rng.STREAM_OUTPUT_GRAD, rng.STREAM_WEIGHT, rng.STREAM_BIAS),
    growth_law="power",  # |g^l|^2 ~ l^rate (Yang & Schoenholz 2017)
    mean_field=mean_field,
    fast_paths=("numba", "cuda"),  # fused epilogues (engines.numba_rnn, engines.cuda_residual)
)
