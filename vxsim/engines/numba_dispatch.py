"""The Numba engine's one parallel entry point, ``run``, lowering schedule steps on every lane.

Part of the generated kernel module (see ``numba_epilogue``): it follows the
epilogues there, for the registered activations.

Every parallel operation is ``run(buffers, steps, first, last, fused)``: one task
per lane (thread; ``wbuf.shape[0]`` of them), each doing ``_lane`` on its share of
the points (p = lane, lane + lanes, ...: activation groups are contiguous, so
striding spreads each activation's cost over every lane). A single parallel
function keeps the JIT time down (Numba's parallel lowering costs seconds per
function) and a single signature per dtype. ``steps`` is the unit's schedule
lowered by ``numba_cpu`` (``numba_types.STEP`` records).

GEMM path, per layer: one BLAS call, then one ``run`` of a single step doing
the points' epilogues *and* generating the Z (and bias noise, double-buffered in
``xis[layer % 2]``) of the next GEMM, so the thread pool wakes once per layer
and the generator runs on every core while BLAS sleeps.

Fused path: the pass in runs of steps (``numba_cpu._shared_draws``): first one
``run`` of PREFETCH rows, every lane drawing its share of each Z^l (and xi^l)
the run needs into shared slots, then one ``run`` taking each lane's points
through all the run's steps, the products a block of points at a time
(``numba_matvec.rows_times``: Z read once per six rows, not once per row). No
synchronisation between the layers of a run, which at small widths costs more
than the arithmetic; two per run. (Until 2026-12-04 each lane drew every Z^l
itself: lanes times the generator's work, and a copy of each kept Z^l per lane.)
"""

import numpy as np
from numba import njit, prange

from vxsim.engines.layout import I_COLLAPSED, I_DEAD
from vxsim.engines.numba_epilogue import (
    KIND_JVP,
    KIND_JVP_KEEP,
    _backward_point,
    _forward_point,
    _recompute_point,
    _restart_share,
)
from vxsim.engines.numba_matvec import rows_times, transpose_into
from vxsim.engines.numba_normals import CHUNK, _fill_chunk, fill_share
from vxsim.engines.numba_types import OP_BACKWARD, OP_FORWARD, OP_RECOMPUTE, OP_RESTART
from vxsim.engines.numba_types import OPT_NOREF as _OPT
from vxsim.engines.numba_types import PAR as _PAR

# Points per block of the fused path: their rows (3 each in JVP) go through
# ``rows_times`` together, then their epilogues, while the outputs are in cache.
GROUP = 8


@njit(**_OPT)
def _fused_lane(p0, lanes, b, steps, first, last, Zt, rows, pts):
    """Steps first..last-1 for the points of one lane, each step's Z^l and xi^l read from
    its slot (``b.Zs[0, slot]``, ``b.xis[slot]``), drawn there before by every lane.

    Each step's products go through ``numba_matvec.rows_times`` in blocks of up to
    GROUP live points (forward: the rows of A times Z^T, transposed once per step
    into ``Zt``; backward: the rows of G times Z), each block's epilogues right after.
    ``rows`` (3 GROUP) and ``pts`` (GROUP): the lane's scratch for a block's indices.
    """
    P = b.pi.shape[1]
    pi = b.pi
    for i in range(first, last):
        s = steps[i]
        op = s.op
        if op == OP_RESTART:
            _restart_share(p0, lanes, s.ci, b.x1, b.A, b.cp, b.cp_ls, b.pf, pi, b.D)
            continue
        Z = b.Zs[0, s.slot]
        xi = b.xis[s.slot]
        if op == OP_FORWARD or op == OP_RECOMPUTE:
            transpose_into(Zt, Z)
        H, A = b.H, b.A
        jvp = op == OP_FORWARD and (s.kind == KIND_JVP or s.kind == KIND_JVP_KEEP)
        per = 1 if op != OP_FORWARD else (3 if jvp else 2)
        p = p0
        while p < P:
            count = 0
            while p < P and count < GROUP:
                live = pi[I_DEAD, p] == 0
                if op == OP_BACKWARD:
                    live = live and pi[I_COLLAPSED, p] == 0
                if live:
                    pts[count] = p
                    for c in range(per):
                        rows[count * per + c] = c * P + p
                    count += 1
                p += lanes
            if op == OP_FORWARD:
                rows_times(A, Zt, H, rows, count * per)
                for q in range(count):
                    _forward_point(pts[q], s.layer, s.kind, H, A, b.D, s.j, xi, s.bias != 0,
                                   b.pf, pi, b.res, s.r, b.limit, b.cp, b.cp_ls, s.ci)  # fmt: skip
            elif op == OP_RECOMPUTE:
                rows_times(A, Zt, H, rows, count)
                for q in range(count):
                    pq = pts[q]
                    _recompute_point(pq, H, A, xi, s.bias != 0, b.pf, pi, b.D[s.j, pq])
            elif op == OP_BACKWARD:
                rows_times(b.G, Z, b.U, rows, count)
                for q in range(count):
                    pq = pts[q]
                    _backward_point(pq, s.layer - 1, b.G, b.U, b.D[s.j, pq], b.pf, pi, b.res, s.r)


