"""The Numba CPU engine: BLAS GEMMs with fused Numba epilogues, or one fused kernel.

Same numbers as the NumPy oracle (``numpy_ref``), same result arrays, faster:

* **GEMM path** (large widths). Per layer: one BLAS GEMM ``H = A @ Z.T``
  over every batched column (h1, h2 and tangents of every grid point; states
  are rows of C-order (columns, N) arrays, so nothing is copied; its rows
  are split over Numba's threads, one single-threaded OpenBLAS call per
  block, which stays fast on a busy machine: see ``gemm`` and
  ``numba_gemm``), then one parallel Numba call that does everything else
  in one pass per point (scale, bias, norms, divergence, renormalisation,
  recording, phi and phi' written into the next GEMM input) and, on the
  same threads, generates the next layer's Z^{s,l} (Philox, bit-identical
  to ``base.weights``) into the reused (N, N) buffer. Nothing is allocated
  per layer.
* **Fused path** (small widths, where a BLAS call and a thread-pool wake-up
  per layer cost more than the arithmetic): one Numba call runs all layers;
  each thread takes its share of the grid points through every layer,
  generating each Z itself into a small buffer (the same Z for all: common
  random numbers) and doing the products itself, blocks of points at a time
  (``numba_matvec``: register-blocked FMA chains, Z read once per six state
  rows; each output's bits independent of the blocking and the threads).
  ``engine.path = "auto"`` picks it for ``width <= FUSED_MAX_WIDTH`` (the
  crossover measured by ``scripts/bench_cpu.py``); ``"gemm"`` or ``"fused"``
  forces either.
* **VJP**, in the order of ``schedule``'s operations (lowered to
  ``numba_types.STEP`` rows; the fused kernel reads the same rows): where
  phi'(h1) of every layer fits in the memory budget
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

The kernels live in ``numba_epilogue.py`` and ``numba_dispatch.py`` (with
``numba_normals``, ``numba_matvec`` and ``numba_types``); this module writes a
copy of the first two, specialised for the registered activations, into a
cache directory (see ``kernels``) and imports that,
so that phi and phi' come from the registry and compiled kernels are cached
between runs (``$VXSIM_CACHE_DIR``, else ``$XDG_CACHE_HOME/vxsim``, else
``~/.cache/vxsim``).
"""

import dataclasses
import hashlib
import importlib.util
import os
import re
import sys
import tempfile
import threading
from pathlib import Path

import numpy as np

from .. import activations, numba_optional, progress, rng
from . import base, gemm, layout, numba_gemm, schedule, workspace
from .numba_types import (
    OP_BACKWARD,
    OP_FORWARD,
    OP_PREFETCH,
    OP_RECOMPUTE,
    OP_RESTART,
    STEP,
    Buffers,
)

NAME = "numba"

# Numba's OpenMP workers and OpenBLAS's workers take turns every layer (GEMM,
# then epilogue). GNU OpenMP's default is to spin after a parallel region,
# which on a machine with as many threads as cores starves the BLAS threads:
# measured 12 ms instead of 0.7 ms per layer at width 256 on 2 cores. Waiting
# passively costs nothing measurable here. libgomp reads this when Numba
# starts its thread pool (the first parallel kernel call), so set it now
# unless the user chose otherwise.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# But not at once: a unit's parallel calls follow each other within tens of
# microseconds (the GEMM's row blocks, numba_gemm, then the epilogue), and waking
# a sleeping thread costs ~60-70 us in this VM. Spinning ~0.1 ms first (libgomp's
# GOMP_SPINCOUNT overrides PASSIVE's zero) keeps them awake between calls and asleep
# between units. The BLAS inside a unit runs on these threads or on one thread (or,
# where numba_gemm cannot call NumPy's BLAS, on gemm.matmul's Python threads, which
# then share the cores with ~0.1 ms of spinning after each region). Measured
# 2026-12-04 on 2 cores (Zen 5), 10000 against unset, alternating: MLP GEMM path
# at width 256 JVP 0.70-0.71 -> 0.81 of the matmul, VJP 0.59-0.60 -> 0.73-0.74;
# residual net at width 128 0.24 -> 0.15-0.17 ms a step (VJP); Elman at 512
# 0.87 -> 0.56.
os.environ.setdefault("GOMP_SPINCOUNT", "10000")
# OpenBLAS's workers spin the same way after each GEMM (2^28 cycles), taking
# the cores from the epilogue: at width 1024 the JVP layer takes 21.8 ms with
# OpenBLAS's default and 17.2 ms with OPENBLAS_THREAD_TIMEOUT=4. OpenBLAS reads
# that variable when NumPy loads it, before this module is imported, so it
# must be set before NumPy is imported: vxsim/__init__.py sets it by default.

