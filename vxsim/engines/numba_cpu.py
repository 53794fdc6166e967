"""The Numba CPU engine: BLAS GEMMs with fused Numba epilogues, or one fused kernel.

Same numbers as the NumPy oracle (``numpy_ref``), same result arrays, faster:

* **GEMM path** (large widths). Per layer: one BLAS GEMM ``H = A @ Z.T``
  over every batched column (h1, h2 and tangents of every grid point; states
  are rows of C-order (columns, N) arrays, so nothing is copied; its rows
  are split over threads of our own with OpenBLAS on one thread, which
  stays fast on a busy machine: see ``gemm``), then one parallel Numba call
  that does everything else in one pass per point (scale, bias, norms,
  divergence, renormalisation, recording, phi and phi' written into the next
  GEMM input) and, on the same threads, generates the next layer's Z^{s,l}
  (Philox, bit-identical to ``base.weights``) into the reused (N, N) buffer.
  Nothing is allocated per layer.
* **Fused path** (small widths, where a BLAS call and a thread-pool wake-up
  per layer cost more than the arithmetic): one Numba call runs all layers;
  each thread takes its share of the grid points through every layer,
  generating each Z itself into a small buffer (the same Z for all: common
  random numbers) and doing the matrix-vector products itself.
  ``engine.path = "auto"`` picks it for ``width <= FUSED_MAX_WIDTH`` (the
  crossover measured by ``scripts/bench_cpu.py``); ``"gemm"`` or ``"fused"``
  forces either.
* **VJP**: where phi'(h1) of every layer fits in the memory budget
  (``store_budget()``; ``engine.checkpoint = 0``), the forward pass keeps it
  (and, if they fit too, every Z^l) and the backward pass is the backward
  steps ``g <- phi' * (s Z^T g)`` alone, as autograd does it: memory O(L N P),
  and a third fewer GEMM columns than recomputing.
  Otherwise (or with ``engine.checkpoint`` set) the forward pass keeps h1
  every ``checkpoint_every`` layers (~sqrt(L)), then per segment, last first,
  a recomputation from its checkpoint (weights regenerated from the counter)
  keeps phi'(h1) for the backward steps: memory O(sqrt(L) N P). The two
  differ only in the recomputation's summation order (its GEMM covers the h1
  columns alone). JVP carries tangents as extra GEMM columns: memory
  independent of depth.
* float32 states with float64 norms and log-norm accumulators, unless
  ``precision = "float64"``.

The kernels live in ``numba_kernels.py``; this module writes a copy of it,
specialised for the registered activations, into a cache directory (see
``kernels``) and imports that,
so that phi and phi' come from the registry and compiled kernels are cached
between runs (``$VXSIM_CACHE_DIR``, else ``$XDG_CACHE_HOME/vxsim``, else
``~/.cache/vxsim``).
"""

import dataclasses
import hashlib
import importlib.util
import os
import sys
import tempfile
import threading
from pathlib import Path

import numpy as np

from .. import activations, rng
from . import base, gemm, layout

NAME = "numba"

# Numba's OpenMP workers and OpenBLAS's workers take turns every layer (GEMM,
# then epilogue). GNU OpenMP's default is to spin after a parallel region,
# which on a machine with as many threads as cores starves the BLAS threads:
# measured 12 ms instead of 0.7 ms per layer at width 256 on 2 cores. Waiting
# passively costs nothing measurable here. libgomp reads this when Numba
# starts its thread pool (the first parallel kernel call), so set it now
# unless the user chose otherwise.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# OpenBLAS's workers spin the same way after each GEMM (2^28 cycles), taking
# the cores from the epilogue: at width 1024 the JVP layer takes 21.8 ms with
# OpenBLAS's default and 17.2 ms with OPENBLAS_THREAD_TIMEOUT=4. OpenBLAS reads
# that variable when NumPy loads it, before this module is imported, so it
# must be set before NumPy is imported: vxsim/__init__.py sets it by default.

