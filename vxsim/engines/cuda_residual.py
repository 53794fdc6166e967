"""The residual MLP on the CUDA engine: one GEMM and one fused epilogue per layer.

    h^l = h^{l-1} + alpha (s Z^l phi(h^{l-1}) + b^l),     s = sqrt(sigma_w2 / N)
    t^l = t^{l-1} + alpha s Z^l (phi'(h^{l-1}) * t^{l-1})
    g^{l-1} = g^l + alpha phi'(h^{l-1}) * s (Z^l)^T g^l

(models/residual.py). The MLP's GEMM path (``cuda_mlp.Unit``) with the skip
path added: per layer ``vx_fill_weights`` draws Z^l on the device (the
counter's bits, as the oracle's ``rng.normal_matrix``), one GEMM ``H = A Z^T``
over every column (A: phi(hh1), phi(hh2), phi'(hh1) t), then
``vx_residual_forward`` per point: the skip ``S + alpha (s H + b e^-ls)``,
float64 norms, the divergence test, renormalisation (homogeneous phi),
the tangent's skip and norm, checkpoint and records, and the next GEMM's
inputs. The states hh1, hh2 live in ``S`` (2P, N), the unit tangent in ``T``.

VJP: ``engines.schedule``'s operations, lowered as the MLP's GEMM path lowers
them (``cuda_paths.vjp_plan``: checkpoints every ``checkpoint_every`` layers;
a segment's Z^l kept when they fit, else drawn again): ``vx_residual_restart``
(S1, phi, phi' of the checkpoint), ``vx_residual_recompute`` (phi'(hh^l) into
D[j]) and ``vx_residual_backward`` after ``U = G Z^l``.

The forward pass runs as replays of one captured body of ``Unit.GRAPH_LAYERS``
layers (``cuda_graphs``), as the MLP's: per layer ``vx_fill_stream_clocked`` (Z^l,
the bits of ``vx_fill_weights``), ``vx_fill_stream64_clocked`` (xi^l), the GEMM
and ``vx_residual_forward_clocked``, the layer read on the device; the layers
after the last whole body run on the step path.
"""

import numpy as np

from ..models import residual
from . import base, cuda_graphs, layout, schedule
from .cuda_backend import i32
from .cuda_mlp import Unit

ARCH = residual.ARCHITECTURE.name


