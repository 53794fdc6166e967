"""The recurrent networks at small widths on the CUDA engine: persistent kernels.

The "persistent RNN" (Diamos et al., ICML 2016; cuDNN's PERSIST_STATIC): one thread
block per grid point runs a whole run of steps in one launch, with the tied stacked
gate matrix loaded once into shared memory and kept there across all of them,

    Elman: W (N x N),   LSTM: [Z_i; Z_f; Z_g; Z_o] (4N x N),   GRU: [Z_r; Z_z; Z_n] (3N x N),

so that a step costs no launch and no trip of W through device memory: each block
does the products W h (forward, recomputation) and W^T g (backward) itself
(``kernels/persist.cu``, ``persist_lstm.cu``, ``persist_gru.cu``), and the arithmetic
around them is the step kernels' (``kernels/rnn.cu``, ``epilogue.cuh``), in the same
order.

The units are the step units of ``cuda_rnn`` (the same buffers, tied draws on the
device, per-point tables) with the passes lowered differently: the same
``engines.schedule`` (a store budget of 0: checkpoints every ``checkpoint_every``
steps), the same records and checkpoints, and per launch

* the forward pass in runs of at most ``PERSIST_STEPS`` steps, whose drives
  d_t = Z_U x_t / sqrt(N) are one float64 GEMM before it (``drive_rows``);
* a VJP segment's recomputed steps (one launch per run of ``schedule.Recompute``);
* its backward steps (one launch per run of ``schedule.Backward``); a gated unit's
  backward step needs the pre-activations of its own step, so a segment's last step
  is recomputed first (one launch of one step), as the step units do.

A block holds W and a few vectors of N reals (``cuda_paths.persist_smem``); which
widths fit, and below which width the path is taken, is ``cuda_paths``'.
"""

import numpy as np

from .. import rng
from ..models import gru, lstm, rnn
from . import layout, schedule
from .cuda_backend import i32
from .cuda_mlp import runs
from .cuda_paths import PERSIST_KERNEL_VECTORS, persist_smem
from .cuda_rnn import ElmanUnit, GruUnit, LstmUnit


class _Persistent:
    """What the persistent units share: the per-layer tables on the device, the drives of
    a run of steps, the forward pass's runs of steps, the shared memory of a launch."""

    PERSIST_STEPS = 1024  # steps per forward launch: their drives, (steps, G N) float64

    def drive_rows(self, first, count):
        """d_t = Z_U x_t / sqrt(N) for t = first .. first + count - 1, (count, G N) float64:
        one GEMM (models.gates.drive)."""
        xp, N = self.be.xp, self.N
        X = xp.empty((count, N))
        self._fill("vx_fill_stream64", X, N, first, count, rng.STREAM_SEQUENCE)
        X *= np.sqrt(self.config.input_variance)
        D = xp.empty((count, self.GATES * N))
        self.be.matmul(X, self.ZU.T, D)
        D /= np.sqrt(N)
        return D

    def smem(self, kernel):
        """Shared memory of a launch: W (G N^2 reals) and the kernel's vectors of N."""
        vectors = PERSIST_KERNEL_VECTORS[self.config.arch.name][kernel]
        return persist_smem(self.N, self.dt.itemsize, vectors, self.GATES)

    def start_forward(self):
        """The inputs into A (x1, x2 and with the JVP v0); the kind of the forward steps."""
        P, A = self.P, self.A
        A[:P] = self.x1
        A[P : 2 * P] = self.x2
        if self.jvp:
            A[2 * P :] = self.v0
        return layout.KIND_JVP if self.jvp else layout.KIND_FWD

    def forward_runs(self):
        """(first step, count) of each forward launch."""
        return [(first, min(self.PERSIST_STEPS, self.L + 1 - first))
                for first in range(1, self.L + 1, self.PERSIST_STEPS)]  # fmt: skip


class PersistentElman(_Persistent, ElmanUnit):
    """Elman at small widths: whole runs of steps per launch, W kept in shared memory.

    The same schedule and per-point epilogues as ``ElmanUnit``; the products W a and
    W^T g are done by each point's block from its shared-memory copy of W
    (``kernels/persist.cu``) instead of a GEMM per step.
    """

    def __init__(self, config, width, sample, backend):
        super().__init__(config, width, sample, backend)
        self.H = None  # no GEMM output: the products are the kernels'

    def forward(self):
        P, N, A = self.P, self.N, self.A
        kind = self.start_forward()
        smem = self.smem("forward" if self.jvp else "forward_nojvp")
        for first, count in self.forward_runs():
            self.launch("vx_elman_persist_forward",
                        (self.W, self.xi, self.drive_rows(first, count), self.su, A, self.pf,
                         self.pi, self.res, self.cp, self.cp_ls, self.tables.rec, self.tables.cpi,
                         i32(P), i32(N), i32(self.R), i32(first), i32(count), i32(kind),
                         i32(self.has_bias), self.limit), smem=smem)  # fmt: skip

    def backward(self):
        """``schedule.backward_ops`` after the seed, one launch per run of like operations."""
        self.seed()
        P, N = self.P, self.N
        smem = self.smem("backward")
        for run in runs(schedule.backward_ops(self.L, self.plan, self.rec)):
            first = run[0]
            if isinstance(first, schedule.Restart):
                for op in run:
                    self.restart(op)
            elif isinstance(first, schedule.Recompute):
                self.launch("vx_elman_persist_recompute",
                            (self.W, self.xi, self.drive_rows(first.layer, len(run)), self.su,
                             self.A[:P], self.D, self.pf, self.pi, i32(P), i32(N),
                             i32(first.layer), i32(len(run)), i32(first.start),
                             i32(self.has_bias)), smem=smem)  # fmt: skip
            else:
                self.launch("vx_elman_persist_backward",
                            (self.W, self.G, self.D, self.pf, self.pi, self.res, self.tables.rec,
                             i32(P), i32(N), i32(self.R), i32(run[-1].layer), i32(first.layer),
                             i32(first.start)), smem=smem)  # fmt: skip


