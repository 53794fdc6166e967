"""The NumPy reference engine: the oracle every faster engine is tested against.

Short and plain on purpose. One work unit = one (width, sample); all grid
points advance together as the columns of one GEMM per layer.

JVP: tangents t^l = d h^l along the input direction v0,
    t^1 = sqrt(sw2/N) Z^1 v0,   t^l = sqrt(sw2/N) Z^l (phi'(h^{l-1}) * t^{l-1}),
renormalised every layer, log |t^l|^2 / |v0|^2 accumulated in float64.

VJP: g^l = dE/dh^l from g^L = gamma (E = <gamma, h^L>) down,
    g^{l-1} = phi'(h^{l-1}) * sqrt(sw2/N) (Z^l)^T g^l,
after a forward pass that keeps h only every k ~ sqrt(L) layers; each segment
is recomputed from its checkpoint with weights regenerated from the counter.
"""

import numpy as np

from ..models import mlp
from . import base

NAME = "numpy"


def available():
    return True


class _Net:
    """One unit's network: per-layer weights, biases and the layer map on (N, P) columns."""

    def __init__(self, config, width, sample):
        self.config, self.width, self.sample = config, width, sample
        self.grid = base.grid(config)
        self.dtype = config.dtype
        self.scale = np.sqrt(self.grid.sigma_w2 / width).astype(self.dtype)
        self.bias_amp = np.sqrt(self.grid.sigma_b2)
        homogeneous = np.zeros(self.grid.points, dtype=bool)
        for act, _, cols in self.grid.groups:
            homogeneous[cols] = act.homogeneous
        self.homogeneous = homogeneous
        self.x1, self.x2, self.v0 = base.inputs(config, width, sample)

    def weights(self, layer):
        return base.weights(self.config, self.width, self.sample, layer, self.dtype)

    def bias_term(self, layer):
        xi = base.bias(self.config, self.width, self.sample, layer)
        return xi[:, None] * self.bias_amp[None, :]

    def initial_state(self):
        """State 'after layer 0': the inputs, no activation applied at layer 1."""
        zeros = np.zeros(self.grid.points)
        return {"h1": None, "h2": None, "ls1": zeros, "ls2": zeros.copy()}

    def layer(self, layer, state, Z=None):
        """h^{l-1} -> h^l for both inputs; returns the new state."""
        Z = self.weights(layer) if Z is None else Z
        P, dt = self.grid.points, self.dtype
        if layer == 1:
            zx = Z @ np.stack([self.x1, self.x2], axis=1).astype(dt)
            zx1 = np.repeat(zx[:, :1], P, axis=1)
            zx2 = np.repeat(zx[:, 1:], P, axis=1)
        else:
            phi = [mlp.activate(self.grid.groups, "phi", state[k]) for k in ("h1", "h2")]
            zx = Z @ np.concatenate(phi, axis=1)
            zx1, zx2 = zx[:, :P], zx[:, P:]
        b = self.bias_term(layer)
        h1, ls1 = mlp.preactivation(zx1, self.scale, b, state["ls1"], self.homogeneous)
        h2, ls2 = mlp.preactivation(zx2, self.scale, b, state["ls2"], self.homogeneous)
        return {"h1": h1, "h2": h2, "ls1": ls1, "ls2": ls2}


def _diverged(net, state):
    """Points whose pre-activations left the float range, or (homogeneous phi) died.

    A non-homogeneous phi whose h underflows to exactly 0 is not diverged: h = 0
    is then its fixed point q* = 0 (tanh, sigma_b2 = 0, ordered phase), log_q
    reads -inf and gradients go on through phi'(0).
    """
    limit = base.divergence_limit(net.dtype)
    bad = np.zeros(net.grid.points, dtype=bool)
    for key in ("h1", "h2"):
        with np.errstate(invalid="ignore"):
            peak = np.max(np.abs(state[key]), axis=0)
        dead = (mlp.mean_square(state[key]) == 0) & net.homogeneous
        bad |= ~np.isfinite(peak) | (peak > limit) | dead
    return bad


