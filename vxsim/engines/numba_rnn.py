"""The residual and recurrent nets on the Numba engine: stacked BLAS GEMMs, fused epilogues.

GEMM path, per time step (layer), over every grid point's two trajectories (and
tangent) as the rows of one C-order array (``numba_rnn_kernels`` has the layouts):

* the fewest GEMMs the recurrence allows, with the tied gate matrices stacked:
  Elman and LSTM one, ``H = A @ Z.T`` with Z = Z_W or [Z_i; Z_f; Z_g; Z_o]
  (4N x N); GRU two, [Z_r; Z_z] h, then Z_n (r * h), since the reset sits
  inside the product; the tangent rows ride along in the same GEMMs;
* after each GEMM, one parallel Numba call does everything else (gates, both
  trajectories' update, tangent, float64 norms, correlation, renormalisation,
  divergence, records) with no temporaries;
* the input drive Z_U x_t / sqrt(N) (float64, models.gates.drive) is one GEMM per
  ``gates.DRIVE_BLOCK`` steps (rows split at engines.gemm's verified cuts), computed
  here as the model computes it, the block's inputs x_t drawn in one parallel call
  (numba_rnn_kernels.fill_steps, rng.normals bit for bit);
* the VJP lowers engines.schedule's operations (``vjp_plan``, ``forward_ops``,
  ``backward_ops``): trajectory 1's state is stored at every step the plan keeps
  or checkpoints (``S``, one slot per kept layer, or per checkpoint plus one
  segment), segments are recomputed from their checkpoint; a gated net's gate
  values of trajectory 1 (models' STEP_VALUES blocks of N per point) are kept in
  ``QS`` by the forward pass where the plan keeps the step values (``keep_steps``),
  else by a segment's recomputation (its every - 1 steps, when they fit in
  schedule.ZSTORE_BYTES, as a segment's Z^l do), so that a backward step is the
  transposed stacked GEMM (GRU: two) and the fused cotangent kernel(s) alone;
  only a step without kept gates (a segment's last, or every step where even a
  segment's do not fit) first recomputes them from the stored state at t-1 (one
  GEMM; two for GRU); where the next backward step's gates are kept, its first
  cotangent kernel runs on this step's last call (G_BWD3, L_BWD2);
* the residual MLP (``_ResidualUnit``): per layer one GEMM and one call doing
  h + alpha (s Z phi(h) + b) with its tangent or cotangent, whose lanes then draw
  the next op's Z^l (numba_normals.fill_share) into the slot the schedule names
  (Z^l kept where the plan keeps weights, else drawn again).

Fused path (small widths, ``choose_path``; the recurrent nets): one parallel call
per pass (in pieces of FUSED_OPS ops, for progress), each lane taking its points
through every step with matrix-vector products against the tied Z (kept hot in
cache) and the same per-point epilogues; no synchronisation between steps.

GEMMs go through ``numba_gemm.matmul`` (the unit runs under ``gemm.deterministic``:
single-threaded BLAS calls on verified row blocks), so the numbers do not depend on
the thread count. Tied matrices and biases come from
the model's own host code (``models.gates`` on an ``engines.generic.Unit`` with the
parallel generator), bit-identical to the oracle's draws.
"""

import functools
import threading
from typing import NamedTuple

import numpy as np

from .. import progress, rng
from ..models import gates as gates_mod
from ..models import gru, lstm, residual, rnn
from . import base, generic, layout, numba_cpu, numba_gemm, numba_normals, schedule, workspace