class ResidualUnit(Unit):
    """One (width, sample) of the residual MLP: the MLP unit's GEMM path, the skip's buffers."""

    def __init__(self, config, width, sample, backend):
        super().__init__(config, width, sample, backend, path="gemm")
        xp, P, N, dt = self.be.xp, self.P, self.N, self.dt
        grid = base.grid(config)
        self.alpha = xp.asarray(grid.extra["alpha"].astype(dt).astype(np.float64))
        self.S = xp.zeros((2 * P, N), dtype=dt)
        self.T = xp.zeros((P if self.jvp else 1, N), dtype=dt)

    def forward(self):
        P, N = self.P, self.N
        kind = layout.KIND_JVP if self.jvp else layout.KIND_FWD
        self.be.launch("vx_residual_start", P, self.threads,
                       (self.x1, self.x2, self.v0, self.S, self.T, self.A, self.pf, self.pi,
                        i32(P), i32(N), i32(self.jvp)))  # fmt: skip
        self.kind = kind
        cuda_graphs.run_forward(self, self.fwd_ops, self.GRAPH_LAYERS)

    def step(self, op):
        """Layer ``op.layer`` on the step path (its scalars by value)."""
        P, N = self.P, self.N
        self._fill(op.layer, 1, transpose=0, bias=True, slot=op.slot)
        self.be.matmul(self.A, self.Zbuf[op.slot].T, self.H)
        self.be.launch("vx_residual_forward", P, self.threads,
                       (self.H, self.S, self.T, self.A, self.xibuf, self.alpha, self.pf,
                        self.pi, self.res, self.cp, self.cp_ls, i32(P), i32(N), i32(self.R),
                        i32(op.layer), i32(self.kind), i32(self.has_bias), i32(op.record),
                        i32(op.checkpoint), self.limit))  # fmt: skip

    def graph_step(self, k):
        """Layer clock + k of the captured body (slot 0: the forward pass keeps no Z^l)."""
        P, N, t = self.P, self.N, self.tables
        self._fill_clocked(t.clock, k)
        self.be.matmul(self.A, self.Zbuf[0].T, self.H)
        self.be.launch("vx_residual_forward_clocked", P, self.threads,
                       (self.H, self.S, self.T, self.A, self.xibuf, self.alpha, self.pf,
                        self.pi, self.res, self.cp, self.cp_ls, t.clock, t.rec, t.cpi, i32(k),
                        i32(P), i32(N), i32(self.R), i32(self.kind), i32(self.has_bias),
                        self.limit))  # fmt: skip

    def segment_op(self, op, start):
        """``op`` of the captured segment from layer clock = ``start`` (as the MLP's)."""
        P, N, c = self.P, self.N, self.seg_clock
        if isinstance(op, schedule.Restart):
            self.be.launch("vx_residual_restart_clocked", P, self.threads,
                           (self.x1, self.cp, self.cp_ls, self.S[:P], self.A[:P], self.D,
                            self.pf, self.pi, c, i32(self.plan.every), i32(P),
                            i32(N)))  # fmt: skip
        elif isinstance(op, schedule.Recompute):
            j = op.layer - start
            A1, H1 = self.A[:P], self.H[:P]
            self._fill_clocked(c, j, op.slot, bias=True)
            self.be.matmul(A1, self.Zbuf[op.slot].T, H1)
            self.be.launch("vx_residual_recompute", P, self.threads,
                           (H1, self.S[:P], A1, self.D, self.xibuf, self.alpha, self.pf,
                            self.pi, i32(P), i32(N), i32(j), i32(self.has_bias)))  # fmt: skip
        else:
            j = op.layer - 1 - start
            if op.draw:
                self._fill_clocked(c, j + 1, op.slot, bias=False)
            self.be.matmul(self.G, self.Zbuf[op.slot], self.U)
            self.be.launch("vx_residual_backward_clocked", P, self.threads,
                           (self.G, self.U, self.D, self.alpha, self.pf, self.pi, self.res,
                            c, self.tables.rec, i32(j), i32(P), i32(N), i32(self.R),
                            i32(j)))  # fmt: skip

    def _restart(self, ci):
        P = self.P
        self.be.launch("vx_residual_restart", P, self.threads,
                       (self.x1, self.cp, self.cp_ls, self.S[:P], self.A[:P], self.D, self.pf,
                        self.pi, i32(P), i32(self.N), i32(ci)))  # fmt: skip

    def _recompute(self, op):
        """Trajectory 1's layer ``op.layer`` again: phi'(hh^layer) into D[layer - start]."""
        P = self.P
        A1, H1 = self.A[:P], self.H[:P]
        self._fill(op.layer, 1, transpose=0, bias=True, slot=op.slot)
        self.be.matmul(A1, self.Zbuf[op.slot].T, H1)
        self.be.launch("vx_residual_recompute", P, self.threads,
                       (H1, self.S[:P], A1, self.D, self.xibuf, self.alpha, self.pf, self.pi,
                        i32(P), i32(self.N), i32(op.layer - op.start),
                        i32(self.has_bias)))  # fmt: skip

    def _backward(self, op):
        """g^{layer-1} from g^layer after U = G Z^layer, phi' from D[layer - 1 - start]."""
        if op.draw:
            self._fill(op.layer, 1, transpose=0, bias=False, slot=op.slot)
        self.be.matmul(self.G, self.Zbuf[op.slot], self.U)
        self.be.launch("vx_residual_backward", self.P, self.threads,
                       (self.G, self.U, self.D, self.alpha, self.pf, self.pi, self.res,
                        i32(self.P), i32(self.N), i32(self.R), i32(op.layer - 1 - op.start),
                        i32(op.layer - 1), i32(op.record)))  # fmt: skip


def run_unit(config, width, sample, backend):
    """One (width, sample) of the residual MLP on its fused epilogue."""
    return ResidualUnit(config, width, sample, backend).run()


def device_bytes(config, width):
    """GPU memory of one residual unit: the MLP's GEMM path plus S, T and alpha."""
    from .cuda_paths import estimate_device_bytes

    P = int(np.prod(config.grid_shape))
    rows = 3 if "jvp" in config.modes else 2
    states = rows * P * width * config.dtype.itemsize + 8 * P
    return estimate_device_bytes(config, width, "gemm") + states