# Widths up to this run on the fused path when engine.path = "auto": the
# crossover measured by scripts/bench_cpu.py on 2 cores (AMD EPYC Zen 4,
# OpenBLAS 0.3.31, 342 grid points). With the vectorised float32 tanh the
# fused path is faster at widths 16-128 in both modes (at 128, four runs:
# JVP 0.39-0.51 vs 0.48-0.57, VJP 0.51-0.54 vs 0.62-0.73 ms per layer); at
# 160-256 the two paths are within each other's noise.
FUSED_MAX_WIDTH = 128

ZSTORE_BYTES = base.ZSTORE_BYTES

# VJP keeps every layer's phi'(h1) (and every Z^l) instead of recomputing
# segments from checkpoints when that fits in this many bytes; None: the
# default, min(STORE_BYTES_MAX, STORE_FRACTION of the available memory).
STORE_BYTES = None
STORE_BYTES_MAX = 2 * 2**30
STORE_FRACTION = 0.25

_TEMPLATE = Path(__file__).with_name("numba_kernels.py")
_BEGIN_ACT = "# BEGIN ACTIVATION linear\n"
_END_ACT = "# END ACTIVATION\n"
_BEGIN_DISPATCH = "# BEGIN DISPATCH\n"
_END_DISPATCH = "# END DISPATCH\n"
_DISPATCH_ARGS = "kind, h1, h2, t, d1, d2, dt, a1, a2, at, dd, a"

_lock = threading.Lock()
_modules = {}


def numerics():
    """What decides the bits: the BLAS kernel (the fused kernels are IEEE-exact loops)."""
    return gemm.signature()


def available():
    try:
        import numba  # noqa: F401
    except ImportError:
        return False
    return True


# ---------------------------------------------------------------- kernel module


def cache_dir():
    """Where generated kernel modules and their compiled code are kept."""
    root = os.environ.get("VXSIM_CACHE_DIR")
    if not root:
        xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        root = os.path.join(xdg, "vxsim")
    return Path(root) / "numba"


def _source_files():
    return [_TEMPLATE, Path(rng.__file__), Path(activations.__file__), Path(layout.__file__)]


def generate_source(names):
    """The kernel module's text for these activation names (codes 0, 1, ... in this order)."""
    text = _TEMPLATE.read_text()
    head, rest = text.split(_BEGIN_ACT)
    block, rest = rest.split(_END_ACT)
    middle, rest = rest.split(_BEGIN_DISPATCH)
    _, tail = rest.split(_END_DISPATCH)
    blocks = []
    for k, name in enumerate(names):
        if name not in activations.REGISTRY:
            raise ValueError(f"unknown activation {name!r}")
        body = block.replace("ACT0", f"ACT{k}").replace(
            '_REGISTRY["linear"]', f"_REGISTRY[{name!r}]"
        )
        blocks.append(f"# BEGIN ACTIVATION {name} (code {k})\n{body}")
    lines = [
        "@njit(**_OPT)",
        f"def _act_rows(code, {_DISPATCH_ARGS}):",
    ]
    for k in range(len(names)):
        lines.append(f"    {'if' if k == 0 else 'elif'} code == {k}:")
        lines.append(f"        _act_rows_ACT{k}({_DISPATCH_ARGS})")
    dispatch = "\n".join(lines) + "\n\n\n"
    banner = (
        "# Generated by vxsim.engines.numba_cpu from numba_kernels.py\n"
        f"# for the activations {list(names)}.\n"
        "# Do not edit: delete the file (or its cache directory) to regenerate it.\n"
    )
    return (
        banner
        + head
        + "".join(blocks)
        + _END_ACT
        + middle
        + _BEGIN_DISPATCH
        + dispatch
        + _END_DISPATCH
        + tail
    )


def _digest(names):
    import llvmlite
    import numba

    h = hashlib.sha256()
    for path in _source_files():
        h.update(path.read_bytes())
    h.update(repr((list(names), numba.__version__, llvmlite.__version__, np.__version__)).encode())
    h.update(sys.version.encode())
    return h.hexdigest()[:20]