class RnnBuffers(NamedTuple):
    """Every array of a recurrent unit (allocated once; unused ones are 1 x 1)."""

    A: np.ndarray  # (3P, N) first GEMM input: states / phi(hh) rows and tangent rows
    H: np.ndarray  # (3P, G N) first GEMM output (gate pre-activations)
    A2: np.ndarray  # (3P, N) GRU: second GEMM input r h, dr h + r v
    H2: np.ndarray  # (3P, N) GRU: second GEMM output
    X: np.ndarray  # (3P, N) LSTM: cells c1, c2, dc
    Q: np.ndarray  # (3P, 12 N) gate values per row (numba_rnn_kernels.Q_*)
    G: np.ndarray  # (P, N or 2N) cotangent rows ([g_h | g_c] for the LSTM)
    GN: np.ndarray  # (P, N) GRU: phi'(a_n) (1 - z) g
    GB: np.ndarray  # (P, 2N or 4N) gradients of the stacked pre-activations
    U: np.ndarray  # (P, N) GB @ Z (G @ Z for Elman)
    U2: np.ndarray  # (P, N) GRU: GN @ Z_n, then g_m
    S: np.ndarray  # (slots, P, N or 2N) stored trajectory-1 states
    S_ls: np.ndarray  # (slots, P) their log-scales (Elman)
    QS: np.ndarray  # (gate slots, P, kept blocks N) trajectory 1's kept gate values (GRU, LSTM)
    xi: np.ndarray  # (G N,) float64 bias noise
    pf: np.ndarray  # (N_F, P) float64 per-point table (numba_rnn_kernels.F_*)
    pi: np.ndarray  # (N_I, P) int64 per-point table (engines.layout.I_*)
    res: np.ndarray  # (N_R, P, R) records (engines.layout.R_*)
    limit: float  # divergence limit of |state|
    Zs: np.ndarray  # (2, N, N) residual: Z^l of this GEMM and the next one's
    xis: np.ndarray  # (2, N) float64 residual: xi^l in row l % 2
    keys: np.ndarray  # (sample, k0, k1) uint64, the generator's key
    wbuf: np.ndarray  # (lanes, 4, CHUNK) uint64 generator scratch
    obuf: np.ndarray  # (lanes, SCRATCH_ROWS, CHUNK) float64 generator scratch


# The kernels' architecture codes (numba_rnn_kernels.ARCH_*), by the model they implement.
ELMAN, GRU, LSTM, RESIDUAL = 0, 1, 2, 3


class Recurrence(NamedTuple):
    """What the driver needs to know about an architecture's kernels."""

    gates: int  # stacked gate matrices
    kind: int  # ELMAN, GRU, LSTM or RESIDUAL (numba_rnn_kernels.ARCH_*)
    cells: int  # state vectors per trajectory (LSTM: h and c)
    fused_max_width: int  # the fused path up to this width (engine.path = "auto"), see below


# fused_max_width: the crossover measured by scripts/bench_architectures.py --paths
# (2 cores, AMD EPYC Zen 3, OpenBLAS 0.3.31, 32 points, float32, 60 steps, load 1.6,
# 2026-12-04): the fused path is faster in both modes up to width 256 for Elman and GRU
# (at 256: Elman 0.56 vs 0.71 ms JVP, 0.64 vs 0.97 VJP; GRU 1.07 vs 1.42, 1.82 vs 2.37)
# and up to 128 for the LSTM (0.76 vs 0.95, 1.01 vs 1.29; at 192 the GEMMs win, 1.25 vs
# 1.01 and 1.52 vs 1.49). The residual net (a fresh Z^l per layer) has the GEMM path only.
RECURRENCES = {
    rnn.ARCHITECTURE.name: Recurrence(1, ELMAN, 1, 256),
    gru.ARCHITECTURE.name: Recurrence(3, GRU, 1, 256),
    lstm.ARCHITECTURE.name: Recurrence(4, LSTM, 2, 128),
    residual.ARCHITECTURE.name: Recurrence(1, RESIDUAL, 1, 0),  # a fresh Z^l per layer
}

# ---------------------------------------------------------------- kernel module

_TEMPLATE = numba_cpu._HERE / "numba_rnn_kernels.py"
_BEGIN_ACT = "# BEGIN ACTIVATION linear\n"
_END_ACT = "# END ACTIVATION\n"
_BEGIN_DISPATCH = "# BEGIN DISPATCH\n"
_END_DISPATCH = "# END DISPATCH\n"
_ARGS = "which, x, phi, dphi, a"
_lock = threading.Lock()
_modules = {}


def generate_source(names):
    """The kernel module's text: the template with its activation block repeated per
    activation (codes 0, 1, ... in ``names``' order) and ``_act`` branching on the code."""
    text = _TEMPLATE.read_text()
    head, rest = text.split(_BEGIN_ACT)
    block, rest = rest.split(_END_ACT)
    middle, rest = rest.split(_BEGIN_DISPATCH)
    _, tail = rest.split(_END_DISPATCH)
    blocks = []
    for k, name in enumerate(names):
        body = block.replace("ACT0", f"ACT{k}").replace(
            '_REGISTRY["linear"]', f"_REGISTRY[{name!r}]"
        )
        blocks.append(f"# BEGIN ACTIVATION {name} (code {k})\n{body}")
    lines = ["@njit(**_OPT)", f"def _act(code, {_ARGS}):"]
    for k in range(len(names)):
        lines.append(f"    {'if' if k == 0 else 'elif'} code == {k}:")
        lines.append(f"        _rows_ACT{k}({_ARGS})")
    banner = (
        "# Generated by vxsim.engines.numba_rnn from numba_rnn_kernels.py\n"
        f"# for the activations {list(names)}. Do not edit.\n"
    )
    return (
        banner + head + "".join(blocks) + _END_ACT + middle + _BEGIN_DISPATCH
        + "\n".join(lines) + "\n\n\n" + _END_DISPATCH + tail
    )  # fmt: skip


