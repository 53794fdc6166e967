"""The VJP schedule every engine follows: what a unit keeps, and its operations in order.

A VJP unit runs the forward pass l = 1..L, then backpropagates from g^L = gamma,

    g^{l-1} = (dh^l / dh^{l-1})^T g^l,     l = L, L-1, ..., 2,

and each backward step needs layer l-1's state (trajectory 1's, or its phi') and Z^l.
The plan (``vjp_plan``, decided once per unit from the bytes one layer costs and the
engine's budget) says how they are had:

* ``keep_all``: the forward pass keeps every layer's backward input (and Z^l too when
  that also fits): the backward steps alone, nothing recomputed, memory O(L N P);
* else checkpoints every k layers (``every``; k ~ sqrt(L) by default): the forward pass
  keeps trajectory 1's state at l = k, 2k, ... < L (``checkpoint_index``); then segment
  by segment, last first, a restart from its checkpoint (the input for the first), a
  recomputation of its layers start+1 .. stop-1 and its backward steps stop .. start+1:
  memory O((L/k + k) N P), least at k ~ sqrt(L). ``keep_weights`` then says whether a
  segment's Z^l are kept from its recomputation for its backward steps (k of them fit
  in ``ZSTORE_BYTES``) or drawn again.

``forward_ops`` and ``backward_ops`` spell a pass as small NamedTuples (``Forward``,
``Restart``, ``Recompute``, ``Backward``), each naming the weight slot that holds Z^l
and whether Z^l must be drawn for it (else it is still in its slot); an engine lowers
them one by one (engines.generic, numba_cpu) and decides nothing itself.
"""

from typing import NamedTuple

from .. import progress

# A segment's weights Z^l may be kept from its recomputation for its backward steps
# (one generation per layer instead of two) when they fit in this many bytes; beyond
# it they are drawn again, so memory stays O(sqrt(L) N P).
ZSTORE_BYTES = 256 * 2**20
# Keeping every layer may take this share of the memory available to the unit.
STORE_FRACTION = 0.25


class Plan(NamedTuple):
    """How a VJP unit keeps what its backward pass needs."""

    every: int  # checkpoint spacing k (L when every layer is kept; 0: no VJP)
    keep_all: bool  # the forward pass keeps every layer's backward input: nothing recomputed
    keep_weights: bool  # Z^l kept: every layer's (keep_all) or a segment's (from its recomputation)
    keep_steps: bool  # the model's per-step values (a gated RNN's gates) kept by the forward pass


NO_VJP = Plan(0, False, False, False)


class LayerBytes(NamedTuple):
    """What keeping one layer costs, in bytes."""

    state: int  # its backward input (trajectory 1's state, or phi'(h1))
    weights: int = 0  # its Z^l, every copy the engine holds (0: tied weights)
    steps: int = 0  # the model's per-step values


def store_budget(available, most, override=None):
    """Bytes a VJP may keep to recompute nothing: min(most, STORE_FRACTION * available).

    ``available``: the memory free to the unit (None where unknown: most / 4);
    ``override``: a fixed budget (tests, benchmarks), when not None.
    """
    if override is not None:
        return int(override)
    if available is None:
        return most // 4
    return int(min(most, STORE_FRACTION * available))


def vjp_plan(config, layer, budget, weights_with_state=False):
    """The Plan of a unit whose layers cost ``layer`` (LayerBytes), within ``budget``.

    With engine.checkpoint = 0 and L > 1, every layer is kept when L (state + w) fit,
    w = weights if ``weights_with_state`` (the engine keeps no state without its Z)
    else 0; the Z^l are kept when L (state + weights) fit, the step values when
    L (state + weights + steps) fit. Otherwise checkpoints every
    ``config.checkpoint_every`` layers, a segment's Z^l kept when k weights fit in
    ZSTORE_BYTES (k > 1).
    """
    L = config.depth
    if config.checkpoint == 0 and L > 1:
        must = layer.state + (layer.weights if weights_with_state else 0)
        if L * must <= budget:
            with_weights = L * (layer.state + layer.weights)
            keep_weights = layer.weights > 0 and with_weights <= budget
            keep_steps = layer.steps > 0 and with_weights + L * layer.steps <= budget
            return Plan(L, True, keep_weights, keep_steps)
    every = config.checkpoint_every
    return Plan(every, False, every > 1 and every * layer.weights <= ZSTORE_BYTES, False)


