"""The recurrent networks (Elman, GRU, LSTM) on the CUDA engine: stacked GEMMs and fused steps.

Per time step t, with the gate matrices stacked ([Z_i; Z_f; Z_g; Z_o] for the LSTM)
so that a step needs as few GEMMs as its recurrence allows, over every grid
point's columns (states are rows, as on the MLP's GEMM path: point p's
trajectory 1 in row p, trajectory 2 in row P + p, its tangent in row 2P + p):

* **Elman**: ``H = A Z^T``, then ``vx_elman_forward`` (the MLP's epilogue with
  the input drive added to the bias: renormalisation, tangent, float64 norms,
  divergence, records);
* **LSTM**: ``H = A [Z_i; Z_f; Z_g; Z_o]^T`` (the tangent's rows too), then
  ``vx_lstm_forward`` (gates, both states, tangent [dh; dc], norms, divergence);
* **GRU**: ``H1 = A [Z_r; Z_z]^T``, ``vx_gru_gates`` (M = r h), ``H2 = M Z_n^T``,
  ``vx_gru_forward``: two GEMMs, since the reset gate sits inside the product.

The input drive Z_U x_t / sqrt(N) is one float64 GEMM per block of
``gates.DRIVE_BLOCK`` steps, as in the oracle. Every tied matrix (Z_g in the
run's precision, Z_U in float64), the biases xi_g and the inputs x_t are drawn
on the device by ``vx_fill_stream`` / ``vx_fill_stream64`` from the counter:
the bits of ``rng.normals``, nothing drawn on the host and copied.

VJP: the operations of ``engines.schedule`` (a store budget of 0, as the
MLP's unit: checkpoints every ``checkpoint_every`` steps, never every step
kept), lowered one by one. A segment restarts from its checkpoint's state,
recomputes trajectory 1 keeping each step's state and gate pre-activations
(Elman: phi'), and its backward steps are the transposed stacked GEMM between
a gate kernel and ``vx_rnn_cot_finish`` (renormalisation, log |g|^2,
collapse). The backward step of a segment's last layer computes its
pre-activations first (one more GEMM per segment).

CUDA Graphs (``cuda_graphs``, ``engine.cuda_graphs``): the forward pass runs as
replays of one captured body of DRIVE_BLOCK steps (``*_clocked`` kernels: the
layer read from a device clock, records and checkpoints from device tables, the
drive rows from a fixed buffer filled before each replay), and the VJP's full
segments as replays of one captured segment; what does not fill a body or a
full segment runs on the step kernels above, bit for bit the same numbers.

Only the Gaussian weight law runs here (``cuda_gpu.run_unit`` sends the other
laws, and the spectrum, to ``engines.generic``).
"""

import numpy as np

from .. import rng
from ..models import gates, gru, lstm, rnn
from . import base, cuda_graphs, cuda_sources, layout, schedule
from .cuda_backend import FILL_THREADS, fill_grid, i32
from .cuda_mlp import Pass
from .cuda_paths import threads_for


def vjp_plan(config):
    """The unit's schedule.Plan with a budget of 0: checkpoints (schedule.NO_VJP without VJP)."""
    if "vjp" not in config.modes:
        return schedule.NO_VJP
    return schedule.vjp_plan(config, schedule.LayerBytes(1), 0)