def kernels(names):
    """The compiled kernel module for these activation names (generated once, cached)."""
    import importlib.util
    import sys

    names = tuple(names)
    with _lock:
        mod = _modules.get(names)
        if mod is not None:
            return mod
        text = generate_source(names)
        import hashlib

        import numba

        digest = hashlib.sha256(
            (text + numba.__version__ + np.__version__ + sys.version).encode()
            + b"".join(p.read_bytes() for p in numba_cpu._source_files())
        ).hexdigest()[:20]
        modname = f"vxsim_numba_rnn_{digest}"
        path = numba_cpu._write_module(modname, text)
        if not any(path.parent.glob(f"__pycache__/{modname}*.nbi")):
            progress.notice("compiling the numba RNN kernels (once per machine and vxsim version)")
        spec = importlib.util.spec_from_file_location(modname, path)
        mod = importlib.util.module_from_spec(spec)
        sys.modules[modname] = mod
        spec.loader.exec_module(mod)
        _modules[names] = mod
        return mod


# ---------------------------------------------------------------- the path

# Ops per parallel call on the fused path (progress is reported between calls).
FUSED_OPS = 256


def choose_path(config, width):
    """'gemm' or 'fused' for this width: engine.path forces either, "auto" takes the fused
    path up to the architecture's measured crossover (the residual net: 'gemm' always)."""
    most = RECURRENCES[config.arch.name].fused_max_width
    if most == 0:
        return "gemm"
    if config.path in ("gemm", "fused"):
        return config.path
    return "fused" if width <= most else "gemm"


# ---------------------------------------------------------------- one work unit


def _rows(v):
    """(N, P) columns -> (P, N) C-order rows."""
    return np.ascontiguousarray(v.T)