def _kill(state, dead):
    """Zero the columns of dead points so no inf/NaN reaches a later GEMM."""
    for key in ("h1", "h2"):
        state[key][:, dead] = 0
    state["ls1"][dead] = 0
    state["ls2"][dead] = 0


def _forward(net, res, rec, track_tangent, checkpoint_every=None):
    """Forward over all layers: records log_q, corr (and tangents); returns checkpoints."""
    cfg = net.config
    P, dt = net.grid.points, net.dtype
    state = net.initial_state()
    dead = np.zeros(P, dtype=bool)
    checkpoints = {0: state} if checkpoint_every else None
    if track_tangent:
        t = np.repeat((net.v0 / np.linalg.norm(net.v0))[:, None], P, axis=1).astype(dt)
        acc = np.zeros(P)
    for layer in range(1, cfg.depth + 1):
        Z = net.weights(layer)
        prev = state
        state = net.layer(layer, prev, Z)
        if track_tangent:
            if layer > 1:
                t = mlp.activate(net.grid.groups, "dphi", prev["h1"]) * t
            t, log_sq = mlp.renormalise(net.scale * (Z @ t))
            acc = acc + log_sq
        newly = _diverged(net, state) & ~dead
        if track_tangent:
            newly |= ~np.isfinite(acc) & ~dead
        res["diverged"][newly] = layer
        dead |= newly
        _kill(state, dead)
        if track_tangent:
            t[:, dead] = 0
        r = rec[layer]
        if r >= 0:
            res["log_q"][:, r] = np.where(dead, np.nan, mlp.log_q(state["h1"], state["ls1"]))
            res["corr"][:, r] = np.where(dead, np.nan, mlp.correlation(state["h1"], state["h2"]))
            if track_tangent:
                res["log_tangent_norm"][:, r] = np.where(dead, np.nan, acc)
        if checkpoint_every and layer % checkpoint_every == 0 and layer < cfg.depth:
            checkpoints[layer] = state
    return dead, checkpoints


def _backward(net, res, rec, dead, checkpoints, k):
    """Backprop from h^L to h^1 segment by segment, recomputing each from its checkpoint."""
    cfg = net.config
    L, P = cfg.depth, net.grid.points
    gamma = base.output_direction(cfg, net.width, net.sample)
    g = np.repeat((gamma / np.linalg.norm(gamma))[:, None], P, axis=1).astype(net.dtype)
    acc = np.zeros(P)
    collapsed = np.zeros(P, dtype=bool)
    if rec[L] >= 0:
        res["log_grad_norm"][:, rec[L]] = np.where(dead, np.nan, 0.0)
    for start in sorted(checkpoints, reverse=True):
        stop = min(start + k, L)
        states = {start: checkpoints[start]}
        for layer in range(start + 1, stop + 1):
            states[layer] = net.layer(layer, states[layer - 1])
        for layer in range(stop, max(start, 1), -1):
            Z = net.weights(layer)
            u = net.scale * (Z.T @ g)
            g = mlp.activate(net.grid.groups, "dphi", states[layer - 1]["h1"]) * u
            g, log_sq = mlp.renormalise(g)
            acc = acc + log_sq
            newly = ~np.isfinite(acc) & ~collapsed & ~dead
            res["diverged"][newly] = layer - 1
            collapsed |= newly
            g[:, collapsed | dead] = 0
            r = rec[layer - 1]
            if r >= 0:
                res["log_grad_norm"][:, r] = np.where(dead | collapsed, np.nan, acc)


def run_unit(config, width, sample):
    """Run one (width, sample) for every grid point; arrays shaped (A, W, B[, R]).

    The MLP runs here; every other architecture through its model's step in
    engines.generic (which reproduces this MLP to rounding: tests/test_architectures.py).
    """
    if config.architecture != "mlp":
        from . import generic

        return generic.run_unit(config, width, sample)
    net = _Net(config, width, sample)
    res = base.empty_results(config)
    rec = base.record_index(config)
    track_tangent = "jvp" in config.modes
    k = config.checkpoint_every if "vjp" in config.modes else None
    dead, checkpoints = _forward(net, res, rec, track_tangent, checkpoint_every=k)
    if k:
        _backward(net, res, rec, dead, checkpoints, k)
    return base.shape_results(config, res)