def checkpoint_index(layer, every, depth):
    """Where the forward pass keeps layer l's state: l / k - 1 at l = k, 2k, ... < L; else -1."""
    return layer // every - 1 if every and layer % every == 0 and layer < depth else -1


def checkpoint_count(depth, every):
    """How many checkpoints a pass keeps (at least one slot, so buffers are never empty)."""
    return max(1, (depth - 1) // every)


class Forward(NamedTuple):
    """Forward step to ``layer`` (both trajectories; Z^l drawn into ``slot``)."""

    layer: int
    record: int  # position on the recorded-layer axis, -1: not recorded
    checkpoint: int  # checkpoint index of trajectory 1's state, -1: none
    keep: bool  # keep its backward input (keep_all, l < L)
    slot: int


class Restart(NamedTuple):
    """Start a segment from its checkpoint's state (checkpoint -1: from the input x1)."""

    start: int  # the layer of that state
    checkpoint: int


class Recompute(NamedTuple):
    """Recompute trajectory 1's ``layer`` in the segment from ``start``; Z^l drawn into ``slot``."""

    layer: int
    start: int
    slot: int


class Backward(NamedTuple):
    """Backward step g^{layer-1} from g^{layer}, Z^l from ``slot`` (drawn first if ``draw``)."""

    layer: int
    start: int  # the segment's start (0 when every layer is kept)
    record: int  # position of layer - 1 on the recorded-layer axis, -1: not recorded
    slot: int
    draw: bool


def forward_ops(depth, plan, record):
    """The forward pass, l = 1..L; ``record``: layer -> recorded position (base.record_index)."""
    keep_z = plan.keep_all and plan.keep_weights
    return [
        Forward(
            layer,
            int(record[layer]),
            -1 if plan.keep_all else checkpoint_index(layer, plan.every, depth),
            plan.keep_all and layer < depth,
            layer - 1 if keep_z else 0,
        )
        for layer in range(1, depth + 1)
    ]


def backward_ops(depth, plan, record):
    """The backward pass after ``forward_ops``: g^{L-1} .. g^1, segment by segment.

    Keeping every layer: the backward steps alone (Z^L is still in its slot after the
    forward pass). Else per segment, last first: Restart, Recompute start+1 .. stop-1,
    Backward stop .. start+1 (down to 2); with keep_weights Z^l lives in slot
    l - start - 1 from its recomputation and only Z^stop is drawn for the backward steps.
    """
    keep = plan.keep_weights
    if plan.keep_all:
        return [
            Backward(layer, 0, int(record[layer - 1]), layer - 1 if keep else 0,
                     not keep and layer < depth)
            for layer in range(depth, 1, -1)
        ]  # fmt: skip
    ops = []
    every = plan.every
    for seg in range((depth - 1) // every, -1, -1):
        start = seg * every
        stop = min(start + every, depth)
        ops.append(Restart(start, seg - 1))
        for layer in range(start + 1, stop):
            ops.append(Recompute(layer, start, layer - start - 1 if keep else 0))
        for layer in range(stop, max(start, 1), -1):
            slot = layer - start - 1 if keep else 0
            ops.append(Backward(layer, start, int(record[layer - 1]), slot,
                                layer == stop or not keep))  # fmt: skip
    return ops


def reported(ops, done, total):
    """``ops`` one by one, telling ``progress.step`` after each how many of the unit's
    ``total`` steps are done (``done`` before the first): the engines' progress."""
    for i, op in enumerate(ops, 1):
        yield op
        progress.step(done + i, total)