def kernels(names):
    """The compiled-kernel module for a tuple of activation names (generated once, cached)."""
    names = tuple(names)
    with _lock:
        mod = _modules.get(names)
        if mod is not None:
            return mod
        digest = _digest(names)
        modname = f"vxsim_numba_{digest}"
        path = _write_module(modname, generate_source(names))
        spec = importlib.util.spec_from_file_location(modname, path)
        mod = importlib.util.module_from_spec(spec)
        sys.modules[modname] = mod
        spec.loader.exec_module(mod)
        _modules[names] = mod
        return mod


def _write_module(modname, text):
    """Write the generated source once (never rewritten: Numba's cache keys on its mtime)."""
    for root in (cache_dir(), Path(tempfile.gettempdir()) / f"vxsim-cache-{os.getuid()}" / "numba"):
        path = root / f"{modname}.py"
        try:
            if path.exists() and path.read_text() == text:
                return path
            root.mkdir(parents=True, exist_ok=True)
            tmp = root / f".{modname}.{os.getpid()}.{threading.get_ident()}.tmp"
            tmp.write_text(text)
            try:
                os.link(tmp, path)  # atomic, and never replaces a concurrent writer's file
            except FileExistsError:
                pass
            except OSError:
                os.replace(tmp, path)  # file systems without hard links
            tmp.unlink(missing_ok=True)
            if path.read_text() == text:
                return path
        except OSError:
            continue
    raise OSError("no writable cache directory for the numba engine's kernels")


def _activation_codes(grid):
    """The kernel module's activation names and the code of each grid point.

    The module is compiled for every registered activation, not only the
    grid's: one compilation (about 25 s per precision on 2 cores) serves every
    later sweep, whatever its activations, from the cache.
    """
    names = tuple(activations.names())
    codes = np.zeros(grid.points, dtype=np.int64)
    for act, _, cols in grid.groups:
        codes[cols] = names.index(act.name)
    return names, codes


# ---------------------------------------------------------------- helpers for tests and benchmarks


def _lanes():
    import numba

    return int(numba.get_num_threads())


def _scratch(k, lanes):
    """Per-lane scratch of the normal generator."""
    return (
        np.zeros((lanes, 4, k.CHUNK), dtype=np.uint64),
        np.zeros((lanes, 4, k.CHUNK), dtype=np.float64),
    )


def weights(config, width, sample, layer, dtype=None):
    """Z^{s,l} and xi^{s,l} as the engine's kernel generates them (compare with
    base.weights and base.bias)."""
    config = _with_precision(config, dtype)
    unit = _Unit(config, width, sample, path="gemm")
    unit._op(unit.k.OP_PREFETCH, nxt=layer, nxt_bias=1)
    return unit.Zs[0, 0].copy(), unit.xis[layer % 2].copy()


def _with_precision(config, dtype):
    """The config, or a copy of it in another precision."""
    if dtype is None or np.dtype(dtype) == config.dtype:
        return config
    raw = {**config.raw, "measure": {**config.raw["measure"], "precision": np.dtype(dtype).name}}
    return dataclasses.replace(config, precision=np.dtype(dtype).name, raw=raw)


def store_budget():
    """Bytes VJP may spend on keeping every layer (see STORE_BYTES)."""
    if STORE_BYTES is not None:
        return int(STORE_BYTES)
    have = base.mem_available()
    if have is None:
        return STORE_BYTES_MAX // 4
    return int(min(STORE_BYTES_MAX, STORE_FRACTION * have))


