"""The CUDA engine: CuPy arrays, cuBLAS GEMMs, and the hand-written kernels of ``kernels/``.

The same computation as the Numba engine (``numba_cpu``), laid out the same
way (states are rows of C-order ``(rows * P, N)`` arrays: point p's h1 in row
p, h2 in row P + p, its tangent in row 2P + p), on a GPU:

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
* **VJP**: checkpoints every ``checkpoint_every`` layers in the forward pass,
  then per segment, last first, a recomputation from its checkpoint with
  weights regenerated from the counter (phi' kept for the segment), and the
  backward steps ``g <- phi' * (s Z^T g)`` (GEMM ``U = G @ Z``).
* ``measure.precision = "tf32"``: float32 states whose GEMMs run on the
  tensor cores in TF32 (cuBLAS ``CUBLAS_COMPUTE_32F_FAST_TF32``), on the GEMM
  path only (the fused path's products stay float32).
* **The other architectures** (residual, rnn, gru, lstm) run their model's
  step as ``engines.generic`` drives it, on CuPy arrays (``DeviceArrays``):
  the same NumPy code as the oracle, dispatched to CuPy's elementwise kernels
  and cuBLAS, with the residual MLP's per-layer Z drawn on the device by
  ``vx_fill_weights``. Not fused: a few dozen kernel launches per layer.

The kernels are compiled at run time by NVRTC through ``cupy.RawModule``
(``--fmad=false``: no contraction, so the normals match the CPU bit for bit),
once per precision and process (CuPy caches the binary on disk).

How the work is launched is separate from where: ``_Unit`` takes a backend
with ``xp`` (the array module), ``launch``, ``matmul``, ``to_host`` and
``gemm_precision``. ``GpuBackend`` is CuPy on the GPU; the tests also run
this module unchanged on ``cuda_host.HostBackend``, the same kernels built
for the CPU with one thread per block (slow, but every line of this file and
of the kernels' arithmetic runs without a GPU).
"""

import contextlib
import math

import numpy as np

from .. import rng
from ..errors import VxsimError
from . import base, cuda_sources, gemm, layout

NAME = "cuda"

# Widths up to this run on the fused path when engine.path = "auto". Not yet
# measured on a GPU (scripts/gpu_check.py prints both paths at width 128):
# a guess from the work per layer, to be replaced by the measured crossover.
FUSED_MAX_WIDTH = 256
# Weights of one fused chunk of layers (generated together) take at most this.
FUSED_ZBUF_BYTES = 64 * 2**20
# The fused kernels keep 6 vectors of N reals in shared memory; CUDA grants
# 48 KiB per block without an opt-in, so widths are limited to this.
FUSED_SMEM_BYTES = 46 * 1024
# Threads per block of the per-point kernels (a multiple of 32; fewer for small N).
MAX_THREADS = 256
# The other architectures' VJP (engines.generic) keeps every layer instead of
# recomputing from checkpoints when that fits in min(this, a quarter of the free
# device memory).
GENERIC_STORE_BYTES_MAX = 8 * 2**30
# Threads per block and most blocks of the generator (grid-stride beyond).
FILL_THREADS = 256
FILL_MAX_BLOCKS = 65536


# ---------------------------------------------------------------- availability


def _import_cupy():
    import cupy

    return cupy


def unavailable_reason():
    """Why the engine cannot run here (None when it can)."""
    try:
        cupy = _import_cupy()
    except Exception as err:  # ImportError, or a broken CUDA install raising anything
        return f"cupy cannot be imported ({type(err).__name__}: {err}); pip install 'vxsim[gpu]'"
    try:
        if not cupy.cuda.is_available():
            return "no CUDA GPU is visible to CuPy"
    except Exception as err:
        return f"CUDA is not usable ({type(err).__name__}: {err})"
    return None


def numerics():
    """What decides the bits: the device and CuPy's cuBLAS (the fused kernels are exact)."""
    try:
        cupy = _import_cupy()
        blas = cupy.cuda.cublas.getVersion(cupy.cuda.device.get_cublas_handle())
        return f"{device_name()}, cupy {cupy.__version__}, cuBLAS {blas}"
    except Exception:
        return "cuda (no GPU visible)"