# Widths up to this run on the fused path when engine.path = "auto": the
# crossover measured by scripts/bench_cpu.py on 2 cores (AMD EPYC Zen 3, AVX2,
# OpenBLAS 0.3.31, 342 grid points). Five runs on 2026-12-04 put it at 192, 256,
# 256, 256 and 192 (ms per layer gemm/fused at 192: jvp 1.162/0.739, vjp 1.167/0.913
# at 15:25; at 256 a tie, jvp 1.393/1.380, vjp 1.716/1.574): 192 is the largest
# width at which the fused path won clearly in all five. The choice decides which bits
# a width gets, so ``numerics()`` names it and files are never resumed or merged
# across a change of it.
FUSED_MAX_WIDTH = 192

# The revision of the kernels' own arithmetic (files record it in ``numerics``):
# raise it with any change that alters a bit of a result (scripts/bitcheck.py
# tells), so that resume and merge never mix two. 2: the float32 tanh in float32
# lanes (activations.tanh_f32), 2026-12-04.
ARITHMETIC = 2

# The fused path's draws of one run of steps (``_shared_draws``) go to at most this
# many bytes of ring slots (2 to RING_MAX of them). Each run costs two parallel calls,
# ~0.1 ms each here (waking passive OpenMP threads), so runs are long; their Z^l stay
# in L3. Measured on a 16-core Xeon (2026-12-04, widths 64-192, 342 points): 1 MiB
# (at most 32 slots) was 1-6 % slower than 4 MiB (256) on 2 threads and 6-21 % on
# 16; 16 MiB (1024) was within noise of 4 MiB.
RING_BYTES = 4 * 2**20
RING_MAX = 256

# VJP keeps every layer's phi'(h1) (and every Z^l) instead of recomputing
# segments from checkpoints when that fits in this many bytes; None: the
# default, schedule.store_budget of the available memory, at most STORE_BYTES_MAX.
STORE_BYTES = None
STORE_BYTES_MAX = 2 * 2**30

_HERE = Path(__file__).parent
_EPILOGUE = _HERE / "numba_epilogue.py"
_DISPATCH = _HERE / "numba_dispatch.py"
_BEGIN_ACT = "# BEGIN ACTIVATION linear\n"
_END_ACT = "# END ACTIVATION\n"
_BEGIN_DISPATCH = "# BEGIN DISPATCH\n"
_END_DISPATCH = "# END DISPATCH\n"
# numba_dispatch.py's import of the epilogues (linear only, as the file stands),
# dropped from the generated module, which holds their specialised copies
_EPILOGUE_IMPORT = re.compile(r"^from vxsim\.engines\.numba_epilogue import \([^)]*\)\n", re.M)
_DISPATCH_ARGS = "kind, h1, h2, t, d1, d2, dt, a1, a2, at, dd, a"

_lock = threading.Lock()
_modules = {}


def numerics():
    """What decides the bits: the BLAS kernel (the fused kernels are IEEE-exact loops),
    the kernels' own arithmetic (``ARITHMETIC``) and which widths ``engine.path =
    "auto"`` sends to the fused kernels (``path_widths``)."""
    return f"{gemm.signature()}; kernel arithmetic {ARITHMETIC}; {path_widths()}"


