"""What the Numba kernels share: compile options, the unit's Buffers, Step rows, op codes.

A unit hands its arrays to the kernels as one ``Buffers`` NamedTuple (Numba takes
NamedTuples of arrays as arguments) and its schedule (``engines.schedule``) as an
array of ``STEP`` records, one per operation, lowered by ``numba_cpu``: the kernels
read ``steps[i].layer`` etc. and decide nothing themselves.
"""

from typing import NamedTuple

import numpy as np

# Options. error_model="numpy": no ZeroDivisionError checks (they block
# vectorisation; a zero or non-finite norm is handled explicitly instead).
OPT = dict(cache=True, error_model="numpy", nogil=True)
# Reductions (sums of squares, dot products) may be reordered so that they
# vectorise; they are float64 (or, in matrix-vector products, the run's dtype
# like BLAS) and tolerance-compared against the oracle anyway.
RED = dict(cache=True, error_model="numpy", nogil=True, fastmath={"reassoc", "contract"})
PAR = dict(cache=True, error_model="numpy", parallel=True)
# The same without reference counting (Numba's internal ``_nrt`` flag), for the
# per-point code, which allocates nothing: each row view (``H[p]``) otherwise
# costs an atomic increment and decrement of its parent's count, on a cache line
# that every thread shares (measured on one thread, 2026-12-04: a call taking two
# row views ~50-105 ns, the same call with ``_nrt=False`` ~17 ns; several views
# per point and layer).
OPT_NOREF = dict(OPT, _nrt=False)
RED_NOREF = dict(RED, _nrt=False)


class Buffers(NamedTuple):
    """Every array of a unit, allocated once (numba_cpu._Unit)."""

    H: np.ndarray  # (rows * P, N) GEMM output: h1 rows, h2 rows (, tangent rows)
    A: np.ndarray  # (rows * P, N) GEMM input: phi(h1), phi(h2) (, phi'(h1) * t)
    G: np.ndarray  # (P, N) gradients g
    U: np.ndarray  # (P, N) Z^T g
    D: np.ndarray  # (every, P, N) phi'(h1) of a segment (or of every layer)
    Zs: np.ndarray  # (1, slots, N, N) weight slots: the schedule's, then the fused path's ring
    xis: np.ndarray  # (slots, N) bias noise: fused path per slot, GEMM path per layer % 2
    x1: np.ndarray  # (N,) the first input, in the run's dtype
    cp: np.ndarray  # (checkpoints, P, N) hh1 at the checkpoints
    cp_ls: np.ndarray  # (checkpoints, P) its log-scale
    pf: np.ndarray  # (N_F, P) float64 per-point table (engines.layout)
    pi: np.ndarray  # (N_I, P) int64 per-point table
    res: np.ndarray  # (4, P, R) records
    wbuf: np.ndarray  # (lanes, 4, CHUNK) uint64 generator scratch (its length: the lanes)
    obuf: np.ndarray  # (lanes, SCRATCH_ROWS, CHUNK) float64 generator scratch
    keys: np.ndarray  # (sample, k0, k1) uint64
    limit: float  # divergence limit of |h|


# Operations (``op`` of a step).
OP_PREFETCH = 0  # nothing but the prefetch (a GEMM pass's first Z; the fused path's draws)
OP_FORWARD = 1  # forward epilogues of ``layer`` after H = A @ Z.T
OP_RECOMPUTE = 2  # h1 epilogues of a recomputed ``layer`` (phi' into D[j])
OP_RESTART = 3  # segment start from checkpoint ``ci`` (ci < 0: from the input x1)
OP_BACKWARD = 4  # backprop steps ``layer`` -> ``layer - 1`` after U = G @ Z

# One lowered schedule operation. The GEMM path's BLAS call reads Z from ``slot`` and
# the step then generates what the next one needs (``nxt`` > 0: Z^nxt into
# ``nxt_slot``, and xi^nxt into ``xis[nxt_xi]`` where ``nxt_bias``). The fused path's
# steps read Z^layer and xi^layer from ``slot``, drawn before by PREFETCH rows (all
# lanes together, ``numba_cpu._shared_draws``); its ``draw`` is then 0.
STEP = np.dtype(
    [
        (name, np.int64)
        for name in (
            "op",
            "layer",
            "kind",  # epilogue kind of a forward step (numba_epilogue.KIND_*)
            "j",  # D index (a kept or recomputed phi', or the one a backward step reads)
            "r",  # record index of the layer written (-1: none)
            "ci",  # checkpoint index (-1: none)
            "slot",
            "draw",
            "bias",
            "nxt",
            "nxt_bias",
            "nxt_slot",
            "nxt_xi",  # the row of ``xis`` that xi^nxt goes to
        )
    ]
)