def available():
    """True where CuPy imports and sees a GPU; never raises."""
    try:
        return unavailable_reason() is None
    except Exception:
        return False


# ---------------------------------------------------------------- the GPU backend


def threads_for(width):
    """Threads per block of the per-point kernels: N rounded up to a warp, at most MAX_THREADS."""
    return min(MAX_THREADS, 32 * max(1, math.ceil(width / 32)))


class GpuBackend:
    """CuPy arrays, cuBLAS through cupy.matmul, the kernels through one RawModule."""

    def __init__(self, precision):
        if not available():
            raise VxsimError(f"backend 'cuda' is not available: {unavailable_reason()}")
        self.cupy = _import_cupy()
        self.xp = self.cupy
        self.precision = precision
        self.real = np.dtype("float64" if precision == "float64" else "float32")
        self.text = cuda_sources.program(precision)
        self.signatures = cuda_sources.kernel_signatures(self.text)
        self.module = self.cupy.RawModule(code=self.text, options=cuda_sources.NVRTC_OPTIONS)
        self.functions = {}
        self.checked = set()

    def launch(self, name, grid, block, args, smem=0):
        """Launch kernel ``name`` on the current stream (asynchronous).

        The argument types are checked against the kernel's C signature on its
        first launch (CuPy passes NumPy scalars by their exact type, and a
        float64 array where a float* is expected would be read as garbage).
        """
        if name not in self.checked:
            cuda_sources.check_args(name, self.signatures[name], args, self.real)
            self.checked.add(name)
        fn = self.functions.get(name)
        if fn is None:
            fn = self.functions[name] = self.module.get_function(name)
        fn((int(grid),), (int(block),), tuple(args), shared_mem=int(smem))

    def matmul(self, a, b, out):
        self.cupy.matmul(a, b, out=out)

    def to_host(self, x):
        return self.cupy.asnumpy(x)

    @contextlib.contextmanager
    def gemm_precision(self, tf32):
        """float32 GEMMs on the tensor cores in TF32 inside the block (tf32=True)."""
        if not tf32:
            yield
            return
        core = self.cupy._core
        try:
            from cupy._core import _routines_linalg as linalg

            mode = linalg.COMPUTE_TYPE_TF32
            old = core.get_compute_type(np.float32)
        except (ImportError, AttributeError) as err:
            raise VxsimError(f"this CuPy cannot switch GEMMs to TF32 ({err})") from None
        core.set_compute_type(np.float32, mode)
        try:
            yield
        finally:
            core.set_compute_type(np.float32, old)

    def free_bytes(self):
        """Device memory free to this process: the driver's, plus CuPy's pool's cached blocks."""
        free, _total = self.cupy.cuda.Device().mem_info
        return int(free) + int(self.cupy.get_default_memory_pool().free_bytes())


_backends = {}


def gpu_backend(precision):
    """The GpuBackend of a precision (kernels compiled once per process; tf32 shares
    float32's: the kernels are the same, only the GEMMs differ)."""
    key = "float64" if precision == "float64" else "float32"
    backend = _backends.get(key)
    if backend is None:
        backend = _backends[key] = GpuBackend(key)
    return backend


# ---------------------------------------------------------------- paths and memory


def choose_path(config, width):
    """'gemm' or 'fused' for this width (engine.path forces either)."""
    if config.path in ("gemm", "fused"):
        return config.path
    return "fused" if width <= FUSED_MAX_WIDTH and fused_fits(config, width) else "gemm"


def fused_smem(width, itemsize, vectors):
    """Shared memory of a fused kernel's block: ``vectors`` vectors of ``width`` reals."""
    return vectors * width * itemsize


def fused_fits(config, width):
    return fused_smem(width, config.dtype.itemsize, 6) <= FUSED_SMEM_BYTES