def vjp_plan(config, width, points, path):
    """(every, full, zstore): how a VJP unit keeps what its backward pass needs.

    full: phi'(h1) of all L layers kept by the forward pass (every = L, no
    checkpoints, nothing recomputed) when engine.checkpoint = 0 and L P N
    values fit in ``store_budget()``; zstore then says whether every Z^l fits
    beside them. Otherwise checkpoints every ``checkpoint_every`` layers, and
    zstore says whether a segment's Z^l fit in ZSTORE_BYTES.
    """
    L, item = config.depth, config.dtype.itemsize
    copies = _lanes_for(path, points)
    if config.checkpoint == 0 and L > 1:
        budget = store_budget()
        keep = L * points * width * item
        if keep <= budget:
            zbytes = copies * L * width * width * item
            return L, True, keep + zbytes <= budget
    every = config.checkpoint_every
    zstore = every > 1 and copies * every * width * width * item <= ZSTORE_BYTES
    return every, False, zstore


def _lanes_for(path, points):
    """Weight buffers a unit holds: one per lane on the fused path, one on the GEMM path."""
    return max(1, min(_lanes(), points)) if path == "fused" else 1


def choose_path(config, width):
    """'gemm' or 'fused' for this width (engine.path forces either)."""
    if config.path in ("gemm", "fused"):
        return config.path
    return "fused" if width <= FUSED_MAX_WIDTH else "gemm"


# ---------------------------------------------------------------- one work unit