class _Unit:
    """One (width, sample) of a recurrent net: buffers, tied matrices, the lowered schedule."""

    def __init__(self, config, width, sample, path=None, ws=None):
        """``ws``: the ``workspace.Workspace`` that holds the states, the kept steps and
        the residual net's Z^l, uninitialised (default: a new one)."""
        self.config, self.N, self.sample = config, width, sample
        self.rec_ = RECURRENCES[config.arch.name]
        G, kind = self.rec_.gates, self.rec_.kind
        self.kind = kind
        self.path = path or choose_path(config, width)
        grid = base.grid(config)
        names, codes = numba_cpu._activation_codes(grid)
        self.k = k = kernels(names)
        P, N, dt = grid.points, width, config.dtype
        self.P, self.dt, self.L = P, dt, config.depth
        self.jvp, self.vjp = "jvp" in config.modes, "vjp" in config.modes
        self.lanes = np.int64(numba_cpu._lanes())
        ws = workspace.Workspace() if ws is None else ws
        # the store budget counts what the previous unit left in the workspace as free
        budget = functools.partial(numba_cpu.store_budget, ws.nbytes)
        # the model's host code draws the tied matrices and the biases (bit-identical)
        arrays = generic.HostArrays(numba_normals.normal_matrix, budget)
        self.gu = generic.Unit(config, width, sample, arrays)
        if kind != RESIDUAL:
            self.Z = gates_mod.tied_weights(self.gu, G)  # (G N, N), run precision
            self.ZT = self.Z.T
            xi = np.concatenate([self.gu.normals(g, rng.STREAM_BIAS) for g in range(G)])
            self.Z_U = np.concatenate(
                [self.gu.matrix(0, rng.STREAM_GATE_INPUT + g, np.float64) for g in range(G)]
            )
        else:
            xi = np.zeros(N)
        self._drives = {}
        pf = np.zeros((k.N_F, P))
        pf[k.F_SCALE] = np.sqrt(grid.sigma_w2 / N).astype(dt).astype(np.float64)
        pf[k.F_SB] = np.sqrt(grid.sigma_b2)
        if kind == RESIDUAL:
            pf[k.F_ALPHA] = grid.extra["alpha"].astype(dt)
        else:
            pf[k.F_SU] = np.sqrt(grid.extra["sigma_u2"])
        shift_axis = getattr(config.arch.steps, "BIAS_AXIS", None)  # a gate-bias axis
        if shift_axis:
            pf[k.F_SHIFT] = grid.extra[shift_axis]
        pi = np.zeros((layout.N_I, P), dtype=np.int64)
        pi[layout.I_CODE] = codes
        grid_log_scale = bool(config.arch.steps.LOG_SCALE)
        for act, param, cols in grid.groups:
            pf[k.F_PARAM, cols] = dt.type(param)
            pi[layout.I_HOMOG, cols] = int(act.homogeneous) if grid_log_scale else 0
        self.rec = base.record_index(config)
        res = np.empty((layout.N_R, P, config.layers.size))
        for plane, _ in layout.produced_planes(config):
            res[plane] = np.nan
        # the schedule: what the VJP keeps (engines.schedule through generic.vjp_plan's sizes)
        self.plan = self._plan() if self.vjp else schedule.NO_VJP
        cells = self.rec_.cells
        if self.vjp:
            ncp = schedule.checkpoint_count(self.L, self.plan.every)
            slots = self.L if self.plan.keep_all else ncp + self.plan.every
        else:
            slots = 1
        self.ncp = ncp if self.vjp else 0
        qslots, self.gates_kept = self._gate_slots()
        blocks = k.KEPT_BLOCKS[kind] if kind != RESIDUAL else 0
        one = np.zeros((1, 1), dtype=dt)
        gw = {ELMAN: 1, GRU: 2, LSTM: 4, RESIDUAL: 1}[kind]
        is_residual = kind == RESIDUAL
        lanes = int(self.lanes)
        wbuf, obuf = numba_normals.scratch(lanes)
        k0, k1 = rng.seed_key(config.seed)

        def w(name, shape):
            return ws.empty(name, shape, dt)

        self.b = RnnBuffers(
            A=w("A", (3 * P, N)),
            H=w("H", (3 * P, G * N if kind != GRU else 2 * N)),
            A2=w("A2", (3 * P, N)) if kind == GRU else one,
            H2=w("H2", (3 * P, N)) if kind == GRU else one,
            X=w("X", (3 * P, N)) if kind in (LSTM, RESIDUAL) else one,
            Q=w("Q", (3 * P, k.Q_BLOCKS * N)),
            G=w("G", (P, cells * N)) if self.vjp else one,
            GN=w("GN", (P, N)) if self.vjp and kind == GRU else one,
            GB=w("GB", (P, gw * N)) if self.vjp and kind != ELMAN else one,
            U=w("U", (P, N)) if self.vjp else one,
            U2=w("U2", (P, N)) if self.vjp and kind == GRU else one,
            S=w("S", (slots, P, cells * N)) if self.vjp else np.zeros((1, 1, 1), dt),
            S_ls=np.zeros((slots, P)) if self.vjp else np.zeros((1, 1)),
            QS=w("QS", (qslots, P, blocks * N) if qslots else (1, 1, 1)),
            xi=xi, pf=pf, pi=pi, res=res, limit=base.divergence_limit(dt),
            Zs=w("Zs", (self._zslots(), N, N) if is_residual else (1, 1, 1)),
            xis=np.zeros((2, N)), keys=np.array([sample, k0, k1], dtype=np.uint64),
            wbuf=wbuf, obuf=obuf,
        )  # fmt: skip
        self.steps_done = 0
        self._entry = self._fused_entry = self._table = None
        self.fwd_ops = schedule.forward_ops(self.L, self.plan, self.rec)
        self.bwd_ops = schedule.backward_ops(self.L, self.plan, self.rec) if self.vjp else []
        self.steps_total = len(self.fwd_ops) + len(self.bwd_ops)

    def _plan(self):
        """generic.vjp_plan's Plan with this engine's store budget (numba_cpu.store_budget):
        trajectory 1's state per kept layer, a gated net's gate values too where they fit
        (``keep_steps``); the residual net's Z^l are kept as the plan says
        (``keep_weights``), else drawn again."""
        return generic.vjp_plan(self.gu, self.config.arch.steps)

    def _gate_slots(self):
        """(slots, 'all' | 'segment' | None): where a gated net's VJP keeps trajectory 1's
        gate values: every step's (the plan's keep_steps), a segment's recomputed steps
        (checkpointed, when every - 1 of them fit in schedule.ZSTORE_BYTES), or none."""
        blocks = self.k.KEPT_BLOCKS[self.kind] if self.kind != RESIDUAL else 0
        if not (self.vjp and blocks):
            return 0, None
        if self.plan.keep_all:
            return (self.L, "all") if self.plan.keep_steps else (0, None)
        step = blocks * self.N * self.P * self.dt.itemsize
        if self.plan.every > 1 and (self.plan.every - 1) * step <= schedule.ZSTORE_BYTES:
            return self.plan.every - 1, "segment"
        return 0, None

    def _qslot(self, op):
        """The gate store's slot an op fills (Forward, Recompute) or reads (Backward), -1: none."""
        if self.gates_kept is None or isinstance(op, schedule.Restart):
            return -1
        if self.gates_kept == "all":
            return -1 if isinstance(op, schedule.Recompute) else op.layer - 1
        if isinstance(op, schedule.Forward):
            return -1
        if isinstance(op, schedule.Backward) and op.layer == min(
            op.start + self.plan.every, self.L
        ):
            return -1  # the segment's last step was not recomputed: its gates are not kept
        return op.layer - op.start - 1

    def _zslots(self):
        """Weight slots of the residual net: the plan's kept Z^l (every layer's, or a
        segment's), else one (the next Z is drawn after the GEMM that read the last)."""
        if not (self.vjp and self.plan.keep_weights):
            return 1
        return self.L if self.plan.keep_all else self.plan.every

    # -- helpers

    def _drive_block(self, block):
        """Z_U [x_t0 .. x_t0+B-1] / sqrt(N) of a block of gates.DRIVE_BLOCK steps (one GEMM,
        as gates.drive computes it), (B, G N) float64 rows."""
        B = gates_mod.DRIVE_BLOCK
        steps = range(block * B + 1, min((block + 1) * B, self.L) + 1)
        k0, k1 = rng.seed_key(self.config.seed)
        rows = np.empty((len(steps), self.N))  # rng.normals of each step, bit for bit
        self.k.fill_steps(rows, np.uint64(steps[0]), np.uint64(self.sample),
                          np.uint64(rng.STREAM_SEQUENCE), np.uint64(k0), np.uint64(k1),
                          self.lanes)  # fmt: skip
        X = np.ascontiguousarray(rows.T)  # (N, B) C-order, as gates.drive stacks them
        D = np.empty((self.Z_U.shape[0], len(steps)))
        # Z_U's rows split over the lanes at verified cuts: one GEMM's bits (engines.gemm)
        self._mm(self.Z_U, np.sqrt(self.config.input_variance) * X, D)
        return np.ascontiguousarray((D / np.sqrt(self.N)).T)

    def drive(self, t):
        """Z_U x_t / sqrt(N), (G N,) float64, its block kept (the last DRIVE_BLOCKS_KEPT)."""
        B = gates_mod.DRIVE_BLOCK
        block = (t - 1) // B
        if block not in self._drives:
            self._drives[block] = self._drive_block(block)
            while len(self._drives) > gates_mod.DRIVE_BLOCKS_KEPT:
                del self._drives[next(iter(self._drives))]
        return self._drives[block][(t - 1) % B]

    def drive_table(self):
        """Every step's drive, (T, G N) float64 (the fused path's, made once per unit)."""
        if self._table is None:
            blocks = -(-self.L // gates_mod.DRIVE_BLOCK)
            self._table = np.concatenate([self._drive_block(j) for j in range(blocks)])
        return self._table

    # -- the fused path (small widths): schedule ops -> op rows, whole passes per lane

    def _op_rows(self, ops):
        """engines.schedule's ops as numba_rnn_kernels op rows (C_* columns)."""
        k = self.k
        rows = np.zeros((len(ops), k.N_C), dtype=np.int64)
        for i, op in enumerate(ops):
            row = rows[i]
            if isinstance(op, schedule.Forward):
                keep = -1
                if self.vjp and (op.keep or op.checkpoint >= 0):
                    keep = self._slot(op.layer, op.layer)
                row[:] = (k.OP_FWD, op.layer, op.record, self.jvp, 0, keep, self._qslot(op))
            elif isinstance(op, schedule.Restart):
                row[:] = (k.OP_RESTART, op.start, -1, 0, self._slot(op.start, op.start), -1, -1)
            elif isinstance(op, schedule.Recompute):
                prev, new = self._slot(op.layer - 1, op.start), self._slot(op.layer, op.start)
                row[:] = (k.OP_RECOMPUTE, op.layer, -1, 0, prev, new, self._qslot(op))
            else:
                prev = self._slot(op.layer - 1, op.start)
                row[:] = (k.OP_BACKWARD, op.layer, op.record, 0, prev, -1, self._qslot(op))
        return rows

    def _fused_pass(self, ops):
        """One parallel call per FUSED_OPS ops (progress between them)."""
        import numba

        rows = self._op_rows(ops)
        arch = np.int64(self.kind)
        D = self.drive_table()
        for first in range(0, len(rows), FUSED_OPS):
            last = min(first + FUSED_OPS, len(rows))
            args = (arch, self.b, rows, np.int64(first), np.int64(last), self.Z, D, self.lanes)
            if self._fused_entry is None:
                sig = tuple(numba.typeof(a) for a in args)
                self._fused_entry = self.k.run_fused.compile(sig)
            self._fused_entry(*args)
            self.steps_done += last - first
            progress.step(self.steps_done, self.steps_total)

    def _mm(self, a, b, out):
        numba_gemm.matmul(a, b, out, int(self.lanes))

    def _run(self, op, drv, t, r=-1, rows=2, jvp=False, slot=-1, keep=-1, qslot=-1, nxt=0,
             nxt_slot=0):  # fmt: skip
        """One ``run`` call through its compiled entry point, typed once per unit (typing a
        NamedTuple of arrays per call costs more than a step's epilogue at small widths)."""
        args = (np.int64(op), self.b, drv, np.int64(t), np.int64(r), np.int64(rows),
                bool(jvp), np.int64(slot), np.int64(keep), np.int64(qslot), self.lanes,
                np.int64(nxt), np.int64(nxt_slot))  # fmt: skip
        if self._entry is None:
            import numba

            self._entry = self.k.run.compile(tuple(numba.typeof(a) for a in args))
        self._entry(*args)

    def _slot(self, layer, start):
        """Where trajectory 1's state at ``layer`` lives in S (see the module docstring)."""
        if self.plan.keep_all:
            return layer
        if layer == start:
            return layer // self.plan.every
        return self.ncp + layer - start

    def _progress(self):
        self.steps_done += 1
        progress.step(self.steps_done, self.steps_total)

    # -- one step (forward: rows = 2 with the tangent when jvp; recompute: rows = 1)

    def _step(self, t, r, rows, jvp, keep, qkeep=-1):
        b, k, P = self.b, self.k, self.P
        n = rows * P + (P if jvp else 0)
        drv = self.drive(t)
        if self.kind == ELMAN:
            self._mm(b.A[:n], self.ZT, b.H[:n])
            self._run(k.E_FWD, drv, t, r, rows, jvp, keep=keep)
        elif self.kind == GRU:
            N = self.N
            self._mm(b.A[:n], self.ZT[:, : 2 * N], b.H[:n])
            self._run(k.G_FWD1, drv, t, r, rows, jvp)
            self._mm(b.A2[:n], self.ZT[:, 2 * N :], b.H2[:n])
            self._run(k.G_FWD2, drv, t, r, rows, jvp, keep=keep, qslot=qkeep)
        else:
            self._mm(b.A[:n], self.ZT, b.H[:n])
            self._run(k.L_FWD, drv, t, r, rows, jvp, keep=keep, qslot=qkeep)

    def _start(self):
        """Layer 0: h = x1 | x2 per point (c = 0), the tangent v0 / |v0| (LSTM: (v0, 0))."""
        b, P, dt = self.b, self.P, self.dt
        x1, x2 = self.gu.x1, self.gu.x2
        b.A[:P] = x1.astype(dt)
        b.A[P : 2 * P] = x2.astype(dt)
        if self.jvp:
            steps = self.config.arch.steps
            t, _ = generic._renormalise(steps.tangent_start(self.gu))
            b.A[2 * P :] = _rows(t[: self.N])
            if self.kind == LSTM:
                b.X[2 * P :] = _rows(t[self.N :])
        if self.kind == LSTM:
            b.X[: 2 * P] = 0  # c^0 (the buffers are uninitialised: engines.workspace)
        if self.vjp:
            b.S[0, :, : self.N] = b.A[:P]  # the input
            b.S[0, :, self.N :] = 0  # LSTM: c^0 (other nets keep one cell: no columns)

    # -- the passes

    def forward(self):
        self._start()
        if self.path == "fused":
            return self._fused_pass(self.fwd_ops)
        for op in self.fwd_ops:
            keep = -1
            if self.vjp and (op.keep or op.checkpoint >= 0):
                keep = self._slot(op.layer, op.layer)
            self._step(op.layer, int(op.record), 2, self.jvp, keep, self._qslot(op))
            self._progress()

    def _cotangent_start(self):
        """G = gamma / |gamma| (zero at dead points) and its record at layer L (0, NaN if dead)."""
        b = self.b
        dead = b.pi[layout.I_DEAD] != 0
        gamma, _ = generic._renormalise(self.config.arch.steps.cotangent_start(self.gu))
        b.G[:] = _rows(gamma)
        b.G[dead] = 0
        r = self.rec[self.L]
        if r >= 0:
            b.res[layout.R_GRAD, :, r] = np.where(dead, np.nan, 0.0)

    def backward(self):
        self._cotangent_start()
        if self.path == "fused":
            return self._fused_pass(self.bwd_ops)
        self._chained = False  # the step's first cotangent kernel ran on the previous call
        ops = self.bwd_ops
        for i, op in enumerate(ops):
            if isinstance(op, schedule.Restart):
                self._restart(op)
            elif isinstance(op, schedule.Recompute):
                prev = self._slot(op.layer - 1, op.start)
                self._load(prev)
                new = self._slot(op.layer, op.start)
                self._step(op.layer, -1, 1, False, new, self._qslot(op))
            else:
                self._backward_step(op, ops[i + 1] if i + 1 < len(ops) else None)
            self._progress()

    def _load(self, slot):
        """A segment step's GEMM input from trajectory 1's stored state (GRU, LSTM); for
        Elman, A already holds phi(hh1) of the previous recomputed step (or the restart's)."""
        b, P, N = self.b, self.P, self.N
        if self.kind == ELMAN:
            return
        b.A[:P] = b.S[slot, :, :N]
        if self.kind == LSTM:
            b.X[:P] = b.S[slot, :, N:]

    def _restart(self, op):
        """Elman: A = phi(hh1) of the checkpoint (the raw input x1 at layer 0)."""
        if self.kind != ELMAN:
            return
        b, P = self.b, self.P
        slot = self._slot(op.start, op.start)
        if op.start == 0:
            b.A[:P] = b.S[0]
            b.pf[self.k.F_LSR] = 0.0
        else:
            self._run(self.k.E_START, self.b.xi, op.start, slot=slot)

    def _backward_step(self, op, nxt):
        """g_{t-1} from g_t at t = op.layer (the model's cotangent). Where the next op is a
        backward step with kept gates (GRU, LSTM), its first cotangent kernel (G_BWD1,
        L_BWD1) runs on this step's last call: one parallel call fewer per step."""
        b, k, P, N = self.b, self.k, self.P, self.N
        t, r = op.layer, int(op.record)
        prev = self._slot(t - 1, op.start)
        if self.kind == ELMAN:
            self._mm(b.G, self.Z, b.U)
            self._run(k.E_BWD, b.xi, t, r, slot=prev)
            return
        drv = self.drive(t)
        q = self._qslot(op)
        chained, self._chained = self._chained, False
        qnext = snext = -1
        if isinstance(nxt, schedule.Backward) and self._qslot(nxt) >= 0:
            qnext, snext = self._qslot(nxt), self._slot(nxt.layer - 1, nxt.start)
            self._chained = True
        if q < 0:  # the gates of step t from the stored state at t-1
            self._load(prev)
        if self.kind == GRU:
            if q < 0:
                self._mm(b.A[:P], self.ZT[:, : 2 * N], b.H[:P])
                self._run(k.G_FWD1, drv, t, rows=1)
                self._mm(b.A2[:P], self.ZT[:, 2 * N :], b.H2[:P])
            if not chained:
                self._run(k.G_BWD1, drv, t, qslot=q)
            self._mm(b.GN, self.Z[2 * N :], b.U2)
            self._run(k.G_BWD2, drv, t, slot=prev, qslot=q)
            self._mm(b.GB, self.Z[: 2 * N], b.U)
            self._run(k.G_BWD3, drv, t, r, qslot=q, keep=qnext)
        else:
            if q < 0:
                self._mm(b.A[:P], self.ZT, b.H[:P])
            if not chained:
                self._run(k.L_BWD1, drv, t, slot=prev, qslot=q)
            self._mm(b.GB, self.Z, b.U)
            self._run(k.L_BWD2, drv, t, r, slot=snext, keep=qnext, qslot=q)

    def results(self):
        return base.shape_results(self.config, layout.results(self.config, self.b.res, self.b.pi))


class _ResidualUnit(_Unit):
    """The residual MLP: per layer one GEMM H = A @ (Z^l).T and one parallel call doing the
    epilogue h + alpha (s Z phi(h) + b) (tangent or cotangent too) and, on the same lanes,
    drawing the next op's Z into its slot (numba_rnn_kernels.run's ``nxt``): the slots
    and draws are engines.schedule's (``op.slot``, ``Backward.draw``), as numba_cpu lowers
    them for the MLP."""

    def _prefetch(self, layer, slot):
        """Z^layer into Zs[slot] and xi^layer into xis[layer % 2] (a pass's first draw)."""
        if layer == 0:
            return
        from . import numba_normals

        b, cfg = self.b, self.config
        b.Zs[slot] = numba_normals.normal_matrix(
            cfg, self.N, self.sample, layer, rng.STREAM_WEIGHT, self.dt
        )
        b.xis[layer % 2] = numba_normals.normals(
            cfg.seed, self.sample, layer, rng.STREAM_BIAS, self.N
        )

    def _start(self):
        """hh^0 = x1 | x2 (X rows), A = phi(hh^0) (and phi'(x1) t^0): the oracle's arithmetic."""
        b, P, gu = self.b, self.P, self.gu
        h0 = self.config.arch.steps.start(gu)["h"]
        b.X[: 2 * P] = _rows(h0)
        b.A[: 2 * P] = _rows(gu.activate("phi", h0))
        self.phi_x1 = b.A[:P].copy()
        if self.jvp:
            t, _ = generic._renormalise(self.config.arch.steps.tangent_start(gu))
            b.X[2 * P :] = _rows(t)
            b.A[2 * P :] = _rows(gu.activate("dphi", h0[:, :P]) * t)
        if self.vjp:
            b.S[0] = b.X[:P]

    def _next_draws(self, ops):
        """Per op, (layer, slot) of the Z the next drawing op needs (0, 0: none): the ops
        that GEMM (all but Restart) draw unless a Backward's ``draw`` says it is kept."""
        out = [(0, 0)] * len(ops)
        nxt = (0, 0)
        for i in range(len(ops) - 1, -1, -1):
            out[i] = nxt
            op = ops[i]
            if not isinstance(op, schedule.Restart):
                draws = not isinstance(op, schedule.Backward) or op.draw
                nxt = (op.layer, op.slot) if draws else (0, 0)
        return out, nxt

    def forward(self):
        self._start()
        ops, b, k, P = self.fwd_ops, self.b, self.k, self.P
        n = 3 * P if self.jvp else 2 * P
        after, first = self._next_draws(ops)
        self._prefetch(*first)
        for i, op in enumerate(ops):
            keep = -1
            if self.vjp and (op.keep or op.checkpoint >= 0):
                keep = self._slot(op.layer, op.layer)
            nxt, nxt_slot = after[i]
            self._mm(b.A[:n], b.Zs[op.slot].T, b.H[:n])
            self._run(k.R_FWD, b.xi, op.layer, int(op.record), 2, self.jvp, keep=keep,
                      nxt=nxt, nxt_slot=nxt_slot)  # fmt: skip
            self._progress()

    def backward(self):
        b, k, P = self.b, self.k, self.P
        self._cotangent_start()
        ops = self.bwd_ops
        after, first = self._next_draws(ops)
        if first[0]:
            self._prefetch(*first)
        for i, op in enumerate(ops):
            if isinstance(op, schedule.Restart):
                if op.start == 0:
                    b.X[:P] = b.S[0]
                    b.A[:P] = self.phi_x1
                    b.pf[k.F_LSR] = 0.0
                else:
                    self._run(k.R_START, b.xi, op.start, slot=self._slot(op.start, op.start))
                self._progress()
                continue
            nxt, nxt_slot = after[i]
            if isinstance(op, schedule.Recompute):
                self._mm(b.A[:P], b.Zs[op.slot].T, b.H[:P])
                self._run(
                    k.R_FWD,
                    b.xi,
                    op.layer,
                    -1,
                    1,
                    False,
                    keep=self._slot(op.layer, op.start),
                    nxt=nxt,
                    nxt_slot=nxt_slot,
                )
            else:
                self._mm(b.G, b.Zs[op.slot], b.U)
                self._run(
                    k.R_BWD,
                    b.xi,
                    op.layer,
                    int(op.record),
                    slot=self._slot(op.layer - 1, op.start),
                    nxt=nxt,
                    nxt_slot=nxt_slot,
                )
            self._progress()


def run_unit(config, width, sample, path=None):
    """One (width, sample) of a residual or recurrent net on the fused kernels (inside
    numba_cpu.run_unit, so under gemm.deterministic); ``path`` forces 'gemm' or 'fused'."""
    cls = _ResidualUnit if RECURRENCES[config.arch.name].kind == RESIDUAL else _Unit
    with workspace.borrowed() as ws:
        unit = cls(config, width, sample, path, ws)
        unit.forward()
        if unit.vjp:
            unit.backward()
        return unit.results()