@njit(**_OPT)
def _gemm_lane(p0, lanes, b, s, w, o):
    """One step's epilogues (after its GEMM) for the points of one lane, then the lane's
    share of what the next step needs (Z^nxt into slot nxt_slot, xi^nxt)."""
    P = b.pi.shape[1]
    op = s.op
    xi = b.xis[s.layer % 2]
    if op == OP_FORWARD:
        for p in range(p0, P, lanes):
            _forward_point(p, s.layer, s.kind, b.H, b.A, b.D, s.j, xi, s.bias != 0, b.pf, b.pi,
                           b.res, s.r, b.limit, b.cp, b.cp_ls, s.ci)  # fmt: skip
    elif op == OP_RECOMPUTE:
        for p in range(p0, P, lanes):
            _recompute_point(p, b.H, b.A, xi, s.bias != 0, b.pf, b.pi, b.D[s.j, p])
    elif op == OP_RESTART:
        _restart_share(p0, lanes, s.ci, b.x1, b.A, b.cp, b.cp_ls, b.pf, b.pi, b.D)
    elif op == OP_BACKWARD:
        for p in range(p0, P, lanes):
            _backward_point(p, s.layer - 1, b.G, b.U, b.D[s.j, p], b.pf, b.pi, b.res, s.r)
    xi_nxt = b.xis[s.nxt_xi]
    fill_share(b.Zs[0, s.nxt_slot], xi_nxt, s.nxt, s.nxt_bias != 0, b.keys, w, o, p0, lanes)


@njit(**_PAR)
def run(b, steps, first, last, fused):
    """Steps first..last-1 of ``steps`` on every lane: all of them per lane (``fused``),
    else each in turn (a GEMM pass's one step after its GEMM, or PREFETCH rows: see
    above). ``b``: numba_types.Buffers."""
    lanes = b.wbuf.shape[0]
    P = b.pi.shape[1]
    for lu in prange(lanes):
        lane = np.int64(lu)
        if fused:
            if P > lane:
                n = b.Zs.shape[2]
                Zt = np.empty((n, n), dtype=b.Zs.dtype)
                rows = np.empty(3 * GROUP, dtype=np.int64)
                pts = np.empty(GROUP, dtype=np.int64)
                _fused_lane(lane, lanes, b, steps, first, last, Zt, rows, pts)
        else:
            for i in range(first, last):
                _gemm_lane(lane, lanes, b, steps[i], b.wbuf[lane], b.obuf[lane])


@njit(**_OPT)
def stream_normals(out, layer, sample, stream, k0, k1, wbuf, obuf):
    """out[i] = normal i of the stream (layer, sample, stream) under the key (k0, k1), as
    rng.normals draws it, on the calling thread: a unit's inputs and output direction
    (a few widths of normals; rng.normals spends ~0.3 ms on each, a parallel call
    more on waking the thread pool)."""
    count = out.size
    for c in range(((count + 3) // 4 + CHUNK - 1) // CHUNK):
        _fill_chunk(out, c, count, layer, sample, stream, k0, k1, wbuf, obuf)