def path_widths():
    """The widths up to which ``auto`` takes each architecture's fused path, as a line:
    a change of them changes which bits a width gets."""
    from ..models import mlp
    from .numba_rnn import RECURRENCES

    most = {mlp.ARCHITECTURE.name: FUSED_MAX_WIDTH}
    most |= {name: r.fused_max_width for name, r in RECURRENCES.items()}
    return "fused path up to width " + ", ".join(f"{k} {v}" for k, v in sorted(most.items()))


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
    kernels = ("numba_types", "numba_normals", "numba_matvec", "numba_epilogue", "numba_dispatch")
    return [_HERE / f"{name}.py" for name in kernels] + [
        Path(rng.__file__),
        Path(activations.__file__),
        Path(numba_optional.__file__),
        Path(layout.__file__),
    ]


def generate_source(names):
    """The kernel module's text for these activation names (codes 0, 1, ... in this order):
    numba_epilogue.py with its activation block repeated per activation and the
    dispatcher rewritten, then numba_dispatch.py less its import of numba_epilogue."""
    text = _EPILOGUE.read_text()
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
        "# Generated by vxsim.engines.numba_cpu from numba_epilogue.py and numba_dispatch.py\n"
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
        + "\n\n"
        + _without_epilogue_import(_DISPATCH.read_text())
    )


def _without_epilogue_import(text):
    """numba_dispatch.py's text less its import of numba_epilogue (exactly one)."""
    text, count = _EPILOGUE_IMPORT.subn("", text)
    if count != 1:
        raise ValueError("numba_dispatch.py must import numba_epilogue once, as one statement")
    return text


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
        if not any(path.parent.glob(f"__pycache__/{modname}*.nbi")):
            progress.notice(
                "compiling the numba kernels (once per machine and vxsim version; "
                "about a minute on 2 cores)"
            )
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


def weights(config, width, sample, layer, dtype=None):
    """Z^{s,l} and xi^{s,l} as the engine's kernel generates them (compare with
    base.weights and base.bias)."""
    config = _with_precision(config, dtype)
    unit = _Unit(config, width, sample, path="gemm")
    unit._prefetch(layer, 1, 0)
    return unit.Zs[0, 0].copy(), unit.xis[layer % 2].copy()


def _with_precision(config, dtype):
    """The config, or a copy of it in another precision."""
    if dtype is None or np.dtype(dtype) == config.dtype:
        return config
    raw = {**config.raw, "measure": {**config.raw["measure"], "precision": np.dtype(dtype).name}}
    return dataclasses.replace(config, precision=np.dtype(dtype).name, raw=raw)


def store_budget(reusable=0):
    """Bytes VJP may spend on keeping every layer (see STORE_BYTES); ``reusable``: bytes
    the unit's workspace already holds (counted as available: the unit writes over them)."""
    available = base.mem_available()
    if available is not None:
        available += reusable
    return schedule.store_budget(available, STORE_BYTES_MAX, STORE_BYTES)


def vjp_plan(config, width, points, path, reusable=0):
    """The unit's schedule.Plan: phi'(h1) of every layer (P N values each) kept by the
    forward pass when they fit in ``store_budget()`` (``every`` = L, nothing recomputed),
    every Z^l too when they also fit; else checkpoints every ``checkpoint_every`` layers."""
    item = config.dtype.itemsize
    layer = schedule.LayerBytes(state=points * width * item, weights=width * width * item)
    budget = store_budget(reusable) if config.checkpoint == 0 else 0
    return schedule.vjp_plan(config, layer, budget)


def choose_path(config, width):
    """'gemm' or 'fused' for this width (engine.path forces either)."""
    if config.path in ("gemm", "fused"):
        return config.path
    return "fused" if width <= FUSED_MAX_WIDTH else "gemm"


# ---------------------------------------------------------------- lowering the schedule


