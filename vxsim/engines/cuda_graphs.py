"""CUDA Graphs for the device units' step loops: a body of K steps captured once, replayed.

A step of the GEMM-path units is a GEMM and one to three kernels; at depth the
launches, not the work, set the pace. The forward pass (JVP, and the VJP's
forward pass) therefore runs as ceil(L / K) replays of one captured graph:

    body = [step 0, ..., step K-1, vx_clock_advance(K)],
    layer of step k = clock[0] + k,   clock[0] = 1, K + 1, 2K + 1, ...

Nothing that changes from one step to the next is captured by value: the
layer is read on the device from ``clock`` (one int, advanced by the body's
last launch), a layer's record and checkpoint indices from tables on the
device (``Tables.rec[l]``, ``Tables.cpi[l]``, as ``schedule.forward_ops``
gives them), and the RNNs' input drive from a fixed buffer of the body's K
rows, filled (one GEMM, ``gates.DRIVE_BLOCK`` = K steps) before each replay.
Only what every replay shares (pointers, the step's place k in the body,
widths) is captured by value. The steps after the last whole body, and any
unit whose schedule is irregular (a forward pass that keeps Z^l per layer),
run on the step path, their scalars passed by value.

The VJP's backward pass likewise (``run_backward``; Elman, GRU, LSTM, the MLP's
GEMM path, the residual net): its full segments (from a checkpoint, ``every`` layers:
restart, every - 1 recomputed layers, every backward steps) are all alike up to
their start, so one is captured with ``clock[0]`` = its start (the checkpoint
read is clock / every - 1, the backward step to layer clock + i records at
rec[clock + i]; the RNNs' drives of its layers copied before each replay into a
fixed buffer) and replayed for each, the clock going down by ``every``; the
top segment (shorter where every does not divide L) and the first (from the
input, no backward step to layer 1) run on the step path.

``engine.cuda_graphs`` (config): ``"auto"`` (default) and ``"on"`` capture where
a whole body fits in the depth; ``"off"`` runs the step path. On a GPU a capture
that raises is, with "auto", one warning line and the step path (a sweep goes
on), with "on" a one-line error; on the host build (``cuda_host``, the tests)
it raises.
"""

import logging
from typing import NamedTuple

import numpy as np

from ..errors import VxsimError
from . import schedule
from .cuda_backend import i32

log = logging.getLogger("vxsim")

CLOCK_THREADS = 32  # vx_clock_advance: one warp, thread 0 works


class Tables(NamedTuple):
    """A unit's per-layer tables on the device: what every kernel that takes a layer reads
    (step, persistent and captured kernels alike), and a captured body's clock."""

    clock: object  # (1,) int32: the layer of the body's first step
    rec: object  # (L + 1,) int32: layer -> recorded position, -1 none
    cpi: object  # (L + 1,) int32: layer -> checkpoint index, -1 none


def mode(config):
    """The config's ``engine.cuda_graphs`` ("auto" where the config predates it)."""
    return getattr(config, "cuda_graphs", "auto")


def tables(xp, record, ops):
    """The device tables: ``record`` (layer -> recorded position, ``base.record_index``) and
    the checkpoint index of each layer of the forward ``ops`` (``schedule.Forward``, layers
    1..L); the clock at layer 1."""
    cpi = np.full(len(record), -1, dtype=np.int32)
    for op in ops:
        cpi[op.layer] = op.checkpoint
    rec = np.asarray(record, dtype=np.int32)
    return Tables(xp.asarray(np.ones(1, dtype=np.int32)), xp.asarray(rec), xp.asarray(cpi))


def device_bytes(config):
    """Device memory of a unit's ``Tables`` and its segment clock, in bytes."""
    return 4 * (2 * (config.depth + 1) + 2)


def whole_bodies(config, ops, steps):
    """How many whole bodies of ``steps`` the forward ops make (0: the step path only)."""
    if mode(config) == "off" or any(op.slot != 0 for op in ops):
        return 0
    return len(ops) // steps