class _Unit(Pass):
    """What every recurrent unit holds: the per-point tables, the tied draws, the drive."""

    GATES = 1  # stacked N x N gate matrices
    SHIFT_AXIS = None  # the grid axis added to one gate's bias (update_bias, forget_bias)

    def __init__(self, config, width, sample, backend):
        self.config, self.width, self.sample = config, width, sample
        self.be = be = backend
        xp = be.xp
        grid = base.grid(config)
        P, N, dt = grid.points, width, config.dtype
        self.P, self.N, self.dt, self.L = P, N, dt, config.depth
        self.jvp = "jvp" in config.modes
        self.vjp = "vjp" in config.modes
        self.tf32 = config.precision == "tf32"
        pf = np.zeros((layout.N_F, P))
        pf[layout.F_SCALE] = np.sqrt(grid.sigma_w2 / N).astype(dt).astype(np.float64)
        pf[layout.F_BAMP] = np.sqrt(grid.sigma_b2)
        pi = np.zeros((layout.N_I, P), dtype=np.int32)
        for act, param, cols in grid.groups:
            pf[layout.F_PARAM, cols] = dt.type(param)
            pi[layout.I_CODE, cols] = cuda_sources.activation_code(act.name)
            pi[layout.I_HOMOG, cols] = int(act.homogeneous)
        self.pf, self.pi = xp.asarray(pf), xp.asarray(pi)
        self.su = xp.asarray(np.sqrt(grid.extra["sigma_u2"]).astype(np.float64))
        shift = grid.extra[self.SHIFT_AXIS] if self.SHIFT_AXIS else np.zeros(P)
        self.shift = xp.asarray(np.asarray(shift, dtype=np.float64))
        self.has_bias = int(np.any(grid.sigma_b2 > 0) or np.any(grid.extra["sigma_u2"] > 0))
        self.R = config.layers.size
        self.res = xp.full((layout.N_R, P, self.R), np.nan)
        self.rec = base.record_index(config)
        self.limit = np.float64(base.divergence_limit(dt))
        k0, k1 = rng.seed_key(config.seed)
        self.keys = (np.uint32(sample), np.uint32(k0), np.uint32(k1))
        x1, x2, v0 = base.inputs(config, N, sample)
        self.x1 = xp.asarray(x1.astype(dt))
        self.x2 = xp.asarray(x2.astype(dt))
        self.v0 = xp.asarray((v0 / np.linalg.norm(v0)).astype(dt))
        self.threads = threads_for(N)
        G = self.GATES
        # the tied draws, on the device: Z_g (run precision), Z_U (float64), xi_g
        self.W = xp.empty((G * N, N), dtype=dt)
        self.ZU = xp.empty((G * N, N))
        self.xi = xp.empty(G * N)
        for g in range(G):
            rows = slice(g * N, (g + 1) * N)
            self._fill("vx_fill_stream", self.W[rows], N * N, 0, 1, rng.STREAM_GATE + g)
            self._fill("vx_fill_stream64", self.ZU[rows], N * N, 0, 1, rng.STREAM_GATE_INPUT + g)
        self._fill("vx_fill_stream64", self.xi, N, 0, G, rng.STREAM_BIAS)
        self.drives = {}
        self.plan = vjp_plan(config)
        self.fwd_ops = schedule.forward_ops(self.L, self.plan, self.rec)
        self.tables = cuda_graphs.tables(xp, self.rec, self.fwd_ops)
        self.ncp = schedule.checkpoint_count(self.L, self.plan.every) if self.vjp else 1
        if self.vjp:
            gamma = base.output_direction(config, N, sample)
            self.gamma = xp.asarray((gamma / np.linalg.norm(gamma)).astype(dt))

    # -- draws

    def _fill(self, kernel, out, count, layer0, nlayers, stream):
        """``nlayers`` x ``count`` normals of (layer0 .., stream) into ``out`` on the device."""
        total = ((count + 3) // 4) * nlayers
        self.be.launch(kernel, fill_grid(total), FILL_THREADS,
                       (out, np.int64(count), i32(layer0), i32(nlayers), np.uint32(stream),
                        *self.keys))  # fmt: skip

    def drive(self, t):
        """d_t = Z_U x_t / sqrt(N), (G N,) float64 on the device (models.gates.drive):

        D = (sqrt(q_x) X) Z_U^T / sqrt(N) for DRIVE_BLOCK steps at once, one GEMM; the
        last DRIVE_BLOCKS_KEPT blocks kept (the VJP's segments revisit them).
        """
        block = (t - 1) // gates.DRIVE_BLOCK
        if block not in self.drives:
            first = block * gates.DRIVE_BLOCK + 1
            count = min((block + 1) * gates.DRIVE_BLOCK, self.L) + 1 - first
            X = self.be.xp.empty((count, self.N))
            D = self.be.xp.empty((count, self.GATES * self.N))
            self.drive_block(block, X, D)
            self.drives[block] = D
            while len(self.drives) > gates.DRIVE_BLOCKS_KEPT:
                del self.drives[next(iter(self.drives))]
        return self.drives[block][(t - 1) % gates.DRIVE_BLOCK]

    def drive_block(self, block, X, D):
        """The drives of block ``block``'s len(X) steps into D (G N columns), X the inputs."""
        self._fill("vx_fill_stream64", X, self.N, block * gates.DRIVE_BLOCK + 1, len(X),
                   rng.STREAM_SEQUENCE)  # fmt: skip
        X *= np.sqrt(self.config.input_variance)
        self.be.matmul(X, self.ZU.T, D)
        D /= np.sqrt(self.N)

    # -- the forward pass: whole drive blocks as replays of one captured body (cuda_graphs)

    def forward(self):
        """``schedule.forward_ops``: bodies of DRIVE_BLOCK steps replayed, the rest stepped."""
        P, A = self.P, self.A
        A[:P] = self.x1
        A[P : 2 * P] = self.x2
        if self.jvp:
            A[2 * P :] = self.v0
        self.kind = layout.KIND_JVP if self.jvp else layout.KIND_FWD
        cuda_graphs.run_forward(self, self.fwd_ops, gates.DRIVE_BLOCK)

    def graph_prepare(self):
        """The captured body's buffers: its drive block (fixed)."""
        xp = self.be.xp
        self.Xg = xp.empty((gates.DRIVE_BLOCK, self.N))
        self.Dg = xp.empty((gates.DRIVE_BLOCK, self.GATES * self.N))

    def graph_before(self, block):
        self.drive_block(block, self.Xg, self.Dg)

    # -- the VJP's full segments as replays of one captured segment (cuda_graphs)

    def segment_prepare(self, start):
        xp = self.be.xp
        self.seg_clock = xp.asarray(np.array([start], dtype=np.int32))
        self.Dseg = xp.empty((self.plan.every, self.GATES * self.N))

    def segment_before(self, start):
        """The drives of the segment's layers start+1 .. start+every into Dseg, copied (a few
        contiguous runs) from the drive blocks the step path computes."""
        K, stop = gates.DRIVE_BLOCK, start + self.plan.every + 1
        t = start + 1
        while t < stop:
            self.drive(t)  # its block computed (or kept)
            r0 = (t - 1) % K
            n = min(K - r0, stop - t)
            self.Dseg[t - start - 1 : t - start - 1 + n] = self.drives[(t - 1) // K][r0 : r0 + n]
            t += n

    def launch(self, name, args, grid=None, smem=0):
        """A per-point kernel: one block per grid point."""
        self.be.launch(name, grid or self.P, self.threads, args, smem=smem)

    def backward(self):
        """``schedule.backward_ops`` after the seed: Restart, Recompute, Backward lowered."""
        self.seed()
        for op in schedule.backward_ops(self.L, self.plan, self.rec):
            self.backward_op(op)

    def backward_op(self, op):
        """One operation of the backward pass, its scalars by value."""
        if isinstance(op, schedule.Restart):
            self.restart(op)
        elif isinstance(op, schedule.Recompute):
            self.recompute(op.layer, op.layer - op.start - 1)
        else:
            self.backward_step(op)


class ElmanUnit(_Unit):
    """u_t = W phi(u_{t-1}) + U x_t + b: the MLP's GEMM path with a tied W and the drive."""

    GATES = 1

    def __init__(self, config, width, sample, backend):
        super().__init__(config, width, sample, backend)
        xp, P, N, dt = self.be.xp, self.P, self.N, self.dt
        rows = 3 if self.jvp else 2
        self.A = xp.zeros((rows * P, N), dtype=dt)
        self.H = xp.zeros((rows * P, N), dtype=dt)
        every = max(1, self.plan.every)
        self.cp = xp.zeros((self.ncp, P, N), dtype=dt)
        self.cp_ls = xp.zeros((self.ncp, P))
        if self.vjp:
            self.G = xp.zeros((P, N), dtype=dt)
            self.U = xp.zeros((P, N), dtype=dt)
            self.D = xp.zeros((every, P, N), dtype=dt)

    def step(self, op):
        self.be.matmul(self.A, self.W.T, self.H)
        self.launch("vx_elman_forward",
                    (self.H, self.A, self.xi, self.drive(op.layer), self.su, self.pf, self.pi,
                     self.res, self.cp, self.cp_ls, i32(self.P), i32(self.N), i32(self.R),
                     i32(op.layer), i32(self.kind), i32(self.has_bias), i32(op.record),
                     i32(op.checkpoint), self.limit))  # fmt: skip

    def graph_step(self, k):
        t = self.tables
        self.be.matmul(self.A, self.W.T, self.H)
        self.launch("vx_elman_forward_clocked",
                    (self.H, self.A, self.xi, self.Dg, self.su, self.pf, self.pi, self.res,
                     self.cp, self.cp_ls, t.clock, t.rec, t.cpi, i32(k), i32(self.P),
                     i32(self.N), i32(self.R), i32(self.kind), i32(self.has_bias),
                     self.limit))  # fmt: skip

    def backward(self):
        """The seed, then the VJP with its full segments replayed (cuda_graphs)."""
        self.seed()
        ops = schedule.backward_ops(self.L, self.plan, self.rec)
        cuda_graphs.run_backward(self, ops, self.plan.every)

    def segment_op(self, op, start):
        """``op`` of the captured segment from layer clock = ``start``."""
        P, N, c = self.P, self.N, self.seg_clock
        if isinstance(op, schedule.Restart):
            self.launch("vx_restart_clocked",
                        (self.x1, self.cp, self.cp_ls, self.A[:P], self.D, self.pf, self.pi, c,
                         i32(self.plan.every), i32(P), i32(N)))  # fmt: skip
        elif isinstance(op, schedule.Recompute):
            j = op.layer - start - 1
            A1, H1 = self.A[:P], self.H[:P]
            self.be.matmul(A1, self.W.T, H1)
            self.launch("vx_elman_recompute",
                        (H1, A1, self.D, self.xi, self.Dseg[j], self.su, self.pf, self.pi,
                         i32(P), i32(N), i32(j + 1), i32(self.has_bias)))  # fmt: skip
        else:
            j = op.layer - 1 - start
            self.be.matmul(self.G, self.W, self.U)
            self.launch("vx_backward_clocked",
                        (self.G, self.U, self.D, self.pf, self.pi, self.res, c, self.tables.rec,
                         i32(j), i32(P), i32(N), i32(self.R), i32(j)))  # fmt: skip

    def seed(self):
        self.launch("vx_grad_init",
                    (self.gamma, self.G, self.pf, self.pi, self.res, i32(self.P), i32(self.N),
                     i32(self.R), i32(self.rec[self.L])))  # fmt: skip

    def restart(self, op):
        self.launch("vx_restart",
                    (self.x1, self.cp, self.cp_ls, self.A[: self.P], self.D, self.pf, self.pi,
                     i32(self.P), i32(self.N), i32(op.checkpoint)))  # fmt: skip

    def recompute(self, layer, j):
        """Trajectory 1's step ``layer`` again: phi'(u_layer) into D[j + 1]."""
        P = self.P
        A1, H1 = self.A[:P], self.H[:P]
        self.be.matmul(A1, self.W.T, H1)
        self.launch("vx_elman_recompute",
                    (H1, A1, self.D, self.xi, self.drive(layer), self.su, self.pf, self.pi,
                     i32(P), i32(self.N), i32(j + 1), i32(self.has_bias)))  # fmt: skip

    def backward_step(self, op):
        """g^{t-1} = phi'(u_{t-1}) * (s W^T g^t): U = G W, the MLP's vx_backward."""
        self.be.matmul(self.G, self.W, self.U)
        self.launch("vx_backward",
                    (self.G, self.U, self.D, self.pf, self.pi, self.res, i32(self.P),
                     i32(self.N), i32(self.R), i32(op.layer - 1 - op.start), i32(op.layer - 1),
                     i32(op.record)))  # fmt: skip


class _GatedUnit(_Unit):
    """A gated RNN's VJP buffers: a segment's states and pre-activations, the cotangent."""

    STATES = 1  # (P, N) state arrays: h, or h and c

    def __init__(self, config, width, sample, backend):
        super().__init__(config, width, sample, backend)
        xp, P, N, dt = self.be.xp, self.P, self.N, self.dt
        rows = 3 if self.jvp else 2
        self.A = xp.zeros((rows * P, N), dtype=dt)
        every = max(1, self.plan.every)
        S, ncp = self.STATES, self.ncp
        self.cp = [xp.zeros((ncp, P, N), dtype=dt) for _ in range(S)]
        if self.vjp:
            # segment: states S[j] at start + j (j = 0..every) and pre-activations PA[j] of
            # the step from S[j]; which PA[j] this segment has computed
            self.S = [xp.zeros((every + 1, P, N), dtype=dt) for _ in range(S)]
            self.PA = xp.zeros((every, P, self.GATES * N), dtype=dt)
            self.G = xp.zeros((P, S * N), dtype=dt)
            self.done = set()

    def seed(self):
        self.launch("vx_rnn_grad_init",
                    (self.gamma, self.G, self.pf, self.pi, self.res, i32(self.P), i32(self.N),
                     i32(self.STATES * self.N), i32(self.R), i32(self.rec[self.L])))  # fmt: skip

    def restart(self, op):
        """The segment's first state: checkpoint ``op.checkpoint``, or (x1, 0)."""
        self.start = op.start
        self.done = set()
        for k, S in enumerate(self.S):
            if op.checkpoint >= 0:
                S[0] = self.cp[k][op.checkpoint]
            elif k == 0:
                S[0] = self.x1
            else:
                S[0] = 0

    def recompute(self, layer, j):
        """Step ``layer`` of trajectory 1 from S[j]: S[j + 1] and PA[j]."""
        self.advance(layer, j)
        self.done.add(j)

    def backward_step(self, op):
        j = op.layer - op.start - 1
        if j not in self.done:  # the segment's last step: its pre-activations first
            self.recompute(op.layer, j)
        self.cotangent(j, lambda U, add: self.finish(U, add, op))

    def backward(self):
        """The seed, then the VJP with its full segments replayed (cuda_graphs)."""
        self.seed()
        ops = schedule.backward_ops(self.L, self.plan, self.rec)
        cuda_graphs.run_backward(self, ops, self.plan.every)

    def segment_op(self, op, start):
        """``op`` of the captured segment from layer clock = ``start`` (the drives of its
        layers in Dseg; which steps are recomputed is the same in every full segment)."""
        P, N, c = self.P, self.N, self.seg_clock
        if isinstance(op, schedule.Restart):
            S0 = [S[0] for S in self.S]
            self.be.launch("vx_rnn_restart_clocked", fill_grid(P * N), FILL_THREADS,
                           (S0[0], S0[-1], self.cp[0], self.cp[-1], c, i32(self.plan.every),
                            i32(self.STATES), i32(P), i32(N)))  # fmt: skip
            self.done = set()
            return
        j = op.layer - start - 1
        if j not in self.done:
            self.advance(op.layer, j, self.Dseg[j])
            self.done.add(j)
        if isinstance(op, schedule.Backward):
            self.cotangent(j, lambda U, add: self.finish_clocked(U, add, j))

    def finish_clocked(self, U, add, step):
        """vx_rnn_cot_finish of the captured segment's step to layer clock + step."""
        self.launch("vx_rnn_cot_finish_clocked",
                    (self.G, U, self.pf, self.pi, self.res, self.seg_clock, self.tables.rec,
                     i32(step), i32(self.P), i32(self.N), i32(self.STATES * self.N), i32(add),
                     i32(self.R)))  # fmt: skip

    def finish(self, U, add, op):
        self.launch("vx_rnn_cot_finish",
                    (self.G, U, self.pf, self.pi, self.res, i32(self.P), i32(self.N),
                     i32(self.STATES * self.N), i32(add), i32(self.R), i32(op.layer - 1),
                     i32(op.record)))  # fmt: skip


class LstmUnit(_GatedUnit):
    """c_t = f c + i g, h_t = o phi(c_t): one GEMM with [Z_i; Z_f; Z_g; Z_o] per step."""

    GATES = 4
    STATES = 2
    SHIFT_AXIS = "forget_bias"

    def __init__(self, config, width, sample, backend):
        super().__init__(config, width, sample, backend)
        xp, P, N, dt = self.be.xp, self.P, self.N, self.dt
        rows = 3 if self.jvp else 2
        self.H = xp.zeros((rows * P, 4 * N), dtype=dt)
        self.C = xp.zeros((2 * P, N), dtype=dt)
        self.TC = xp.zeros((P, N), dtype=dt)
        if self.vjp:
            self.GA = xp.zeros((P, 4 * N), dtype=dt)
            self.U = xp.zeros((P, N), dtype=dt)

    def step(self, op):
        cph, cpc = self.cp
        self.be.matmul(self.A, self.W.T, self.H)
        self.launch("vx_lstm_forward",
                    (self.H, self.A, self.C, self.TC, self.xi, self.drive(op.layer), self.su,
                     self.shift, self.pf, self.pi, self.res, cph, cpc, i32(self.P), i32(self.N),
                     i32(self.R), i32(op.layer), i32(self.kind), i32(op.record),
                     i32(op.checkpoint), self.limit))  # fmt: skip

    def graph_step(self, k):
        cph, cpc = self.cp
        t = self.tables
        self.be.matmul(self.A, self.W.T, self.H)
        self.launch("vx_lstm_forward_clocked",
                    (self.H, self.A, self.C, self.TC, self.xi, self.Dg, self.su, self.shift,
                     self.pf, self.pi, self.res, cph, cpc, t.clock, t.rec, t.cpi, i32(k),
                     i32(self.P), i32(self.N), i32(self.R), i32(self.kind),
                     self.limit))  # fmt: skip

    def advance(self, layer, j, drive=None):
        SH, SC = self.S
        H1 = self.H[: self.P]
        drive = self.drive(layer) if drive is None else drive
        self.be.matmul(SH[j], self.W.T, H1)
        self.launch("vx_lstm_recompute",
                    (H1, SC[j], self.PA[j], SH[j + 1], SC[j + 1], self.xi, drive,
                     self.su, self.shift, self.pf, self.pi, i32(self.P), i32(self.N)))  # fmt: skip

    def cotangent(self, j, finish):
        self.launch("vx_lstm_cot_gates",
                    (self.G, self.GA, self.S[1][j], self.PA[j], self.pf, self.pi, i32(self.P),
                     i32(self.N)))  # fmt: skip
        self.be.matmul(self.GA, self.W, self.U)
        finish(self.U, 0)


class GruUnit(_GatedUnit):
    """h_t = (1 - z) n + z h: [Z_r; Z_z] h, then Z_n (r h), two GEMMs per step."""

    GATES = 3
    STATES = 1
    SHIFT_AXIS = "update_bias"

    def __init__(self, config, width, sample, backend):
        super().__init__(config, width, sample, backend)
        xp, P, N, dt = self.be.xp, self.P, self.N, self.dt
        rows = 3 if self.jvp else 2
        self.H1 = xp.zeros((rows * P, 2 * N), dtype=dt)
        self.M = xp.zeros((rows * P, N), dtype=dt)
        self.H2 = xp.zeros((rows * P, N), dtype=dt)
        self.W_rz, self.W_n = self.W[: 2 * N], self.W[2 * N :]
        if self.vjp:
            self.GAN = xp.zeros((P, N), dtype=dt)
            self.U1 = xp.zeros((P, N), dtype=dt)
            self.GRZ = xp.zeros((P, 2 * N), dtype=dt)
            self.U2 = xp.zeros((P, N), dtype=dt)

    def _gates(self, H1, A, M, drive, ntraj, kind):
        self.be.matmul(A, self.W_rz.T, H1)
        self.launch("vx_gru_gates",
                    (H1, A, M, self.xi, drive, self.su, self.shift, self.pf, self.pi,
                     i32(self.P), i32(self.N), i32(ntraj), i32(kind)))  # fmt: skip

    def step(self, op):
        P, A = self.P, self.A
        drive = self.drive(op.layer)
        self._gates(self.H1, A, self.M, drive, 2, self.kind)
        self.be.matmul(self.M, self.W_n.T, self.H2)
        self.launch("vx_gru_forward",
                    (self.H1, self.H2, A, self.xi, drive, self.su, self.pf, self.pi, self.res,
                     self.cp[0], i32(P), i32(self.N), i32(self.R), i32(op.layer),
                     i32(self.kind), i32(op.record), i32(op.checkpoint), self.limit))  # fmt: skip

    def graph_step(self, k):
        P, A, t = self.P, self.A, self.tables
        self.be.matmul(A, self.W_rz.T, self.H1)
        self.launch("vx_gru_gates_clocked",
                    (self.H1, A, self.M, self.xi, self.Dg, self.su, self.shift, self.pf,
                     self.pi, i32(k), i32(P), i32(self.N), i32(2), i32(self.kind)))  # fmt: skip
        self.be.matmul(self.M, self.W_n.T, self.H2)
        self.launch("vx_gru_forward_clocked",
                    (self.H1, self.H2, A, self.xi, self.Dg, self.su, self.pf, self.pi, self.res,
                     self.cp[0], t.clock, t.rec, t.cpi, i32(k), i32(P), i32(self.N),
                     i32(self.R), i32(self.kind), self.limit))  # fmt: skip

    def advance(self, layer, j, drive=None):
        P = self.P
        (SH,) = self.S
        H1, M, H2 = self.H1[:P], self.M[:P], self.H2[:P]
        drive = self.drive(layer) if drive is None else drive
        self._gates(H1, SH[j], M, drive, 1, layout.KIND_FWD)
        self.be.matmul(M, self.W_n.T, H2)
        self.launch("vx_gru_recompute",
                    (H1, H2, SH[j], self.PA[j], SH[j + 1], self.xi, drive, self.su, self.pf,
                     self.pi, i32(P), i32(self.N)))  # fmt: skip

    def cotangent(self, j, finish):
        P, N = self.P, self.N
        (SH,) = self.S
        self.launch(
            "vx_gru_cot_candidate", (self.G, self.GAN, self.PA[j], self.pf, self.pi, i32(P), i32(N))
        )
        self.be.matmul(self.GAN, self.W_n, self.U1)
        self.launch("vx_gru_cot_gates",
                    (self.G, self.U1, self.GRZ, SH[j], self.PA[j], self.pf, self.pi, i32(P),
                     i32(N)))  # fmt: skip
        self.be.matmul(self.GRZ, self.W_rz, self.U2)
        finish(self.U2, 1)


# The unit of each recurrent architecture, by the model whose step it implements.
UNITS = {rnn.ARCHITECTURE.name: ElmanUnit, gru.ARCHITECTURE.name: GruUnit,
         lstm.ARCHITECTURE.name: LstmUnit}  # fmt: skip


def run_unit(config, width, sample, backend):
    """One (width, sample) of a recurrent architecture on the fused step kernels (the
    persistent small-width kernels: cuda_persist.run_unit)."""
    return UNITS[config.arch.name](config, width, sample, backend).run()


def device_bytes(config, width):
    """GPU memory of one recurrent unit's buffers, in bytes (what the units allocate)."""
    P = int(np.prod(config.grid_shape))
    item = config.dtype.itemsize
    G = config.arch.gates
    N = width
    rows = 3 if "jvp" in config.modes else 2
    total = G * N * N * (item + 8) + 8 * G * N  # W, Z_U, xi
    total += gates.DRIVE_BLOCKS_KEPT * gates.DRIVE_BLOCK * (G + 1) * N * 8  # drives and X
    total += rows * P * N * item * (2 + G)  # A, GEMM outputs, GRU's M / LSTM's C
    plan = vjp_plan(config)
    if plan.every:
        every = plan.every
        total += schedule.checkpoint_count(config.depth, every) * P * 2 * N * item
        total += (every + 1) * P * 2 * N * item + every * P * G * N * item  # S, PA
        total += P * N * item * (2 * G + 4)  # G, GA, U
    total += 4 * P * config.layers.size * 8 + P * (8 * layout.N_F + 4 * layout.N_I)
    # the captured bodies' fixed drive buffers (X, D; a segment's drives) and tables
    total += gates.DRIVE_BLOCK * (G + 1) * N * 8 + max(1, plan.every) * G * N * 8
    return int(total + cuda_graphs.device_bytes(config))