def _steps(ops, kind, keep_kind, has_bias):
    """schedule ops -> STEP rows: each op's D index, epilogue kind, draws, and (GEMM
    path) the prefetch of what the next op needs, if it draws (a Restart draws nothing
    and passes nothing on; the next op after the last: nothing). Built on plain lists
    (field access on structured rows costs ~5 us each: ~10 ms a 1,000-layer unit)."""
    rows = []  # STEP's fields up to "draw" and "bias"; the nxt fields are added below
    for op in ops:
        if isinstance(op, schedule.Restart):
            rows.append((OP_RESTART, 0, 0, 0, 0, op.checkpoint, 0, 0, 0))
        elif isinstance(op, schedule.Forward):
            k = keep_kind if op.keep else kind
            rows.append((OP_FORWARD, op.layer, k, op.layer, op.record, op.checkpoint, op.slot,
                         1, has_bias))  # fmt: skip
        elif isinstance(op, schedule.Recompute):
            rows.append((OP_RECOMPUTE, op.layer, 0, op.layer - op.start, -1, -1, op.slot,
                         1, has_bias))  # fmt: skip
        else:
            rows.append((OP_BACKWARD, op.layer, 0, op.layer - 1 - op.start, op.record, -1,
                         op.slot, int(op.draw), 0))  # fmt: skip
    nxt = [(0, 0, 0, 0)] * len(rows)
    for i in range(len(rows) - 1):
        if rows[i][0] == OP_RESTART:
            continue
        j = i + 2 if rows[i + 1][0] == OP_RESTART else i + 1
        if j < len(rows) and rows[j][7]:  # the next op with a GEMM draws
            layer, slot, bias = rows[j][1], rows[j][6], rows[j][8]
            nxt[i] = (layer, bias, slot, layer % 2)
    return np.array([r + n for r, n in zip(rows, nxt, strict=True)], dtype=STEP)


def _prefetch_rows(draws):
    """PREFETCH rows drawing Z^layer into ``slot`` (and xi^layer into ``xis[xi]`` where
    ``bias``) for each (layer, bias, slot, xi) of ``draws``."""
    rows = np.zeros(len(draws), dtype=STEP)
    rows["op"] = OP_PREFETCH
    if draws:
        fields = ("nxt", "nxt_bias", "nxt_slot", "nxt_xi")
        for name, column in zip(fields, np.array(draws, dtype=np.int64).T, strict=True):
            rows[name] = column
    return rows


def _kept_draws(steps):
    """Indices of the drawing steps whose Z^l a later step reads without drawing it (a
    kept Z^l, schedule.Plan.keep_weights, or Z^L after the forward pass)."""
    kept, last = set(), {}
    rows = zip(steps["op"].tolist(), steps["draw"].tolist(), steps["slot"].tolist(), strict=True)
    for i, (op, draw, slot) in enumerate(rows):
        if op == OP_RESTART:
            continue
        if draw:
            last[slot] = i
        else:
            kept.add(last[slot])
    return kept


def _shared_draws(steps, kept, slots, ring):
    """The fused path's pass in runs, each run's Z^l (and xi^l) drawn by every lane
    together before it: [(prefetch rows, first, last)] and the steps, which then read
    their slot and draw nothing.

    A ``kept`` draw (``_kept_draws``: indices into ``steps``) keeps the schedule's slot
    (< ``slots``); every other one takes the next of ``ring`` slots after those. A run
    draws at most ``ring`` Z^l (RING_BYTES: they are still in cache when used) and
    ends before a draw into a kept slot it has already used, so no draw overwrites
    what a step of its run reads. (Plain lists: a unit of 1,000 layers is lowered in
    a few ms, where field access on the STEP records took ~50.)
    """
    op, layer, bias = (steps[name].tolist() for name in ("op", "layer", "bias"))
    slot, draw = steps["slot"].tolist(), steps["draw"].tolist()
    runs, draws, used, first, in_ring = [], [], set(), 0, 0
    for i in range(len(op)):
        if op[i] == OP_RESTART:
            continue
        if draw[i]:
            target = slot[i] if i in kept else slots + in_ring
            if target in used or len(draws) == ring:
                runs.append((_prefetch_rows(draws), first, i))
                draws, used, first, in_ring = [], set(), i, 0
                target = slot[i] if i in kept else slots
            in_ring += i not in kept
            draws.append((layer[i], bias[i], target, target))  # xi^l beside Z^l's slot
            slot[i], draw[i] = target, 0
        used.add(slot[i])
    runs.append((_prefetch_rows(draws), first, len(op)))
    steps = steps.copy()
    steps["slot"], steps["draw"] = slot, draw
    return runs, steps