def capture(be, body, required=False):
    """``body()`` captured on backend ``be`` as a graph (nothing runs); None where the
    capture fails on a GPU (one warning line), the error itself on the host build, and a
    one-line VxsimError where graphs are ``required`` (engine.cuda_graphs = "on")."""
    try:
        be.begin_capture()
        body()
        return be.end_capture()
    except Exception as err:
        be.abort_capture()
        if not getattr(be, "capture_fallback", False):
            raise
        if required:
            raise VxsimError(
                f'engine.cuda_graphs = "on" but the capture failed ({type(err).__name__}: {err})'
            ) from None
        log.warning(
            "CUDA Graph capture failed (%s: %s); the step loop runs uncaptured",
            type(err).__name__,
            err,
        )
        return None


def run_forward(unit, ops, steps):
    """The forward ``ops`` (layers 1..L in order) in replays of one body of ``steps``.

    ``unit`` provides ``tables`` (``Tables``), ``graph_prepare()`` (buffers: before the capture),
    ``graph_before(b)`` (direct launches before replay b: the drives), ``graph_step(k)``
    (step k of the body, captured) and ``step(op)`` (one step with its scalars by value).
    """
    full = whole_bodies(unit.config, ops, steps)
    graph = None
    if full:
        unit.graph_prepare()
        be = unit.be

        def body():
            for k in range(steps):
                unit.graph_step(k)
            be.launch("vx_clock_advance", 1, CLOCK_THREADS, (unit.tables.clock, i32(steps)))

        graph = capture(be, body, required=mode(unit.config) == "on")
        unit.graphs = [*getattr(unit, "graphs", []), graph]  # alive while its launches run
    if graph is None:
        full = 0
    for b in range(full):
        unit.graph_before(b)
        unit.be.replay(graph)
    for op in ops[full * steps :]:
        unit.step(op)


def segments(ops):
    """``schedule.backward_ops`` cut at each Restart: the segments, last first."""
    out = []
    for op in ops:
        if isinstance(op, schedule.Restart):
            out.append([op])
        else:
            out[-1].append(op)
    return out


def full_segments(config, segs, every):
    """Indices of the segments a captured body replays: from a checkpoint, ``every`` layers
    (restart, every - 1 recomputations, every backward steps); none with fewer than two."""
    if mode(config) == "off":
        return []
    full = [i for i, seg in enumerate(segs) if seg[0].start >= 1 and len(seg) == 2 * every]
    return full if len(full) >= 2 else []


def run_backward(unit, ops, every):
    """The backward ``ops`` with their full segments as replays of one captured segment.

    ``unit`` provides ``segment_prepare(start)`` (buffers, ``unit.seg_clock`` at the first
    full segment's start: before the capture), ``segment_before(start)`` (direct launches
    before a replay: the RNNs' drives), ``segment_op(op, start)`` (an op of the captured
    segment from ``start``, its layers read as offsets from the clock) and
    ``backward_op(op)`` (an op with its scalars by value).
    """
    segs = segments(ops)
    full = full_segments(unit.config, segs, every)
    graph = None
    if full:
        template = segs[full[0]]
        start = template[0].start
        assert [segs[i][0].start for i in full] == list(range(start, 0, -every))[: len(full)]
        unit.segment_prepare(start)
        be = unit.be

        def body():
            for op in template:
                unit.segment_op(op, start)
            be.launch("vx_clock_advance", 1, CLOCK_THREADS, (unit.seg_clock, i32(-every)))

        graph = capture(be, body, required=mode(unit.config) == "on")
        unit.graphs = [*getattr(unit, "graphs", []), graph]
    replayed = set(full) if graph is not None else set()
    for i, seg in enumerate(segs):
        if i in replayed:
            unit.segment_before(seg[0].start)
            unit.be.replay(graph)
        else:
            for op in seg:
                unit.backward_op(op)