def fused_chunk(config, width):
    """Layers per fused launch: as many weight matrices as fit in FUSED_ZBUF_BYTES."""
    per_layer = width * width * config.dtype.itemsize
    return max(1, min(config.depth, FUSED_ZBUF_BYTES // per_layer))


def estimate_device_bytes(config, width, path):
    """GPU memory of one unit's buffers, in bytes (what ``_Unit`` allocates)."""
    P = int(np.prod(config.grid_shape))
    item = config.dtype.itemsize
    rows = 3 if "jvp" in config.modes else 2
    total = 2 * rows * P * width * item  # A, H
    if path == "fused":
        k = fused_chunk(config, width)
        total += k * width * (width * item + 8)
    else:
        total += width * width * item + width * 8
    if "vjp" in config.modes:
        every = config.checkpoint_every
        total += max(1, (config.depth - 1) // every) * P * (width * item + 8)  # checkpoints
        total += every * P * width * item + 2 * P * width * item  # D, G, U
    total += 4 * P * config.layers.size * 8 + P * (8 * layout.N_F + 4 * layout.N_I)
    total += 4 * width * item + 4 * (config.depth + 1)  # inputs, output direction, record index
    return int(total)


def check_unit(config, width, path, free_bytes=None):
    """VxsimError (one line) when a unit of this width cannot run on this path or device."""
    if config.samples > 2**32:
        raise VxsimError("monte_carlo.samples must be <= 2**32 (a 32-bit Philox counter word)")
    if NAME not in config.arch.fast_paths:
        path = "generic"  # engine.path chooses between the MLP's kernels only
    if path == "fused" and not fused_fits(config, width):
        widest = FUSED_SMEM_BYTES // (6 * config.dtype.itemsize)
        raise VxsimError(
            f"engine.path = 'fused' on the cuda backend takes widths up to {widest} "
            f"in {config.precision}; got {width} (use path 'gemm' or 'auto')"
        )
    if free_bytes is not None:
        if path == "generic":
            need = base.estimate_unit_bytes(config, width)  # the same arrays as on the CPU
        else:
            need = estimate_device_bytes(config, width, path)
        free = free_bytes()
        if need > 0.9 * free:
            raise VxsimError(
                f"a work unit of width {width} needs about {need / 2**30:.1f} GiB of GPU memory "
                f"but only {free / 2**30:.1f} GiB is free; lower network.width, the grid or "
                f"(in vjp mode) set engine.checkpoint"
            )


def check_config(config):
    """Before a sweep writes anything: every width fits its path and the GPU's memory."""
    free = getattr(gpu_backend(config.precision), "free_bytes", None)
    for width in config.widths:
        check_unit(config, width, choose_path(config, width), free)


# ---------------------------------------------------------------- one work unit


def _i32(x):
    return np.int32(x)


class _Unit:
    """One (width, sample) on a backend: every buffer allocated once, on the device."""

    def __init__(self, config, width, sample, path=None, backend=None):
        self.config, self.width, self.sample = config, width, sample
        self.path = path or choose_path(config, width)
        self.be = be = backend or gpu_backend(config.precision)
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
        self.res = xp.full((4, P, self.R), np.nan)
        self.rec = base.record_index(config)
        self.rec_d = xp.asarray(self.rec.astype(np.int32))
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
        if self.path == "fused":
            self.chunk = fused_chunk(config, N)
            self.Zbuf = xp.zeros((self.chunk, N, N), dtype=dt)
            self.xibuf = xp.zeros((self.chunk, N))
        else:
            self.chunk = 1
            self.Zbuf = xp.zeros((N, N), dtype=dt)
            self.xibuf = xp.zeros((1, N))
        self.every = config.checkpoint_every if self.vjp else 0
        if self.vjp:
            ncp = max(1, (self.L - 1) // self.every)
            self.cp = xp.zeros((ncp, P, N), dtype=dt)
            self.cp_ls = xp.zeros((ncp, P))
            self.G = xp.zeros((P, N), dtype=dt)
            self.U = xp.zeros((P, N), dtype=dt)
            self.D = xp.zeros((self.every, P, N), dtype=dt)
            gamma = base.output_direction(config, N, sample)
            self.gamma = xp.asarray((gamma / np.linalg.norm(gamma)).astype(dt))
        else:
            self.cp = xp.zeros((1, 1, 1), dtype=dt)
            self.cp_ls = xp.zeros((1, 1))
            self.G = self.U = xp.zeros((1, 1), dtype=dt)
            self.D = xp.zeros((1, 1, 1), dtype=dt)

    # -- generation

    def _fill(self, layer0, nlayers, transpose, bias):
        """Z^{layer0 ..} into Zbuf (transposed for the fused forward), xi into xibuf."""
        N = self.N
        total = ((N * N + 3) // 4) * nlayers
        blocks = min(FILL_MAX_BLOCKS, max(1, math.ceil(total / FILL_THREADS)))
        self.be.launch(
            "vx_fill_weights",
            blocks,
            FILL_THREADS,
            (self.Zbuf, _i32(N), _i32(layer0), _i32(nlayers), _i32(transpose), *self.keys),
        )
        if bias and self.has_bias:
            total = ((N + 3) // 4) * nlayers
            blocks = min(FILL_MAX_BLOCKS, max(1, math.ceil(total / FILL_THREADS)))
            self.be.launch(
                "vx_fill_bias",
                blocks,
                FILL_THREADS,
                (self.xibuf, _i32(N), _i32(layer0), _i32(nlayers), *self.keys),
            )

    def _checkpoint_index(self, layer):
        every = self.every
        return layer // every - 1 if every and layer % every == 0 and layer < self.L else -1

    # -- forward

    def forward(self):
        P, A = self.P, self.A
        A[:P] = self.x1
        A[P : 2 * P] = self.x2
        if self.jvp:
            A[2 * P :] = self.v0
        kind = layout.KIND_JVP if self.jvp else layout.KIND_FWD
        if self.path == "fused":
            self._fused_forward(kind)
            return
        Z = self.Zbuf
        for layer in range(1, self.L + 1):
            self._fill(layer, 1, transpose=0, bias=True)
            self.be.matmul(A, Z.T, self.H)
            self.be.launch(
                "vx_forward",
                P,
                self.threads,
                (
                    self.H,
                    A,
                    self.xibuf,
                    self.pf,
                    self.pi,
                    self.res,
                    self.cp,
                    self.cp_ls,
                    _i32(P),
                    _i32(self.N),
                    _i32(self.R),
                    _i32(layer),
                    _i32(kind),
                    _i32(self.has_bias),
                    _i32(self.rec[layer]),
                    _i32(self._checkpoint_index(layer)),
                    self.limit,
                ),
            )

    def _fused_forward(self, kind):
        vectors = 6 if kind == layout.KIND_JVP else 4
        smem = fused_smem(self.N, self.dt.itemsize, vectors)
        for layer0 in range(1, self.L + 1, self.chunk):
            nl = min(self.chunk, self.L - layer0 + 1)
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
                    self.rec_d,
                    _i32(self.P),
                    _i32(self.N),
                    _i32(self.R),
                    _i32(layer0),
                    _i32(nl),
                    _i32(kind),
                    _i32(self.has_bias),
                    _i32(self.every),
                    _i32(self.L),
                    self.limit,
                ),
                smem=smem,
            )

    # -- backward

    def backward(self):
        P, N, L = self.P, self.N, self.L
        self.be.launch(
            "vx_grad_init",
            P,
            self.threads,
            (self.gamma, self.G, self.pf, self.pi, self.res, _i32(P), _i32(N), _i32(self.R),
             _i32(self.rec[L])),
        )  # fmt: skip
        for seg in range((L - 1) // self.every, -1, -1):
            start = seg * self.every
            stop = min(start + self.every, L)
            self._restart(seg - 1)
            if self.path == "fused":
                self._fused_segment(start, stop)
            else:
                self._gemm_segment(start, stop)

    def _restart(self, ci):
        self.be.launch(
            "vx_restart",
            self.P,
            self.threads,
            (self.x1, self.cp, self.cp_ls, self.A[: self.P], self.D, self.pf, self.pi,
             _i32(self.P), _i32(self.N), _i32(ci)),
        )  # fmt: skip

    def _gemm_segment(self, start, stop):
        P, N, Z = self.P, self.N, self.Zbuf
        A1, H1 = self.A[:P], self.H[:P]
        for layer in range(start + 1, stop):
            self._fill(layer, 1, transpose=0, bias=True)
            self.be.matmul(A1, Z.T, H1)
            self.be.launch(
                "vx_recompute",
                P,
                self.threads,
                (H1, A1, self.D, self.xibuf, self.pf, self.pi, _i32(P), _i32(N),
                 _i32(layer - start), _i32(self.has_bias)),
            )  # fmt: skip
        for layer in range(stop, max(start, 1), -1):
            self._fill(layer, 1, transpose=0, bias=False)
            self.be.matmul(self.G, Z, self.U)
            self.be.launch(
                "vx_backward",
                P,
                self.threads,
                (self.G, self.U, self.D, self.pf, self.pi, self.res, _i32(P), _i32(N),
                 _i32(self.R), _i32(layer - 1 - start), _i32(layer - 1),
                 _i32(self.rec[layer - 1])),
            )  # fmt: skip

    def _fused_segment(self, start, stop):
        P, N = self.P, self.N
        smem = fused_smem(N, self.dt.itemsize, 2)
        for layer0 in range(start + 1, stop, self.chunk):
            nl = min(self.chunk, stop - layer0)
            self._fill(layer0, nl, transpose=1, bias=True)
            self.be.launch(
                "vx_fused_recompute",
                P,
                self.threads,
                (self.Zbuf, self.xibuf, self.A[:P], self.D, self.pf, self.pi, _i32(P), _i32(N),
                 _i32(layer0), _i32(nl), _i32(start), _i32(self.has_bias)),
                smem=smem,
            )  # fmt: skip
        lowest = max(start, 1) + 1
        hi = stop
        while hi >= lowest:
            lo = max(lowest, hi - self.chunk + 1)
            self._fill(lo, hi - lo + 1, transpose=0, bias=False)
            self.be.launch(
                "vx_fused_backward",
                P,
                self.threads,
                (self.Zbuf, self.G, self.D, self.pf, self.pi, self.res, self.rec_d, _i32(P),
                 _i32(N), _i32(self.R), _i32(lo), _i32(hi), _i32(start)),
                smem=smem,
            )  # fmt: skip
            hi = lo - 1

    # -- all of it

    def run(self):
        with self.be.gemm_precision(self.tf32):
            self.forward()
            if self.vjp:
                self.backward()
        return self.results()

    def results(self):
        """The unit's arrays, copied to the host once (the only synchronisation)."""
        res = self.be.to_host(self.res)
        pi = self.be.to_host(self.pi)
        out = {
            "log_q": res[layout.R_LOGQ],
            "corr": res[layout.R_CORR],
            "diverged": pi[layout.I_DIVERGED].astype(np.int32),
        }
        if self.jvp:
            out["log_tangent_norm"] = res[layout.R_TAN]
        if self.vjp:
            out["log_grad_norm"] = res[layout.R_GRAD]
        return base.shape_results(self.config, out)


class DeviceArrays:
    """Where ``engines.generic`` keeps a unit on the GPU (every architecture but the MLP).

    CuPy arrays (``backend.xp``); the per-layer Z^l of stream WEIGHT (the
    residual MLP) drawn on the device by ``vx_fill_weights``, bit-identical to
    ``rng.normal_matrix``; the tied RNN matrices, drawn once per unit (the input
    matrices in float64), by the host's parallel generator and copied once; the
    vectors (biases, inputs x_t) from ``rng`` on the host, copied.
    """

    def __init__(self, backend):
        self.be = backend
        self.xp = backend.xp

    def asarray(self, x):
        return self.xp.asarray(x)

    def to_host(self, x):
        return self.be.to_host(x)

    def gemm_precision(self, tf32):
        return self.be.gemm_precision(tf32)

    def store_bytes(self):
        """What the VJP may keep on the device (0 where the backend cannot say)."""
        free = getattr(self.be, "free_bytes", None)
        return 0 if free is None else int(min(GENERIC_STORE_BYTES_MAX, 0.25 * free()))

    def normal_matrix(self, config, width, sample, layer, stream, dtype):
        if stream == rng.STREAM_WEIGHT and np.dtype(dtype) == self.be.real:
            Z = self.xp.empty((width, width), dtype=dtype)
            args = (Z, _i32(width), _i32(layer), _i32(1), _i32(0), np.uint32(sample),
                    *_key(config.seed))  # fmt: skip
            self.be.launch("vx_fill_weights", _fill_grid((width * width + 3) // 4), FILL_THREADS,
                           args)  # fmt: skip
            return Z
        from . import numba_normals

        host = numba_normals.normal_matrix(config, width, sample, layer, stream, dtype)
        return self.xp.asarray(host)


def weights(config, width, sample, layer, backend=None):
    """Z^{s,l} and xi^{s,l} as the engine generates them, on the host (for tests)."""
    unit = _Unit(config, width, sample, path="gemm", backend=backend)
    unit.has_bias = 1
    unit._fill(layer, 1, transpose=0, bias=True)
    return unit.be.to_host(unit.Zbuf), unit.be.to_host(unit.xibuf)[0]


@gemm.deterministic
def run_unit(config, width, sample, path=None, backend=None):
    """Run one (width, sample) for every grid point; arrays shaped (A, W, B[, R]).

    The MLP runs on this module's kernels (``path``: 'gemm' or 'fused'); the
    other architectures run engines.generic on the device (``DeviceArrays``).
    """
    if NAME not in config.arch.fast_paths:
        from . import generic

        backend = backend or gpu_backend(config.precision)
        check_unit(config, width, None, getattr(backend, "free_bytes", None))
        return generic.run_unit(config, width, sample, DeviceArrays(backend))
    return _Unit(config, width, sample, path=path, backend=backend).run()


def device_name():
    cupy = _import_cupy()
    return cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)["name"].decode()


# ---------------------------------------------------------------- device math, for the tests
# Each runs one probe kernel of kernels/probe.cu on a backend (GpuBackend, or
# cuda_host.HostBackend on the CPU) and returns NumPy arrays.


def _fill_grid(total):
    return min(FILL_MAX_BLOCKS, max(1, math.ceil(total / FILL_THREADS)))


def _key(seed):
    k0, k1 = rng.seed_key(seed)
    return np.uint32(k0), np.uint32(k1)


def probe_philox(backend, block0, nblocks, layer, sample, stream, seed):
    """Philox words of counters (block0 + b, layer, sample, stream): (nblocks, 4) uint32."""
    out = backend.xp.zeros((nblocks, 4), dtype=np.uint32)
    args = (out, np.uint32(block0), np.int64(nblocks), np.uint32(layer), np.uint32(sample),
            np.uint32(stream), *_key(seed))  # fmt: skip
    backend.launch("vx_probe_philox", _fill_grid(nblocks), FILL_THREADS, args)
    return backend.to_host(out)


def probe_normals(backend, count, layer, sample, stream, seed):
    """The first ``count`` normals of a stream in float64 (compare rng.normals)."""
    out = backend.xp.zeros(count)
    args = (out, np.int64(count), np.uint32(layer), np.uint32(sample), np.uint32(stream),
            *_key(seed))  # fmt: skip
    backend.launch("vx_probe_normals", _fill_grid((count + 3) // 4), FILL_THREADS, args)
    return backend.to_host(out)


def probe_box_muller(backend, ka, kb):
    """Box-Muller of word pairs: (count, 2) float64 (compare rng.box_muller)."""
    xp = backend.xp
    ka = xp.asarray(np.asarray(ka, dtype=np.uint32))
    kb = xp.asarray(np.asarray(kb, dtype=np.uint32))
    out = xp.zeros((ka.size, 2))
    backend.launch(
        "vx_probe_box_muller", _fill_grid(ka.size), FILL_THREADS, (ka, kb, out, np.int64(ka.size))
    )
    return backend.to_host(out)


def probe_activation(backend, name, fn, x, a):
    """phi, dphi or d2phi (fn) of an activation at x, as the kernels compute it (float64)."""
    xp = backend.xp
    x = xp.asarray(np.ascontiguousarray(x, dtype=np.float64))
    out = xp.zeros(x.size)
    code = np.int32(cuda_sources.activation_code(name))
    which = np.int32(("phi", "dphi", "d2phi").index(fn))
    args = (x, out, np.int64(x.size), code, which, np.float64(a))
    backend.launch("vx_probe_activation", _fill_grid(x.size), FILL_THREADS, args)
    return backend.to_host(out)