class _Unit:
    """One (width, sample): every array the kernels use, allocated once."""

    def __init__(self, config, width, sample, path=None):
        self.config, self.width, self.sample = config, width, sample
        self.path = path or choose_path(config, width)
        grid = base.grid(config)
        names, codes = _activation_codes(grid)
        self.k = k = kernels(names)
        P, N, dt = grid.points, width, config.dtype
        self.P, self.N, self.dt = P, N, dt
        self.L = L = config.depth
        self.jvp = "jvp" in config.modes
        self.vjp = "vjp" in config.modes
        pf = np.zeros((k.N_F, P))
        pf[k.F_SCALE] = np.sqrt(grid.sigma_w2 / N).astype(dt).astype(np.float64)
        pf[k.F_BAMP] = np.sqrt(grid.sigma_b2)
        pi = np.zeros((k.N_I, P), dtype=np.int64)
        pi[k.I_CODE] = codes
        for act, param, cols in grid.groups:
            pf[k.F_PARAM, cols] = dt.type(param)
            pi[k.I_HOMOG, cols] = int(act.homogeneous)
        self.pf, self.pi = pf, pi
        self.rec = base.record_index(config)
        # Result planes (log_q, corr, tangent, gradient); the unused one is never
        # touched, so it costs no resident memory.
        self.res = np.empty((4, P, config.layers.size))
        for plane, used in (
            (k.R_LOGQ, True),
            (k.R_CORR, True),
            (k.R_TAN, self.jvp),
            (k.R_GRAD, self.vjp),
        ):
            if used:
                self.res[plane] = np.nan
        self.limit = base.divergence_limit(dt)
        self.has_bias = bool(np.any(grid.sigma_b2 > 0))
        self.k0, self.k1 = rng.seed_key(config.seed)
        self.usample = np.uint64(sample)
        self.lanes = _lanes()
        if self.path == "fused":
            self.lanes = _lanes_for("fused", P)
        self.wbuf, self.obuf = _scratch(k, self.lanes)
        self.x1, self.x2, self.v0 = base.inputs(config, N, sample)
        rows = 3 if self.jvp else 2
        self.A = np.zeros((rows * P, N), dtype=dt)
        self.H = np.zeros((rows * P, N), dtype=dt)
        # Weights: one buffer per lane on the fused path, one shared on the GEMM path;
        # bias noise: per lane, or double-buffered (this layer's and the next's).
        self.every, self.full, self.zstore = 0, False, False
        if self.vjp:
            self.every, self.full, self.zstore = vjp_plan(config, N, P, self.path)
        copies = self.lanes if self.path == "fused" else 1
        slots = self.every if self.zstore else 1
        self.Zs = np.zeros((copies, slots, N, N), dtype=dt)
        self.xis = np.zeros((max(2, self.lanes), N))
        if self.vjp:
            ncp = max(1, (L - 1) // self.every)
            self.cp = np.empty((ncp, P, N), dtype=dt)
            self.cp_ls = np.zeros((ncp, P))
            self.G = np.empty((P, N), dtype=dt)
            self.U = np.zeros((P, N), dtype=dt)
            self.D = np.zeros((self.every, P, N), dtype=dt)
        else:
            self.cp = np.empty((1, 1, 1), dtype=dt)
            self.cp_ls = np.zeros((1, 1))
            self.G = self.U = np.empty((1, 1), dtype=dt)
            self.D = np.empty((1, 1, 1), dtype=dt)
        self.x1dt = self.x1.astype(dt)
        self.ctl = np.zeros(k.N_C, dtype=np.int64)
        self.ctl[k.C_LANES] = self.lanes
        self.ctl[k.C_DEPTH] = L
        self.ctl[k.C_EVERY] = self.every
        self.ctl[k.C_HAS_BIAS] = self.has_bias
        self.ctl[k.C_ZSTORE] = self.zstore
        self.ctl[k.C_FULL] = self.full
        self.keys = np.array([sample, self.k0, self.k1], dtype=np.uint64)

    def _op(self, op, layer=0, kind=0, j=0, r=-1, ci=-1, nxt=0, nxt_bias=0, slot=0):
        k, ctl = self.k, self.ctl
        ctl[k.C_ZSLOT] = slot
        ctl[k.C_OP] = op
        ctl[k.C_LAYER] = layer
        ctl[k.C_KIND] = kind
        ctl[k.C_J] = j
        ctl[k.C_R] = r
        ctl[k.C_CI] = ci
        ctl[k.C_NXT] = nxt
        ctl[k.C_NXT_BIAS] = nxt_bias
        k.run(
            ctl,
            self.keys,
            self.limit,
            self.H,
            self.A,
            self.G,
            self.U,
            self.D,
            self.Zs,
            self.xis,
            self.x1dt,
            self.cp,
            self.cp_ls,
            self.pf,
            self.pi,
            self.res,
            self.rec,
            self.wbuf,
            self.obuf,
        )

    def _matmul(self, a, b, out):
        gemm.matmul(a, b, out, self.lanes)

    # -- forward

    def forward(self):
        k, P, dt = self.k, self.P, self.dt
        A, H = self.A, self.H
        A[:P] = self.x1dt
        A[P : 2 * P] = self.x2.astype(dt)
        if self.jvp:
            A[2 * P :] = (self.v0 / np.linalg.norm(self.v0)).astype(dt)
        kind = k.KIND_JVP if self.jvp else k.KIND_FWD
        if self.path == "fused":
            self._op(k.OP_FUSED_FORWARD, kind=kind)
            return
        L, every, rec = self.L, self.every, self.rec
        keep_all = self.full and self.zstore  # Z^l into slot l - 1, kept for the backward pass
        keep = k.KIND_JVP_KEEP if self.jvp else k.KIND_FWD_KEEP
        self._op(k.OP_PREFETCH, nxt=1, nxt_bias=self.has_bias)
        for layer in range(1, L + 1):
            self._matmul(A, self.Zs[0, layer - 1 if keep_all else 0].T, H)
            ci = layer // every - 1 if every and layer % every == 0 and layer < L else -1
            nxt = layer + 1 if layer < L else 0
            self._op(
                k.OP_FORWARD,
                layer,
                keep if self.full and layer < L else kind,
                j=layer,
                r=rec[layer],
                ci=ci,
                nxt=nxt,
                nxt_bias=self.has_bias,
                slot=layer if keep_all and nxt else 0,
            )

    # -- backward

    def _backward_ops(self):
        """Execution order of the backward pass: per segment, last first, the
        restart from its checkpoint, the recomputed layers, the backward steps.
        Each entry: (op, layer or segment, segment start, weight slot, whether
        Z^layer must be generated for it (else it is still in its slot)).
        Keeping every layer (``full``): the backward steps alone; Z^L is still
        in slot 0 after the forward pass, or every Z^l in slot l - 1."""
        L, every, store = self.L, self.every, self.zstore
        if self.full:
            return [
                ("bwd", layer, 0, layer - 1 if store else 0, not store and layer < L)
                for layer in range(L, 1, -1)
            ]
        ops = []
        for seg in range((L - 1) // every, -1, -1):
            start = seg * every
            stop = min(start + every, L)
            ops.append(("restart", seg, start, 0, False))
            for layer in range(start + 1, stop):
                ops.append(("rec", layer, start, layer - start - 1 if store else 0, True))
            for layer in range(stop, max(start, 1), -1):
                slot = layer - start - 1 if store else 0
                ops.append(("bwd", layer, start, slot, layer == stop or not store))
        return ops

    def backward(self):
        k, P, N, dt, L = self.k, self.P, self.N, self.dt, self.L
        dead = self.pi[k.I_DEAD] != 0
        gamma = base.output_direction(self.config, N, self.sample)
        G = self.G
        G[:] = (gamma / np.linalg.norm(gamma)).astype(dt)
        G[dead] = 0
        r = self.rec[L]
        if r >= 0:
            self.res[k.R_GRAD, :, r] = np.where(dead, np.nan, 0.0)
        if self.path == "fused":
            self._op(k.OP_FUSED_BACKWARD)
            return
        A1, H1, U, rec = self.A[:P], self.H[:P], self.U, self.rec
        ops = self._backward_ops()
        layered = [i for i, op in enumerate(ops) if op[0] != "restart"]
        following = dict(zip(layered, [*layered[1:], None][: len(layered)], strict=True))

        def prefetch_for(j):
            """(nxt, nxt_bias, slot) that generates what layered op j needs (nxt 0: nothing)."""
            if j is None or not ops[j][4]:
                return 0, 0, 0
            op, layer, _, slot, _ = ops[j]
            return layer, int(self.has_bias and op == "rec"), slot

        if layered:
            nxt, nxt_bias, slot = prefetch_for(layered[0])
            if nxt:
                self._op(k.OP_PREFETCH, nxt=nxt, nxt_bias=nxt_bias, slot=slot)
        for i, (op, arg, start, slot, _) in enumerate(ops):
            if op == "restart":
                self._op(k.OP_RESTART, ci=arg - 1)
                continue
            Z = self.Zs[0, slot]
            nxt, nxt_bias, nslot = prefetch_for(following[i])
            if op == "rec":
                self._matmul(A1, Z.T, H1)
                self._op(k.OP_RECOMPUTE, arg, j=arg - start, nxt=nxt, nxt_bias=nxt_bias, slot=nslot)
            else:
                self._matmul(G, Z, U)
                self._op(
                    k.OP_BACKWARD,
                    arg,
                    j=arg - 1 - start,
                    r=rec[arg - 1],
                    nxt=nxt,
                    nxt_bias=nxt_bias,
                    slot=nslot,
                )

    def results(self):
        k = self.k
        out = {
            "log_q": self.res[k.R_LOGQ],
            "corr": self.res[k.R_CORR],
            "diverged": self.pi[k.I_DIVERGED].astype(np.int32),
        }
        if self.jvp:
            out["log_tangent_norm"] = self.res[k.R_TAN]
        if self.vjp:
            out["log_grad_norm"] = self.res[k.R_GRAD]
        return base.shape_results(self.config, out)


@gemm.deterministic
def run_unit(config, width, sample, path=None):
    """Run one (width, sample) for every grid point; arrays shaped (A, W, B[, R]).

    The MLP runs in this module's fused kernels; the other architectures run
    their model's NumPy step (engines.generic) with BLAS GEMMs and weights from
    the parallel generator, bit-identical to the oracle's.
    """
    if NAME not in config.arch.fast_paths:
        from . import generic, numba_normals

        arrays = generic.HostArrays(numba_normals.normal_matrix, store_budget)
        return generic.run_unit(config, width, sample, arrays)
    unit = _Unit(config, width, sample, path=path)
    unit.forward()
    if unit.vjp:
        unit.backward()
    return unit.results()
