"""Run any architecture of ``vxsim.models`` through one work unit, NumPy arithmetic.

The driver says *how a unit is measured*, the model says *what a step computes*:

* forward over l = 1..L (time steps t for RNNs): the model's ``step`` advances
  both trajectories (the two inputs, or two initial states) as the 2P columns of
  one array, so each layer is one GEMM over every grid point (common random
  numbers); log q^l and c^l are recorded from the model's ``observe``;
* JVP: a tangent of trajectory 1 carried by the model's ``tangent``,
  renormalised every layer, log |t^l|^2 / |t^0|^2 accumulated in float64;
* VJP: from g^L = gamma down, the model's ``cotangent``, in the order of
  ``schedule.backward_ops``: after a forward pass that keeps the state every
  k ~ sqrt(L) layers, each segment is recomputed from its checkpoint (weights
  regenerated, or tied ones reused), for trajectory 1 alone (the gradient is of
  its output only): half the forward's columns. Where the engine's store budget
  allows (``vjp_plan``, a ``schedule.Plan``), the forward pass keeps every layer
  instead and nothing is recomputed.

Divergence is the oracle's rule (numpy_ref): a point whose state leaves the float
range (or, for homogeneous phi, dies) is flagged at that layer, its later records
are NaN and its columns are zeroed so nothing spreads to its neighbours.

Engines differ only in where a unit's arrays live and how Z is drawn
(``HostArrays``: NumPy, with ``rng.normal_matrix`` for the oracle and numba's
parallel Philox for the Numba engine; ``cuda_generic.DeviceArrays``: CuPy, with
the CUDA generator), so the weights are bit-identical across them. Models and
this driver compute with NumPy's functions, which dispatch to CuPy on device
arrays (``__array_ufunc__``, ``__array_function__``); arrays are created
through ``unit.xp`` and host data crosses only through ``unit.asarray``.
"""

import contextlib

import numpy as np

from .. import rng
from . import base, schedule, weights
from .base import mean_square


class HostArrays:
    """Where the CPU engines keep a unit: NumPy arrays; Z from ``normal_matrix``
    (default ``rng.normal_matrix``), called as (config, width, sample, layer, stream, dtype);
    ``store_bytes()``: what the VJP may keep to recompute nothing (default 0: the
    oracle always recomputes from checkpoints)."""

    xp = np

    def __init__(self, normal_matrix=None, store_bytes=None):
        self.normal_matrix = normal_matrix or _numpy_normal_matrix
        self.store_bytes = store_bytes or (lambda: 0)

    def asarray(self, x):
        return np.asarray(x)

    def to_host(self, x):
        return x

    def gemm_precision(self, tf32):
        return contextlib.nullcontext()


