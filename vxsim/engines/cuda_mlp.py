"""The CUDA engine's MLP unit: one (width, sample) on the kernels of ``kernels/``.

The same computation as the Numba engine (``numba_cpu``), laid out the same
way (states are rows of C-order ``(rows * P, N)`` arrays: point p's h1 in row
p, h2 in row P + p, its tangent in row 2P + p), on a backend
(``cuda_backend.GpuBackend``, or ``cuda_host.HostBackend`` on the CPU):

* **GEMM path** (large widths). Per layer, launched from the host without
  ever synchronising: ``vx_fill_weights`` writes Z^{s,l} from the counter
  (Philox4x32-10 and the portable Box-Muller, bit-identical to
  ``rng.normal_matrix``), one cuBLAS GEMM ``H = A @ Z.T`` over every column
  (``cupy.matmul``), then ``vx_forward``: one thread block per grid point
  doing scale, bias, the squared norms and the correlation dot product
  (float64 block reductions), the divergence test, renormalisation,
  checkpointing, recording and phi / phi' written into the next GEMM input.
  Results stay on the device until the unit is done and come back in one
  copy.
* **Fused path** (small widths). One thread block per grid point keeps its
  state in shared memory across a chunk of layers and does the
  matrix-vector products itself; the chunk's weights are generated once for
  all blocks just before (see ``kernels/fused.cu``).
* **VJP**: the operations of ``engines.schedule`` (plan: ``cuda_paths.vjp_plan``),
  lowered one by one (GEMM path) or in chunks of like operations (fused path):
  checkpoints every ``checkpoint_every`` layers in the forward pass, then per
  segment, last first, a restart from its checkpoint, a recomputation with
  weights regenerated from the counter (phi' kept for the segment; on the GEMM
  path the segment's Z^l too, when they fit), and the backward steps
  ``g <- phi' * (s Z^T g)`` (GEMM ``U = G @ Z``).
* ``measure.precision = "tf32"``: float32 states whose GEMMs run on the
  tensor cores in TF32 (cuBLAS ``CUBLAS_COMPUTE_32F_FAST_TF32``), on the GEMM
  path only (the fused path's products stay float32).

* **CUDA Graphs** (GEMM path, ``cuda_graphs``): the forward pass as replays of
  one captured body of ``Unit.GRAPH_LAYERS`` layers (Z^l drawn by
  ``vx_fill_stream_clocked``, the layer read from a device clock), the VJP's full
  segments as replays of one captured segment; the same bits as the step path.
  ``Pass.run`` puts a unit's work on the backend's stream (``stream()``).

Which path a unit takes and what it needs: ``cuda_paths``.
"""

import numpy as np

from .. import rng
from . import base, cuda_graphs, cuda_sources, layout, schedule
from .cuda_backend import FILL_THREADS, fill_grid, i32
from .cuda_paths import (
    check_unit,
    choose_path,
    fused_chunk,
    fused_smem,
    threads_for,
    vjp_plan,
    weight_slots,
)


def runs(ops):
    """``ops`` cut where the operation's type changes: lists of like operations."""
    out = []
    for op in ops:
        if out and type(out[-1][0]) is type(op):
            out[-1].append(op)
        else:
            out.append([op])
    return out


def chunks(ops, size):
    """``ops`` in consecutive lists of at most ``size`` (a fused launch's layers)."""
    return [ops[i : i + size] for i in range(0, len(ops), size)]


class Pass:
    """What every device unit (the MLP's, the RNNs', the residual net's) does with its
    ``forward``/``backward`` and its result buffers ``res`` (per layer) and ``pi`` (per
    point): run the passes, then copy the results to the host once."""

    def run(self):
        with self.be.stream(), self.be.gemm_precision(self.tf32):
            self.forward()
            if self.vjp:
                self.backward()
            return self.results()

    def results(self):
        """The unit's arrays, copied to the host once (the only synchronisation)."""
        res = self.be.to_host(self.res)
        pi = self.be.to_host(self.pi)
        return base.shape_results(self.config, layout.results(self.config, res, pi))


