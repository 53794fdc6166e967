"""Run any architecture of ``vxsim.models`` through one work unit, NumPy arithmetic.

The driver says *how a unit is measured*, the model says *what a step computes*:

* forward over l = 1..L (time steps t for RNNs): the model's ``step`` advances
  both trajectories (the two inputs, or two initial states) as the 2P columns of
  one array, so each layer is one GEMM over every grid point (common random
  numbers); log q^l and c^l are recorded from the model's ``observe``;
* JVP: a tangent of trajectory 1 carried by the model's ``tangent``,
  renormalised every layer, log |t^l|^2 / |t^0|^2 accumulated in float64;
* VJP: from g^L = gamma down, the model's ``cotangent``, after a forward pass
  that keeps the state every k ~ sqrt(L) layers; each segment is recomputed from
  its checkpoint (weights regenerated, or tied ones reused).

Divergence is the oracle's rule (numpy_ref): a point whose state leaves the float
range (or, for homogeneous phi, dies) is flagged at that layer, its later records
are NaN and its columns are zeroed so nothing spreads to its neighbours.

Engines differ only in ``normal_matrix`` (numpy: ``rng.normal_matrix``; numba: its
parallel Philox), so the weights are bit-identical across them.
"""

import importlib

import numpy as np

from .. import rng
from . import base
from .base import mean_square


class Unit:
    """One (width, sample): the grid's per-point parameters and the weight source."""

    def __init__(self, config, width, sample, normal_matrix=None):
        self.config, self.width, self.sample = config, width, sample
        self.grid = base.grid(config)
        self.dtype = config.dtype
        self.P = self.grid.points
        self._normal_matrix = normal_matrix or _numpy_normal_matrix
        homogeneous = np.zeros(self.P, dtype=bool)
        for act, _, cols in self.grid.groups:
            homogeneous[cols] = act.homogeneous
        self.homogeneous = homogeneous
        self.x1, self.x2, self.v0 = base.inputs(config, width, sample)
        self.limit = base.divergence_limit(self.dtype)
        self._tied = {}

    def matrix(self, layer, stream=rng.STREAM_WEIGHT, dtype=None):
        """Z (N x N, run precision unless ``dtype``) of (layer, stream) for this sample."""
        return self._normal_matrix(
            self.config, self.width, self.sample, layer, stream, dtype or self.dtype
        )

    def tied(self, key, make):
        """A per-unit constant (tied RNN weights), made once."""
        if key not in self._tied:
            self._tied[key] = make()
        return self._tied[key]

    def normals(self, layer, stream, count=None):
        return rng.normals(self.config.seed, self.sample, layer, stream, count or self.width)

    def per_point(self, values, copies=2):
        """A (P,) parameter repeated for the ``copies`` trajectories' column blocks."""
        return np.tile(np.asarray(values), copies)

    def activate(self, fn_name, h):
        """phi, phi' or phi'' of h (N, k P) column group by column group."""
        out = np.empty_like(h)
        copies = h.shape[1] // self.P
        with np.errstate(over="ignore", invalid="ignore"):
            for c in range(copies):
                for act, param, cols in self.grid.groups:
                    cc = slice(cols.start + c * self.P, cols.stop + c * self.P)
                    out[:, cc] = getattr(act, fn_name)(h[:, cc], h.dtype.type(param))
        return out


def _numpy_normal_matrix(config, width, sample, layer, stream, dtype):
    return rng.normal_matrix(config.seed, sample, layer, width, stream=stream, dtype=dtype)


def model_of(config):
    """The module of vxsim.models that holds this config's architecture."""
    return importlib.import_module(f"..models.{config.architecture}", __package__)


def _split(v, P):
    return v[..., :P], v[..., P:]


def _log_q(hh, ls):
    """log q^l = log mean(h^2) = 2 ls + log mean(hh^2) (h = e^ls hh)."""
    with np.errstate(divide="ignore"):
        return 2.0 * ls + np.log(mean_square(hh))