class _PersistentGated(_Persistent):
    """A gated unit's backward pass: segments recomputed into S and PA (the step units'
    buffers) by one launch per run, then its backward steps by one launch."""

    def backward(self):
        self.seed()
        for run in runs(schedule.backward_ops(self.L, self.plan, self.rec)):
            first = run[0]
            if isinstance(first, schedule.Restart):
                for op in run:
                    self.restart(op)  # S[.][0] from the checkpoint; nothing recomputed yet
            elif isinstance(first, schedule.Recompute):
                self.recompute_run(first.layer, first.layer - first.start - 1, len(run))
            else:
                j = first.layer - first.start - 1
                if j not in self.done:  # the segment's last step: its pre-activations first
                    self.recompute_run(first.layer, j, 1)
                self.backward_run(first.layer, run[-1].layer, first.start)

    def recompute_run(self, layer, j0, count):
        """Steps layer .. layer + count - 1 of trajectory 1 from S[j0]: S[j0 + 1 ..], PA[j0 ..]."""
        self.recompute_launch(self.drive_rows(layer, count), j0, count)
        self.done.update(range(j0, j0 + count))


class PersistentLstm(_PersistentGated, LstmUnit):
    """The LSTM at small widths: [Z_i; Z_f; Z_g; Z_o] (4N x N) kept in shared memory."""

    def __init__(self, config, width, sample, backend):
        super().__init__(config, width, sample, backend)
        self.H = self.GA = self.U = None  # no GEMM operands: the products are the kernels'

    def forward(self):
        P, N = self.P, self.N
        kind = self.start_forward()
        cph, cpc = self.cp
        smem = self.smem("forward" if self.jvp else "forward_nojvp")
        for first, count in self.forward_runs():
            self.launch("vx_lstm_persist_forward",
                        (self.W, self.xi, self.drive_rows(first, count), self.su, self.shift,
                         self.A, self.C, self.TC, self.pf, self.pi, self.res, cph, cpc,
                         self.tables.rec, self.tables.cpi, i32(P), i32(N), i32(self.R), i32(first),
                         i32(count), i32(kind), self.limit), smem=smem)  # fmt: skip

    def recompute_launch(self, drives, j0, count):
        SH, SC = self.S
        self.launch("vx_lstm_persist_recompute",
                    (self.W, self.xi, drives, self.su, self.shift, SH, SC, self.PA, self.pf,
                     self.pi, i32(self.P), i32(self.N), i32(j0), i32(count)),
                    smem=self.smem("recompute"))  # fmt: skip

    def backward_run(self, layer_hi, layer_lo, start):
        self.launch("vx_lstm_persist_backward",
                    (self.W, self.G, self.S[1], self.PA, self.pf, self.pi, self.res,
                     self.tables.rec, i32(self.P), i32(self.N), i32(self.R), i32(layer_lo),
                     i32(layer_hi), i32(start)), smem=self.smem("backward"))  # fmt: skip


class PersistentGru(_PersistentGated, GruUnit):
    """The GRU at small widths: [Z_r; Z_z; Z_n] (3N x N) kept in shared memory."""

    def __init__(self, config, width, sample, backend):
        super().__init__(config, width, sample, backend)
        # no GEMM operands: the products are the kernels'
        self.H1 = self.M = self.H2 = self.GAN = self.U1 = self.GRZ = self.U2 = None

    def forward(self):
        P, N = self.P, self.N
        kind = self.start_forward()
        smem = self.smem("forward" if self.jvp else "forward_nojvp")
        for first, count in self.forward_runs():
            self.launch("vx_gru_persist_forward",
                        (self.W, self.xi, self.drive_rows(first, count), self.su, self.shift,
                         self.A, self.pf, self.pi, self.res, self.cp[0], self.tables.rec,
                         self.tables.cpi, i32(P), i32(N), i32(self.R), i32(first), i32(count),
                         i32(kind), self.limit), smem=smem)  # fmt: skip

    def recompute_launch(self, drives, j0, count):
        (SH,) = self.S
        self.launch("vx_gru_persist_recompute",
                    (self.W, self.xi, drives, self.su, self.shift, SH, self.PA, self.pf, self.pi,
                     i32(self.P), i32(self.N), i32(j0), i32(count)),
                    smem=self.smem("recompute"))  # fmt: skip

    def backward_run(self, layer_hi, layer_lo, start):
        self.launch("vx_gru_persist_backward",
                    (self.W, self.G, self.S[0], self.PA, self.pf, self.pi, self.res,
                     self.tables.rec, i32(self.P), i32(self.N), i32(self.R), i32(layer_lo),
                     i32(layer_hi), i32(start)), smem=self.smem("backward"))  # fmt: skip


# The persistent unit of each recurrent architecture, by the model whose step it implements.
UNITS = {rnn.ARCHITECTURE.name: PersistentElman, gru.ARCHITECTURE.name: PersistentGru,
         lstm.ARCHITECTURE.name: PersistentLstm}  # fmt: skip


def run_unit(config, width, sample, backend):
    """One (width, sample) of a recurrent architecture on the persistent kernels."""
    return UNITS[config.arch.name](config, width, sample, backend).run()