class Unit:
    """One (width, sample): the grid's per-point parameters and the weight source."""

    def __init__(self, config, width, sample, arrays=None):
        self.config, self.width, self.sample = config, width, sample
        self.arrays = arrays or HostArrays()
        self.xp = self.arrays.xp
        self.grid = base.grid(config)
        self.law = weights.unit_law(config)  # (Law, param): one per unit (engines.run)
        self.dtype = config.dtype
        self.P = self.grid.points
        homogeneous = np.zeros(self.P, dtype=bool)
        for act, _, cols in self.grid.groups:
            homogeneous[cols] = act.homogeneous
        self.homogeneous = homogeneous
        self.x1, self.x2, self.v0 = map(self.asarray, base.inputs(config, width, sample))
        self.limit = base.divergence_limit(self.dtype)
        self._tied = {}
        self.step_gates = None  # (t, state, values) of the last step (models.gates.remember)
        self.step_store = None  # {t: values} a model keeps per step while the VJP keeps all

    def asarray(self, x):
        """Host data where the unit's arrays live (a copy to the GPU on the cuda engine)."""
        return self.arrays.asarray(x)

    def matrix(self, layer, stream=rng.STREAM_WEIGHT, dtype=None):
        """Z (N x N, run precision unless ``dtype``) of (layer, stream) for this sample,
        under the config's weight law where the stream follows it (engines.weights)."""
        return weights.matrix(self, layer, stream, dtype or self.dtype)

    def tied(self, key, make):
        """A per-unit constant (tied RNN weights, per-point parameters), made once."""
        if key not in self._tied:
            self._tied[key] = make()
        return self._tied[key]

    def normals(self, layer, stream, count=None):
        """rng.normals of (layer, stream) for this sample (``width`` of them), as a unit array."""
        z = rng.normals(self.config.seed, self.sample, layer, stream, count or self.width)
        return self.asarray(z)

    def per_point(self, values, copies=2):
        """A (P,) host parameter repeated for the ``copies`` trajectories' column blocks."""
        return self.asarray(np.tile(np.asarray(values), copies))

    def homogeneous_columns(self, copies=2):
        """Which of the ``copies`` P columns have a positively homogeneous phi (renormalised)."""
        return self.tied(("homogeneous", copies), lambda: self.per_point(self.homogeneous, copies))

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
    """The step functions of this config's architecture (its declaration's ``steps``)."""
    return config.arch.steps


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
    bad = unit.xp.zeros(2 * unit.P, dtype=bool)
    for arr in model.arrays(state):
        with np.errstate(invalid="ignore"):
            peak = np.max(np.abs(arr), axis=0)
        bad |= ~np.isfinite(peak) | (peak > unit.limit)
    h, _ = model.observe(state)
    if model.LOG_SCALE:
        bad |= (mean_square(h) == 0) & unit.homogeneous_columns()
    return bad[: unit.P] | bad[unit.P :]


def _zero(arr, columns):
    """arr with the given columns (last axis) set to 0, in place.

    On the host a boolean mask (nothing to do while no column is dead); on a
    device a select, because a mask would stop the host until the GPU caught up.
    """
    if isinstance(arr, np.ndarray):
        arr[..., columns] = 0
    else:
        arr[...] = np.where(columns, arr.dtype.type(0), arr)
    return arr


def _kill(unit, model, state, dead):
    both = np.concatenate([dead, dead])
    for arr in model.arrays(state):
        _zero(arr, both)
    if "ls" in state:
        _zero(state["ls"], both)


def forward(unit, model, res, ops, track_tangent, keep_states=False):
    """Forward over all layers (``schedule.Forward`` ops): records log_q, corr (and tangents).

    Returns (dead, states, slots): with ``keep_states`` (a VJP), trajectory 1's state
    at layer 0 and wherever an op keeps or checkpoints it, by layer; the weight slots
    as the ops left them (Z^l in op.slot).
    """
    P = unit.P
    state = model.start(unit)
    dead = unit.xp.zeros(P, dtype=bool)
    states = {0: _trajectory_one(state, P, copy=True)} if keep_states else None
    slots = {}
    if track_tangent:
        t, _ = _renormalise(model.tangent_start(unit))
        acc = unit.xp.zeros(P)
    for op in ops:
        layer = op.layer
        W = slots[op.slot] = model.weights(unit, layer)
        prev = state
        state = model.step(unit, layer, prev, W)
        if track_tangent:
            t, log_sq = _renormalise(model.tangent(unit, layer, prev, W, t))
            acc = acc + log_sq
        newly = _diverged(unit, model, state) & ~dead
        if track_tangent:
            newly |= ~np.isfinite(acc) & ~dead
        res["diverged"][...] = np.where(newly, layer, res["diverged"])
        dead |= newly
        _kill(unit, model, state, dead)
        if track_tangent:
            _zero(t, dead)
        r = op.record
        if r >= 0:
            h, ls = model.observe(state)
            (h1, h2), (ls1, _) = _split(h, P), _split(ls, P)
            res["log_q"][:, r] = np.where(dead, np.nan, _log_q(h1, ls1))
            res["corr"][:, r] = np.where(dead, np.nan, _correlation(h1, h2))
            if track_tangent:
                res["log_tangent_norm"][:, r] = np.where(dead, np.nan, acc)
        if keep_states and (op.keep or op.checkpoint >= 0):
            states[layer] = _trajectory_one(state, P, copy=True)
    return dead, states, slots