def _correlation(h1, h2):
    """c^l = <h1, h2> / (|h1| |h2|) per column."""
    dot = np.einsum("ij,ij->j", h1, h2, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return dot / np.sqrt(mean_square(h1) * mean_square(h2)) / h1.shape[0]


def _renormalise(v):
    """v / |v| per column and log |v|^2 (float64); a zero column stays zero with -inf."""
    sq = np.einsum("ij,ij->j", v, v, dtype=np.float64)
    norm = np.sqrt(sq)
    safe = np.where(norm > 0, norm, 1.0).astype(v.dtype)
    with np.errstate(divide="ignore"):
        return v / safe, np.log(sq)


def _diverged(unit, model, state):
    """(P,) points whose state left the float range in either trajectory (or died)."""
    bad = np.zeros(2 * unit.P, dtype=bool)
    for arr in model.arrays(state):
        with np.errstate(invalid="ignore"):
            peak = np.max(np.abs(arr), axis=0)
        bad |= ~np.isfinite(peak) | (peak > unit.limit)
    h, _ = model.observe(state)
    if model.LOG_SCALE:
        bad |= (mean_square(h) == 0) & np.tile(unit.homogeneous, 2)
    return bad[: unit.P] | bad[unit.P :]


def _kill(unit, model, state, dead):
    both = np.tile(dead, 2)
    for arr in model.arrays(state):
        arr[:, both] = 0
    if "ls" in state:
        state["ls"][both] = 0


def forward(unit, model, res, rec, track_tangent, checkpoint_every=None):
    """Forward over all layers: records log_q, corr (and tangents); returns (dead, checkpoints)."""
    cfg, P = unit.config, unit.P
    state = model.start(unit)
    dead = np.zeros(P, dtype=bool)
    checkpoints = {0: _copy(state)} if checkpoint_every else None
    if track_tangent:
        t, _ = _renormalise(model.tangent_start(unit))
        acc = np.zeros(P)
    for layer in range(1, cfg.depth + 1):
        W = model.weights(unit, layer)
        prev = state
        state = model.step(unit, layer, prev, W)
        if track_tangent:
            t, log_sq = _renormalise(model.tangent(unit, layer, prev, W, t))
            acc = acc + log_sq
        newly = _diverged(unit, model, state) & ~dead
        if track_tangent:
            newly |= ~np.isfinite(acc) & ~dead
        res["diverged"][newly] = layer
        dead |= newly
        _kill(unit, model, state, dead)
        if track_tangent:
            t[:, dead] = 0
        r = rec[layer]
        if r >= 0:
            h, ls = model.observe(state)
            (h1, h2), (ls1, _) = _split(h, P), _split(ls, P)
            res["log_q"][:, r] = np.where(dead, np.nan, _log_q(h1, ls1))
            res["corr"][:, r] = np.where(dead, np.nan, _correlation(h1, h2))
            if track_tangent:
                res["log_tangent_norm"][:, r] = np.where(dead, np.nan, acc)
        if checkpoint_every and layer % checkpoint_every == 0 and layer < cfg.depth:
            checkpoints[layer] = _copy(state)
    return dead, checkpoints


def _copy(state):
    return {k: v.copy() for k, v in state.items()}


def backward(unit, model, res, rec, dead, checkpoints, k):
    """Backprop from layer L to 1 segment by segment, recomputing each from its checkpoint."""
    L, P = unit.config.depth, unit.P
    g, _ = _renormalise(model.cotangent_start(unit))
    acc = np.zeros(P)
    collapsed = np.zeros(P, dtype=bool)
    if rec[L] >= 0:
        res["log_grad_norm"][:, rec[L]] = np.where(dead, np.nan, 0.0)
    for start in sorted(checkpoints, reverse=True):
        stop = min(start + k, L)
        states = {start: checkpoints[start]}
        for layer in range(start + 1, stop + 1):
            states[layer] = model.step(unit, layer, states[layer - 1], model.weights(unit, layer))
        for layer in range(stop, max(start, 1), -1):
            W = model.weights(unit, layer)
            g, log_sq = _renormalise(model.cotangent(unit, layer, states[layer - 1], W, g))
            acc = acc + log_sq
            newly = ~np.isfinite(acc) & ~collapsed & ~dead
            res["diverged"][newly] = layer - 1
            collapsed |= newly
            g[:, collapsed | dead] = 0
            r = rec[layer - 1]
            if r >= 0:
                res["log_grad_norm"][:, r] = np.where(dead | collapsed, np.nan, acc)


def run_unit(config, width, sample, normal_matrix=None):
    """Run one (width, sample) of any architecture; arrays shaped like base.result_shapes."""
    unit = Unit(config, width, sample, normal_matrix)
    model = model_of(config)
    res = base.empty_results(config)
    rec = base.record_index(config)
    k = config.checkpoint_every if "vjp" in config.modes else None
    dead, checkpoints = forward(unit, model, res, rec, "jvp" in config.modes, k)
    if k:
        backward(unit, model, res, rec, dead, checkpoints, k)
    return base.shape_results(config, res)