def _shared_passes(passes, slots, ring):
    """Each pass through ``_shared_draws``, its kept draws found over all passes together
    (the backward pass may read the forward pass's last Z^l)."""
    kept = _kept_draws(np.concatenate(passes))
    out, at = [], 0
    for steps in passes:
        out.append(_shared_draws(steps, {i - at for i in kept if i >= at}, slots, ring))
        at += len(steps)
    return out


def ring_slots(width, dtype):
    """How many ring slots the fused path's draws take (RING_BYTES of them, 2 to RING_MAX)."""
    return int(np.clip(RING_BYTES // (width * width * np.dtype(dtype).itemsize), 2, RING_MAX))


# ---------------------------------------------------------------- one work unit

# Compiled entry points of ``run`` by kernel module and argument kinds: typing the
# Buffers with numba.typeof costs ~1 ms per unit, a fixed cost small widths feel.
_entries = {}


def _array_kinds(values):
    """What Numba's type of each array depends on here (dtype, ndim, layout, writable)."""
    return tuple(
        (v.dtype.str, v.ndim, v.flags.c_contiguous, v.flags.aligned, v.flags.writeable)
        if isinstance(v, np.ndarray)
        else type(v).__name__
        for v in values
    )


class _Unit:
    """One (width, sample): every array the kernels use, allocated once; the large ones
    (states, weights, the VJP's tape) in ``ws``, a ``workspace.Workspace`` (default: a
    new one), uninitialised: each is written before it is read."""

    def __init__(self, config, width, sample, path=None, ws=None):
        self.config, self.width, self.sample = config, width, sample
        self.path = path or choose_path(config, width)
        grid = base.grid(config)
        names, codes = _activation_codes(grid)
        self.k = kernels(names)
        P, N, dt = grid.points, width, config.dtype
        self.P, self.N, self.dt = P, N, dt
        self.L = L = config.depth
        self.jvp = "jvp" in config.modes
        self.vjp = "vjp" in config.modes
        pf = np.zeros((layout.N_F, P))
        pf[layout.F_SCALE] = np.sqrt(grid.sigma_w2 / N).astype(dt).astype(np.float64)
        pf[layout.F_BAMP] = np.sqrt(grid.sigma_b2)
        pi = np.zeros((layout.N_I, P), dtype=np.int64)
        pi[layout.I_CODE] = codes
        for act, param, cols in grid.groups:
            pf[layout.F_PARAM, cols] = dt.type(param)
            pi[layout.I_HOMOG, cols] = int(act.homogeneous)
        self.pf, self.pi = pf, pi
        self.rec = base.record_index(config)
        # Result planes (layout.RESULT_PLANES); one the modes do not produce is never
        # touched, so it costs no resident memory.
        self.res = np.empty((layout.N_R, P, config.layers.size))
        for plane, _ in layout.produced_planes(config):
            self.res[plane] = np.nan
        self.has_bias = bool(np.any(grid.sigma_b2 > 0))
        self.lanes = _lanes()
        if self.path == "fused":  # every lane takes points
            self.lanes = max(1, min(self.lanes, P))
        from .numba_normals import scratch

        self.wbuf, self.obuf = scratch(self.lanes)  # the generator's per-lane scratch
        self.x1, self.x2, self.v0 = base.inputs(config, N, sample, self._normals)
        ws = workspace.Workspace() if ws is None else ws
        reusable = ws.nbytes  # what the previous unit left, before this one takes any
        rows = 3 if self.jvp else 2
        self.A = ws.empty("A", (rows * P, N), dt)
        self.H = ws.empty("H", (rows * P, N), dt)
        self.plan = vjp_plan(config, N, P, self.path, reusable) if self.vjp else schedule.NO_VJP
        self.every, self.full, self.zstore = self.plan[:3]
        self.passes = self._lower()
        self.steps_done = 0
        self.steps_total = sum(len(steps) for steps in self.passes)
        # Weights and bias noise: the schedule's slots; on the fused path also the ring
        # slots of its shared draws, a noise row per slot; on the GEMM path the noise
        # double-buffered (this layer's and the next's).
        slots = self.every if self.zstore else 1
        ring = ring_slots(N, dt) if self.path == "fused" else 0
        self.Zs = ws.empty("Zs", (1, slots + ring, N, N), dt)
        self.xis = np.zeros((slots + ring if ring else 2, N))
        if ring:
            self.passes = _shared_passes(self.passes, slots, ring)
        if self.vjp:
            ncp = schedule.checkpoint_count(L, self.every)
            self.cp = ws.empty("cp", (ncp, P, N), dt)
            self.cp_ls = np.zeros((ncp, P))
            self.G = ws.empty("G", (P, N), dt)
            self.U = ws.empty("U", (P, N), dt)
            self.D = ws.empty("D", (self.every, P, N), dt)
        else:
            self.cp = np.empty((1, 1, 1), dtype=dt)
            self.cp_ls = np.zeros((1, 1))
            self.G = self.U = np.empty((1, 1), dtype=dt)
            self.D = np.empty((1, 1, 1), dtype=dt)
        self.x1dt = self.x1.astype(dt)
        k0, k1 = rng.seed_key(config.seed)
        self.buffers = Buffers(
            H=self.H, A=self.A, G=self.G, U=self.U, D=self.D, Zs=self.Zs, xis=self.xis,
            x1=self.x1dt, cp=self.cp, cp_ls=self.cp_ls, pf=pf, pi=pi, res=self.res,
            wbuf=self.wbuf, obuf=self.obuf, keys=np.array([sample, k0, k1], dtype=np.uint64),
            limit=base.divergence_limit(dt),
        )  # fmt: skip
        self._run = None

    def _normals(self, seed, sample, layer, stream, count):
        """rng.normals(seed, sample, layer, stream, count), the same bits, on this thread
        (the kernels' ``stream_normals``): ~0.3 ms less per unit than rng.normals' NumPy."""
        k0, k1 = rng.seed_key(seed)
        out = np.empty(count)
        keys = (np.uint64(v) for v in (layer, sample, stream, k0, k1))
        self.k.stream_normals(out, *keys, self.wbuf[0], self.obuf[0])
        return out

    def _call(self, steps, first, last, fused):
        """k.run(buffers, steps, first, last, fused), compiled for these types once per unit
        (Numba's per-call typing of a NamedTuple of arrays costs more than a layer's epilogue
        at small widths; ``Dispatcher.compile`` returns the compiled entry point)."""
        if self._run is None:
            key = (self.k.__name__, *_array_kinds(self.buffers), *_array_kinds((steps,)))
            self._run = _entries.get(key)
            if self._run is None:
                import numba

                args = (self.buffers, steps, first, last, fused)
                self._run = _entries[key] = self.k.run.compile(tuple(numba.typeof(a) for a in args))
        self._run(self.buffers, steps, first, last, fused)

    def _lower(self):
        """The forward and the backward pass's STEP rows (see ``_steps``)."""
        k = self.k
        kind = k.KIND_JVP if self.jvp else k.KIND_FWD
        keep = k.KIND_JVP_KEEP if self.jvp else k.KIND_FWD_KEEP
        forward = schedule.forward_ops(self.L, self.plan, self.rec)
        forward = _steps(forward, kind, keep, self.has_bias)
        backward = schedule.backward_ops(self.L, self.plan, self.rec) if self.vjp else []
        return [forward, _steps(backward, 0, 0, self.has_bias)]

    def _prefetch(self, nxt, nxt_bias, slot):
        """Z^nxt into slot ``slot`` (and xi^nxt into ``xis[nxt % 2]``), before the first
        step of a GEMM pass."""
        row = _prefetch_rows([(nxt, nxt_bias, slot, nxt % 2)])
        self._call(row, np.int64(0), np.int64(1), False)

    def _matmul(self, a, b, out):
        numba_gemm.matmul(a, b, out, self.lanes)

    def _pass(self, steps):
        """Run a pass: per run of steps (fused path: ``_shared_draws``) a call drawing its
        Z^l and one taking the points through it, or per step its GEMM and epilogue call."""
        if self.path == "fused":
            runs, steps = steps
            for draws, first, last in runs:
                if len(draws):
                    self._call(draws, np.int64(0), np.int64(len(draws)), False)
                if last > first:
                    self._call(steps, np.int64(first), np.int64(last), True)
                self._progress(last - first)
            return
        drawn = steps[steps["op"] != OP_RESTART][:1]  # the first op with a GEMM
        if drawn.size and drawn[0]["draw"]:
            first = drawn[0]
            self._prefetch(first["layer"], first["bias"], first["slot"])
        P = self.P
        for i, s in enumerate(steps):
            op = s["op"]
            Z = self.Zs[0, s["slot"]]
            if op == OP_FORWARD:
                self._matmul(self.A, Z.T, self.H)
            elif op == OP_RECOMPUTE:
                self._matmul(self.A[:P], Z.T, self.H[:P])
            elif op == OP_BACKWARD:
                self._matmul(self.G, Z, self.U)
            self._call(steps, np.int64(i), np.int64(i + 1), False)
            self._progress(1)

    def _progress(self, steps):
        """Tell vxsim.progress that ``steps`` more of the unit's forward and backward
        steps are done (L forward, and the VJP's backward and recomputation steps)."""
        self.steps_done += steps
        progress.step(self.steps_done, self.steps_total)

    # -- forward

    def forward(self):
        P, dt = self.P, self.dt
        A = self.A
        A[:P] = self.x1dt
        A[P : 2 * P] = self.x2.astype(dt)
        if self.jvp:
            A[2 * P :] = (self.v0 / np.linalg.norm(self.v0)).astype(dt)
        self._pass(self.passes[0])

    # -- backward

    def backward(self):
        N, dt, L = self.N, self.dt, self.L
        dead = self.pi[layout.I_DEAD] != 0
        gamma = base.output_direction(self.config, N, self.sample, self._normals)
        G = self.G
        G[:] = (gamma / np.linalg.norm(gamma)).astype(dt)
        G[dead] = 0
        r = self.rec[L]
        if r >= 0:
            self.res[layout.R_GRAD, :, r] = np.where(dead, np.nan, 0.0)
        self._pass(self.passes[1])

    def results(self):
        return base.shape_results(self.config, layout.results(self.config, self.res, self.pi))


def spectrum_arrays(config):
    """Where engines.spectrum keeps a unit on this engine: NumPy, the parallel generator."""
    from . import generic, numba_normals

    return generic.HostArrays(numba_normals.normal_matrix, store_budget)


def graded_svd(b, U):
    """The Jacobian spectrum's graded SVD on all cores (numba_graded_svd)."""
    from .numba_graded_svd import log_singular_values

    return log_singular_values(b, U)


@gemm.deterministic
def run_unit(config, width, sample, path=None):
    """Run one (width, sample) for every grid point; arrays shaped (A, W, B[, R]).

    The MLP runs in this module's fused kernels; the other architectures run
    their model's NumPy step (engines.generic) with BLAS GEMMs and weights from
    the parallel generator, bit-identical to the oracle's.
    """
    if NAME not in config.arch.fast_paths or not config.gaussian_weights:  # laws: generic
        from . import generic, numba_normals

        arrays = generic.HostArrays(numba_normals.normal_matrix, store_budget)
        return generic.run_unit(config, width, sample, arrays)
    from ..models import mlp

    if config.arch is not mlp.ARCHITECTURE:  # the residual and recurrent nets' fused kernels
        from . import numba_rnn

        return numba_rnn.run_unit(config, width, sample, path)
    with workspace.borrowed() as ws:
        unit = _Unit(config, width, sample, path=path, ws=ws)
        unit.forward()
        if unit.vjp:
            unit.backward()
        return unit.results()