class Unit(Pass):
    """One (width, sample) on a backend: every buffer allocated once, on the device."""

    def __init__(self, config, width, sample, backend, path=None):
        self.config, self.width, self.sample = config, width, sample
        self.path = path or choose_path(config, width)
        self.be = be = backend
        xp = be.xp
        grid = base.grid(config)
        P, N, dt = grid.points, width, config.dtype
        self.P, self.N, self.dt, self.L = P, N, dt, config.depth
        self.jvp = "jvp" in config.modes
        self.vjp = "vjp" in config.modes
        self.tf32 = config.precision == "tf32"
        check_unit(config, width, self.path, getattr(be, "free_bytes", None))
        # Per-point tables.
        pf = np.zeros((layout.N_F, P))
        pf[layout.F_SCALE] = np.sqrt(grid.sigma_w2 / N).astype(dt).astype(np.float64)
        pf[layout.F_BAMP] = np.sqrt(grid.sigma_b2)
        pi = np.zeros((layout.N_I, P), dtype=np.int32)
        for act, param, cols in grid.groups:
            pf[layout.F_PARAM, cols] = dt.type(param)
            pi[layout.I_CODE, cols] = cuda_sources.activation_code(act.name)
            pi[layout.I_HOMOG, cols] = int(act.homogeneous)
        self.pf = xp.asarray(pf)
        self.pi = xp.asarray(pi)
        self.R = config.layers.size
        self.res = xp.full((layout.N_R, P, self.R), np.nan)
        self.rec = base.record_index(config)
        self.limit = np.float64(base.divergence_limit(dt))
        self.has_bias = int(np.any(grid.sigma_b2 > 0))
        k0, k1 = rng.seed_key(config.seed)
        self.keys = (np.uint32(sample), np.uint32(k0), np.uint32(k1))
        x1, x2, v0 = base.inputs(config, N, sample)
        self.x1 = xp.asarray(x1.astype(dt))
        self.x2 = xp.asarray(x2.astype(dt))
        self.v0 = xp.asarray((v0 / np.linalg.norm(v0)).astype(dt))
        rows = 3 if self.jvp else 2
        self.A = xp.zeros((rows * P, N), dtype=dt)
        self.H = xp.zeros((rows * P, N), dtype=dt)
        self.threads = threads_for(N)
        self.plan = vjp_plan(config, N, self.path)
        if self.path == "fused":
            self.chunk = fused_chunk(config, N)
            self.Zbuf = xp.zeros((self.chunk, N, N), dtype=dt)
            self.xibuf = xp.zeros((self.chunk, N))
        else:
            self.chunk = 1
            self.Zbuf = xp.zeros((weight_slots(self.plan), N, N), dtype=dt)
            self.xibuf = xp.zeros((1, N))
        every = self.plan.every
        self.fwd_ops = schedule.forward_ops(self.L, self.plan, self.rec)
        self.tables = cuda_graphs.tables(xp, self.rec, self.fwd_ops)
        if self.vjp:
            ncp = schedule.checkpoint_count(self.L, every)
            self.cp = xp.zeros((ncp, P, N), dtype=dt)
            self.cp_ls = xp.zeros((ncp, P))
            self.G = xp.zeros((P, N), dtype=dt)
            self.U = xp.zeros((P, N), dtype=dt)
            self.D = xp.zeros((every, P, N), dtype=dt)
            gamma = base.output_direction(config, N, sample)
            self.gamma = xp.asarray((gamma / np.linalg.norm(gamma)).astype(dt))
        else:
            self.cp = xp.zeros((1, 1, 1), dtype=dt)
            self.cp_ls = xp.zeros((1, 1))
            self.G = self.U = xp.zeros((1, 1), dtype=dt)
            self.D = xp.zeros((1, 1, 1), dtype=dt)

    # -- generation

    def _fill(self, layer0, nlayers, transpose, bias, slot=0):
        """Z^{layer0 ..} into Zbuf from ``slot`` (transposed for the fused forward),
        xi into xibuf."""
        N = self.N
        total = ((N * N + 3) // 4) * nlayers
        blocks = fill_grid(total)
        self.be.launch(
            "vx_fill_weights",
            blocks,
            FILL_THREADS,
            (self.Zbuf[slot:], i32(N), i32(layer0), i32(nlayers), i32(transpose), *self.keys),
        )
        if bias and self.has_bias:
            total = ((N + 3) // 4) * nlayers
            blocks = fill_grid(total)
            self.be.launch(
                "vx_fill_bias",
                blocks,
                FILL_THREADS,
                (self.xibuf, i32(N), i32(layer0), i32(nlayers), *self.keys),
            )

    # -- forward

    def forward(self):
        """The forward pass: ``schedule.forward_ops``, one GEMM and epilogue each, or
        fused in chunks of layers."""
        P, A = self.P, self.A
        A[:P] = self.x1
        A[P : 2 * P] = self.x2
        if self.jvp:
            A[2 * P :] = self.v0
        kind = layout.KIND_JVP if self.jvp else layout.KIND_FWD
        if self.path == "fused":
            self._fused_forward(kind)
            return
        self.kind = kind
        cuda_graphs.run_forward(self, self.fwd_ops, self.GRAPH_LAYERS)

    def step(self, op):
        """Layer ``op.layer`` on the GEMM path, its scalars by value."""
        self._fill(op.layer, 1, transpose=0, bias=True, slot=op.slot)
        self.be.matmul(self.A, self.Zbuf[op.slot].T, self.H)
        self.be.launch("vx_forward", self.P, self.threads,
                       (self.H, self.A, self.xibuf, self.pf, self.pi, self.res, self.cp,
                        self.cp_ls, i32(self.P), i32(self.N), i32(self.R), i32(op.layer),
                        i32(self.kind), i32(self.has_bias), i32(op.record), i32(op.checkpoint),
                        self.limit))  # fmt: skip

    # -- the GEMM path's forward pass as replays of one captured body (cuda_graphs)

    GRAPH_LAYERS = 64  # layers of the captured body

    def graph_prepare(self):
        """Nothing: the body reads ``tables``, built with the unit."""

    def graph_before(self, block):
        """Nothing: a body draws its own Z^l and xi^l."""

    def _fill_clocked(self, clock, k, slot=0, bias=True):
        """Z^l (and xi^l) of layer clock + k into ``slot``: the bits of vx_fill_weights and
        vx_fill_bias (the same counter, untransposed)."""
        N = self.N
        self.be.launch("vx_fill_stream_clocked", fill_grid((N * N + 3) // 4), FILL_THREADS,
                       (self.Zbuf[slot], np.int64(N * N), clock, i32(k),
                        np.uint32(rng.STREAM_WEIGHT), *self.keys))  # fmt: skip
        if bias and self.has_bias:
            self.be.launch("vx_fill_stream64_clocked", fill_grid((N + 3) // 4), FILL_THREADS,
                           (self.xibuf, np.int64(N), clock, i32(k),
                            np.uint32(rng.STREAM_BIAS), *self.keys))  # fmt: skip

    def graph_step(self, k):
        """Layer clock + k of the captured body (slot 0: the forward pass keeps no Z^l)."""
        t = self.tables
        self._fill_clocked(t.clock, k)
        self.be.matmul(self.A, self.Zbuf[0].T, self.H)
        self.be.launch("vx_forward_clocked", self.P, self.threads,
                       (self.H, self.A, self.xibuf, self.pf, self.pi, self.res, self.cp,
                        self.cp_ls, t.clock, t.rec, t.cpi, i32(k), i32(self.P), i32(self.N),
                        i32(self.R), i32(self.kind), i32(self.has_bias),
                        self.limit))  # fmt: skip

    def _fused_forward(self, kind):
        vectors = 6 if kind == layout.KIND_JVP else 4
        smem = fused_smem(self.N, self.dt.itemsize, vectors)
        for ops in chunks(self.fwd_ops, self.chunk):
            layer0, nl = ops[0].layer, len(ops)
            self._fill(layer0, nl, transpose=1, bias=True)
            self.be.launch(
                "vx_fused_forward",
                self.P,
                self.threads,
                (
                    self.Zbuf,
                    self.xibuf,
                    self.A,
                    self.pf,
                    self.pi,
                    self.res,
                    self.cp,
                    self.cp_ls,
                    self.tables.rec,
                    self.tables.cpi,
                    i32(self.P),
                    i32(self.N),
                    i32(self.R),
                    i32(layer0),
                    i32(nl),
                    i32(kind),
                    i32(self.has_bias),
                    self.limit,
                ),
                smem=smem,
            )

    # -- backward

    def backward(self):
        """The backward pass: ``schedule.backward_ops`` after the seed g^L = gamma."""
        P, N, L = self.P, self.N, self.L
        self.be.launch(
            "vx_grad_init",
            P,
            self.threads,
            (self.gamma, self.G, self.pf, self.pi, self.res, i32(P), i32(N), i32(self.R),
             i32(self.rec[L])),
        )  # fmt: skip
        ops = schedule.backward_ops(L, self.plan, self.rec)
        if self.path == "fused":
            for run in runs(ops):
                for chunk in chunks(run, self.chunk):
                    self._fused_ops(chunk)
            return
        cuda_graphs.run_backward(self, ops, self.plan.every)

    def backward_op(self, op):
        """One operation of the backward pass on the GEMM path, its scalars by value."""
        if isinstance(op, schedule.Restart):
            self._restart(op.checkpoint)
        elif isinstance(op, schedule.Recompute):
            self._recompute(op)
        else:
            self._backward(op)

    # -- the GEMM path's full VJP segments as replays of one captured segment (cuda_graphs)

    def segment_prepare(self, start):
        self.seg_clock = self.be.xp.asarray(np.array([start], dtype=np.int32))

    def segment_before(self, start):
        """Nothing: a segment draws its own Z^l."""

    def segment_op(self, op, start):
        """``op`` of the captured segment from layer clock = ``start``."""
        P, N, c = self.P, self.N, self.seg_clock
        if isinstance(op, schedule.Restart):
            self.be.launch("vx_restart_clocked", P, self.threads,
                           (self.x1, self.cp, self.cp_ls, self.A[:P], self.D, self.pf, self.pi,
                            c, i32(self.plan.every), i32(P), i32(N)))  # fmt: skip
        elif isinstance(op, schedule.Recompute):
            j = op.layer - start
            A1, H1 = self.A[:P], self.H[:P]
            self._fill_clocked(c, j, op.slot, bias=True)
            self.be.matmul(A1, self.Zbuf[op.slot].T, H1)
            self.be.launch("vx_recompute", P, self.threads,
                           (H1, A1, self.D, self.xibuf, self.pf, self.pi, i32(P), i32(N), i32(j),
                            i32(self.has_bias)))  # fmt: skip
        else:
            j = op.layer - 1 - start
            if op.draw:
                self._fill_clocked(c, j + 1, op.slot, bias=False)
            self.be.matmul(self.G, self.Zbuf[op.slot], self.U)
            self._backward_clocked(j)

    def _backward_clocked(self, j):
        """The backward step to layer clock + j (phi' from D[j])."""
        self.be.launch("vx_backward_clocked", self.P, self.threads,
                       (self.G, self.U, self.D, self.pf, self.pi, self.res, self.seg_clock,
                        self.tables.rec, i32(j), i32(self.P), i32(self.N), i32(self.R),
                        i32(j)))  # fmt: skip

    def _restart(self, ci):
        self.be.launch(
            "vx_restart",
            self.P,
            self.threads,
            (self.x1, self.cp, self.cp_ls, self.A[: self.P], self.D, self.pf, self.pi,
             i32(self.P), i32(self.N), i32(ci)),
        )  # fmt: skip

    def _recompute(self, op):
        """Trajectory 1's layer ``op.layer`` again (GEMM path): phi' into D[layer - start]."""
        P, N = self.P, self.N
        A1, H1 = self.A[:P], self.H[:P]
        self._fill(op.layer, 1, transpose=0, bias=True, slot=op.slot)
        self.be.matmul(A1, self.Zbuf[op.slot].T, H1)
        self.be.launch(
            "vx_recompute",
            P,
            self.threads,
            (H1, A1, self.D, self.xibuf, self.pf, self.pi, i32(P), i32(N),
             i32(op.layer - op.start), i32(self.has_bias)),
        )  # fmt: skip

    def _backward(self, op):
        """g^{layer-1} from g^layer (GEMM path, U = G Z^layer), phi' from D[layer-1-start]."""
        P, N = self.P, self.N
        if op.draw:
            self._fill(op.layer, 1, transpose=0, bias=False, slot=op.slot)
        self.be.matmul(self.G, self.Zbuf[op.slot], self.U)
        self.be.launch(
            "vx_backward",
            P,
            self.threads,
            (self.G, self.U, self.D, self.pf, self.pi, self.res, i32(P), i32(N),
             i32(self.R), i32(op.layer - 1 - op.start), i32(op.layer - 1), i32(op.record)),
        )  # fmt: skip

    def _fused_ops(self, ops):
        """One launch for a chunk of like operations (fused path): a Restart, consecutive
        Recompute layers (Z^l drawn transposed), or Backward steps (Z^l as it is)."""
        P, N = self.P, self.N
        smem = fused_smem(N, self.dt.itemsize, 2)
        first = ops[0]
        if isinstance(first, schedule.Restart):
            for op in ops:
                self._restart(op.checkpoint)
        elif isinstance(first, schedule.Recompute):
            self._fill(first.layer, len(ops), transpose=1, bias=True)
            self.be.launch(
                "vx_fused_recompute",
                P,
                self.threads,
                (self.Zbuf, self.xibuf, self.A[:P], self.D, self.pf, self.pi, i32(P), i32(N),
                 i32(first.layer), i32(len(ops)), i32(first.start), i32(self.has_bias)),
                smem=smem,
            )  # fmt: skip
        else:
            lo, hi = ops[-1].layer, first.layer
            self._fill(lo, hi - lo + 1, transpose=0, bias=False)
            self.be.launch(
                "vx_fused_backward",
                P,
                self.threads,
                (self.Zbuf, self.G, self.D, self.pf, self.pi, self.res, self.tables.rec, i32(P),
                 i32(N), i32(self.R), i32(lo), i32(hi), i32(first.start)),
                smem=smem,
            )  # fmt: skip