def _trajectory_one(state, P, copy=False):
    """The first trajectory's columns of a state (every array's last axis): all the
    backward pass needs, since the gradient is of trajectory 1's output."""
    return {k: v[..., :P].copy() if copy else v[..., :P] for k, v in state.items()}


def vjp_plan(unit, model):
    """The unit's schedule.Plan: every layer kept when trajectory 1's state and, unless
    tied, Z^l fit in ``arrays.store_bytes()`` for all L layers (the step values of a
    gated RNN, model.STEP_VALUES arrays of N x P, too if they also fit); else
    checkpoints every config.checkpoint_every layers."""
    item = unit.dtype.itemsize
    layer = schedule.LayerBytes(
        state=sum(v.nbytes for v in model.start(unit).values()) // 2,
        weights=0 if model.TIED_WEIGHTS else unit.width**2 * item,
        steps=model.STEP_VALUES * unit.width * unit.P * item,
    )
    budget = unit.arrays.store_bytes() if unit.config.checkpoint == 0 else 0
    return schedule.vjp_plan(unit.config, layer, budget, weights_with_state=True)


def backward(unit, model, res, ops, dead, states, slots):
    """Backprop from layer L to 1 (``schedule.backward_ops``): per segment the model's
    steps recompute trajectory 1 from its checkpoint (``states``), then its cotangents
    run down; Z^l is drawn where an op says so, else taken from its slot."""
    P = unit.P
    L = unit.config.depth
    g, _ = _renormalise(model.cotangent_start(unit))
    acc = unit.xp.zeros(P)
    collapsed = unit.xp.zeros(P, dtype=bool)
    r = base.record_index(unit.config)[L]
    if r >= 0:
        res["log_grad_norm"][:, r] = np.where(dead, np.nan, 0.0)
    for op in ops:
        if isinstance(op, schedule.Restart):
            continue  # the segment's first state is its checkpoint, in ``states``
        layer = op.layer
        if isinstance(op, schedule.Recompute):
            W = slots[op.slot] = model.weights(unit, layer)
            states[layer] = model.step(unit, layer, states[layer - 1], W)
            continue
        if op.draw:
            slots[op.slot] = model.weights(unit, layer)
        prev = states.pop(layer - 1)
        g, log_sq = _renormalise(model.cotangent(unit, layer, prev, slots[op.slot], g))
        acc = acc + log_sq
        newly = ~np.isfinite(acc) & ~collapsed & ~dead
        res["diverged"][...] = np.where(newly, layer - 1, res["diverged"])
        collapsed |= newly
        _zero(g, collapsed | dead)
        if op.record >= 0:
            res["log_grad_norm"][:, op.record] = np.where(dead | collapsed, np.nan, acc)


def run_unit(config, width, sample, arrays=None):
    """Run one (width, sample) of any architecture; arrays shaped like base.result_shapes.

    ``arrays``: where the unit lives (``HostArrays()``, NumPy and rng's weights,
    by default); the results come back as NumPy arrays.
    """
    unit = Unit(config, width, sample, arrays)
    model = model_of(config)
    res = {name: unit.asarray(buf) for name, buf in base.empty_results(config).items()}
    rec = base.record_index(config)
    vjp = "vjp" in config.modes
    plan = vjp_plan(unit, model) if vjp else schedule.NO_VJP
    unit.step_store = {} if plan.keep_steps else None
    L = config.depth
    fwd = schedule.forward_ops(L, plan, rec)
    bwd = schedule.backward_ops(L, plan, rec) if vjp else []
    total = len(fwd) + len(bwd)
    with unit.arrays.gemm_precision(config.precision == "tf32"):
        dead, states, slots = forward(
            unit, model, res, schedule.reported(fwd, 0, total), "jvp" in config.modes, vjp
        )
        if vjp:
            ops = schedule.reported(bwd, len(fwd), total)
            backward(unit, model, res, ops, dead, states, slots)
    return base.shape_results(config, {name: unit.arrays.to_host(v) for name, v in res.items()})
