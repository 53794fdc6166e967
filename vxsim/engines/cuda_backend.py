"""Where the CUDA engine's work runs: CuPy on a GPU (``GpuBackend``), and whether it can.

A backend offers what the engine's units need: ``xp`` (the array module),
``launch`` (a kernel of ``kernels/`` by name), ``matmul`` (cuBLAS),
``to_host``, ``gemm_precision`` (TF32 or strict float32 GEMMs inside a block)
and ``free_bytes``. ``GpuBackend`` is CuPy on the GPU; ``cuda_host.HostBackend``
is the same interface on the CPU (the kernels built with g++), for the tests.

The kernels are compiled at run time by NVRTC through ``cupy.RawModule``
(``--fmad=false``: no contraction, so the normals match the CPU bit for bit),
once per precision and process (CuPy caches the binary on disk).

CUDA Graphs (``cuda_graphs``): the unit's work goes to one non-blocking stream
(``stream``), on which ``begin_capture``/``end_capture`` capture a body of steps
(CuPy's ``Stream.begin_capture``, relaxed mode) and ``replay`` launches it
(``cupy.cuda.graph.Graph.launch``). CuPy refuses its own cuBLAS calls during a
capture (``cublas.setStream`` raises NotImplementedError while the stream
captures), so a captured GEMM is ``cublasGemmEx`` called through ctypes on
CuPy's own handle, with the very arguments ``cupy.matmul`` passes
(``gemm_operands``, ``compute_type``): the same call, the same bits as the
step path's GEMM. The handle's stream is set before the capture, and its
workspace once (``cublasSetWorkspace``: no allocation by cuBLAS inside a
capture). Every buffer a body touches is allocated before it is captured.

Also here: the launch geometry of the generator kernels, which every caller
of ``vx_fill_weights`` (the MLP unit, the generic path's arrays, the test
probes) shares.
"""

import contextlib
import ctypes
import importlib
import logging
import math

import numpy as np

from .. import rng
from ..errors import VxsimError
from . import cuda_sources

log = logging.getLogger("vxsim")

# Threads per block and most blocks of the generator (grid-stride beyond).
FILL_THREADS = cuda_sources.MAX_BLOCK_THREADS
FILL_MAX_BLOCKS = 65536


# ---------------------------------------------------------------- availability


def _import_cupy():
    import cupy

    return cupy


def unavailable_reason():
    """Why the engine cannot run here (None when it can).

    CuPy must import and see a GPU, and load the two CUDA libraries the engine
    needs beyond the driver: NVRTC (the kernels are compiled at run time) and
    cuBLAS (the GEMMs). CuPy 14's wheel brings neither (its ``ctk`` extra, or a
    CUDA toolkit, does), and ``cupy.cuda.is_available()`` is true without them.
    """
    try:
        cupy = _import_cupy()
    except Exception as err:  # ImportError, or a broken CUDA install raising anything
        return f"cupy cannot be imported ({type(err).__name__}: {err}); pip install 'vxsim[gpu]'"
    try:
        if not cupy.cuda.is_available():
            return "no CUDA GPU is visible to CuPy"
    except Exception as err:
        return f"CUDA is not usable ({type(err).__name__}: {err})"
    for library, load in (("NVRTC", _load_nvrtc), ("cuBLAS", _load_cublas)):
        try:
            load(cupy)
        except Exception as err:
            return (
                f"CuPy sees a GPU but cannot load {library} ({type(err).__name__}: {err}); "
                f"pip install 'vxsim[gpu]' (cupy-cuda13x[ctk]) or install the CUDA toolkit"
            )
    return None


def _load_nvrtc(cupy):
    """NVRTC's version (loads libnvrtc, as the first kernel compile would)."""
    return cupy.cuda.nvrtc.getVersion()


def _load_cublas(cupy):
    """A cuBLAS handle of the current device (loads libcublas, as the first GEMM would)."""
    return cupy.cuda.device.get_cublas_handle()


def numerics():
    """What decides the bits: the device and CuPy's cuBLAS (the fused kernels are exact)."""
    try:
        cupy = _import_cupy()
        blas = cupy.cuda.cublas.getVersion(cupy.cuda.device.get_cublas_handle())
        return f"{device_name()}, cupy {cupy.__version__}, cuBLAS {blas}"
    except Exception:
        return "cuda (no GPU visible)"


_said = set()


def available():
    """True where CuPy imports, sees a GPU and loads NVRTC and cuBLAS; never raises.

    Where CuPy is installed but the engine still cannot run (no GPU visible, a
    CUDA library missing), says why once, in one log line (``--backend auto``
    then falls back to the CPU engines); where CuPy is not installed, says nothing.
    """
    try:
        why = unavailable_reason()
    except Exception as err:
        why = f"{type(err).__name__}: {err}"
    if why is not None and not why.startswith("cupy cannot be imported") and why not in _said:
        _said.add(why)
        log.warning("the cuda backend is not usable here: %s", why)
    return why is None


def device_name():
    cupy = _import_cupy()
    return cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)["name"].decode()


def shared_memory_optin():
    """Bytes of shared memory a block of this device may opt in to
    (cudaDevAttrMaxSharedMemoryPerBlockOptin: 227 KiB on H100/H200, 163 KiB on A100),
    or None where no device is usable (the host build)."""
    if not available():
        return None
    cupy = _import_cupy()
    return int(cupy.cuda.Device().attributes["MaxSharedMemoryPerBlockOptin"])


def multiprocessor_count():
    """Multiprocessors of this device (132 on an H200, 108 on an A100), or None where no
    device is usable (the host build)."""
    if not available():
        return None
    cupy = _import_cupy()
    return int(cupy.cuda.Device().attributes["MultiProcessorCount"])


# ---------------------------------------------------------------- launch geometry


def i32(x):
    """A kernel's ``int`` argument (CuPy passes NumPy scalars by their exact type)."""
    return np.int32(x)


def fill_grid(total):
    """Blocks of FILL_THREADS for ``total`` work items (grid-stride beyond FILL_MAX_BLOCKS)."""
    return min(FILL_MAX_BLOCKS, max(1, math.ceil(total / FILL_THREADS)))


def seed_words(seed):
    """The Philox key of a seed as the kernels take it: two uint32."""
    k0, k1 = rng.seed_key(seed)
    return np.uint32(k0), np.uint32(k1)


# ---------------------------------------------------------------- cuBLAS inside a capture

# cuBLAS's enums (cublas_api.h, library_types.h), as CuPy's cupy_backends.cuda.libs.cublas
CUDA_R_32F, CUDA_R_64F = 0, 1
CUBLAS_COMPUTE_32F, CUBLAS_COMPUTE_32F_PEDANTIC, CUBLAS_COMPUTE_32F_FAST_TF32 = 68, 69, 77
CUBLAS_COMPUTE_64F, CUBLAS_COMPUTE_64F_PEDANTIC = 70, 71
CUBLAS_GEMM_DEFAULT, CUBLAS_GEMM_DEFAULT_TENSOR_OP = -1, 99
WORKSPACE_BYTES = 32 * 2**20  # cuBLAS's recommendation for Hopper


def _cublas_operand(x, trans):
    """CuPy's ``_mat_to_cublas_contiguous(x, trans)``: (transposed?, leading dimension) of a
    2-D array as cuBLAS's column order reads it; None where CuPy would copy it."""
    item = x.itemsize
    if x.flags.f_contiguous:
        return trans, max(x.strides[1] // item, x.shape[0])
    if x.flags.c_contiguous:
        return 1 - trans, x.strides[0] // item
    return None


def gemm_operands(a, b, out):
    """out = a @ b (2-D, C-order out) as ``cupy.matmul`` asks cuBLAS for it:

        out^T = op(b) op(a^T)   (column order: a C-order (M, N) array is its (N, M) transpose)

    ``(transa, transb, m, n, k, lda, ldb, ldc)`` of ``cublasGemmEx(handle, transa, transb,
    m, n, k, 1, b, lda, a, ldb, 0, out, ldc)``: CuPy's dot rolls a to a^T (K, M) and calls
    tensordot_core_v11(transb, transa, N, M, K, b, ldb, a^T, lda, out, N). Raises
    ValueError where CuPy would copy an operand (neither C- nor F-contiguous): an allocation.
    """
    M, K = a.shape
    K2, N = b.shape
    if K2 != K or out.shape != (M, N) or not out.flags.c_contiguous:
        raise ValueError(f"gemm shapes {a.shape} @ {b.shape} -> {out.shape}")
    at = _cublas_operand(a.T, 0)
    bt = _cublas_operand(b, 1)
    if at is None or bt is None:
        raise ValueError("a GEMM operand is neither C- nor F-contiguous (CuPy would copy it)")
    return bt[0], at[0], N, M, K, bt[1], at[1], N


def _library_path(fragment):
    """The path of a shared library this process has loaded (from /proc/self/maps)."""
    with open("/proc/self/maps") as maps:
        for line in maps:
            path = line.split()[-1]
            name = path.rsplit("/", 1)[-1]
            if name.startswith(fragment):
                return path
    raise RuntimeError(f"{fragment}* is not loaded in this process")


class CapturedGemm:
    """cublasGemmEx through ctypes on CuPy's handle: a GEMM CuPy lets a capture record."""

    def __init__(self, cupy, lib=None):
        self.cupy = cupy
        self.handle = cupy.cuda.device.get_cublas_handle()  # loads libcublas
        lib = lib or ctypes.CDLL(_library_path("libcublas.so"))
        vp, i = ctypes.c_void_p, ctypes.c_int
        self.gemm_ex = lib.cublasGemmEx
        self.gemm_ex.argtypes = [vp, i, i, i, i, i, vp, vp, i, i, vp, i, i, vp, vp, i, i, i, i]
        self.gemm_ex.restype = i
        self.set_workspace = lib.cublasSetWorkspace_v2
        self.set_workspace.argtypes = [vp, vp, ctypes.c_size_t]
        self.set_workspace.restype = i
        self.one = {4: ctypes.c_float(1.0), 8: ctypes.c_double(1.0)}
        self.zero = {4: ctypes.c_float(0.0), 8: ctypes.c_double(0.0)}
        self.workspace = None

    def prepare(self, stream):
        """Before a capture: the handle on the capturing stream, its workspace set (once)."""
        cublas = self.cupy.cuda.cublas
        if self.workspace is None:
            self.workspace = self.cupy.empty(WORKSPACE_BYTES, dtype=self.cupy.uint8)
            status = self.set_workspace(self.handle, self.workspace.data.ptr, WORKSPACE_BYTES)
            if status:
                raise RuntimeError(f"cublasSetWorkspace failed (status {status})")
        cublas.setStream(self.handle, stream.ptr)

    def __call__(self, a, b, out):
        transa, transb, m, n, k, lda, ldb, ldc = gemm_operands(a, b, out)
        item = out.itemsize
        dtype = CUDA_R_64F if item == 8 else CUDA_R_32F
        status = self.gemm_ex(
            self.handle, transa, transb, m, n, k, ctypes.byref(self.one[item]), b.data.ptr,
            dtype, lda, a.data.ptr, dtype, ldb, ctypes.byref(self.zero[item]), out.data.ptr,
            dtype, ldc, compute_type(self.cupy, out.dtype), gemm_algo(self.cupy),
        )  # fmt: skip
        if status:
            raise RuntimeError(f"cublasGemmEx failed during a capture (status {status})")


def compute_type(cupy, dtype):
    """The cuBLAS compute type CuPy's tensordot_core_v11 uses for ``dtype`` now."""
    linalg = importlib.import_module(cupy.__name__ + "._core._routines_linalg")
    mode = cupy._core.get_compute_type(dtype)
    pedantic = mode == getattr(linalg, "COMPUTE_TYPE_PEDANTIC", None)
    if np.dtype(dtype) == np.float64:
        return CUBLAS_COMPUTE_64F_PEDANTIC if pedantic else CUBLAS_COMPUTE_64F
    if pedantic:
        return CUBLAS_COMPUTE_32F_PEDANTIC
    return CUBLAS_COMPUTE_32F_FAST_TF32 if mode == linalg.COMPUTE_TYPE_TF32 else CUBLAS_COMPUTE_32F


def gemm_algo(cupy):
    """CuPy's choice: the tensor-op default from compute capability 8.0 on."""
    major = int(cupy.cuda.device.get_compute_capability()) >= 80
    return CUBLAS_GEMM_DEFAULT_TENSOR_OP if major else CUBLAS_GEMM_DEFAULT


# ---------------------------------------------------------------- the GPU backend


class GpuBackend:
    """CuPy arrays, cuBLAS through cupy.matmul, the kernels through one RawModule."""

    capture_fallback = True  # a failed graph capture: a warning and the step path

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
        self._stream = None
        self._gemm = None  # CapturedGemm, made at the first capture
        self.capturing = False
        self.captures = 0

    # -- CUDA Graphs (cuda_graphs; see the module docstring)

    @contextlib.contextmanager
    def stream(self):
        """The unit's work on this backend's non-blocking stream (a capture needs one other
        than the legacy default stream), after the legacy stream's work, synchronised at
        the end."""
        if self._stream is None:
            self._stream = self.cupy.cuda.Stream(non_blocking=True)
            # the handle's workspace set before any GEMM of ours: every GEMM, captured or
            # not, then sees the same handle state (the same algorithm, the same bits)
            try:
                self._gemm = CapturedGemm(self.cupy)
                self._gemm.prepare(self._stream)
            except Exception as err:
                log.warning("CUDA Graphs are not usable here (%s: %s)", type(err).__name__, err)
                self._gemm = None
        # what the unit's constructor queued on the legacy stream (its draws, copies, memsets)
        # comes first: a non-blocking stream does not wait for it by itself
        ready = self.cupy.cuda.Event(disable_timing=True)
        ready.record(self.cupy.cuda.Stream.null)
        self._stream.wait_event(ready)
        with self._stream:
            yield
        self._stream.synchronize()

    def begin_capture(self):
        stream = self.cupy.cuda.get_current_stream()
        if self._gemm is None:
            raise RuntimeError("cuBLAS cannot be called through ctypes here (see the warning)")
        self._gemm.prepare(stream)
        stream.begin_capture()
        self.capturing = True

    def end_capture(self):
        graph = self.cupy.cuda.get_current_stream().end_capture()
        self.capturing = False
        self.captures += 1
        return graph

    def abort_capture(self):
        """After a failed capture: the stream out of capture mode, the graph dropped."""
        self.capturing = False
        stream = self.cupy.cuda.get_current_stream()
        with contextlib.suppress(Exception):
            if stream.is_capturing():
                stream.end_capture()

    def replay(self, graph):
        graph.launch(self.cupy.cuda.get_current_stream())

    def launch(self, name, grid, block, args, smem=0):
        """Launch kernel ``name`` on the current stream (asynchronous).

        The argument types are checked against the kernel's C signature on its
        first launch (CuPy passes NumPy scalars by their exact type, and a
        float64 array where a float* is expected would be read as garbage); the
        launch shape on every launch (``cuda_sources.check_launch``: a multiple
        of 32 threads, within the kernels' ``__launch_bounds__``).
        """
        cuda_sources.check_launch(name, grid, block)
        if name not in self.checked:
            cuda_sources.check_args(name, self.signatures[name], args, self.real)
            self.checked.add(name)
        fn = self.functions.get(name)
        if fn is None:
            fn = self.functions[name] = self.module.get_function(name)
        if smem > 48 * 1024 and fn.max_dynamic_shared_size_bytes < smem:
            fn.max_dynamic_shared_size_bytes = int(smem)  # the opt-in beyond 48 KiB (persist.cu)
        fn((int(grid),), (int(block),), tuple(args), shared_mem=int(smem))

    def matmul(self, a, b, out):
        if self.capturing:
            self._gemm(a, b, out)  # CuPy's own cuBLAS calls refuse a capturing stream
        else:
            self.cupy.matmul(a, b, out=out)

    def to_host(self, x):
        return self.cupy.asnumpy(x)

    def gemm_precision(self, tf32):
        """float32 GEMMs in TF32 (tf32=True) or strict float32 inside the block."""
        return gemm_compute_type(self.cupy, tf32)

    def free_bytes(self):
        """Device memory free to this process: the driver's, plus CuPy's pool's cached blocks."""
        free, _total = self.cupy.cuda.Device().mem_info
        return int(free) + int(self.cupy.get_default_memory_pool().free_bytes())


@contextlib.contextmanager
def gemm_compute_type(cupy, tf32):
    """CuPy's float32 GEMM compute type set inside the block, the previous one restored after.

    tf32=True: TF32 on the tensor cores (cuBLAS ``CUBLAS_COMPUTE_32F_FAST_TF32``);
    tf32=False: ``COMPUTE_TYPE_DEFAULT`` (``CUBLAS_COMPUTE_32F``), set explicitly so
    that neither ``CUPY_TF32=1`` in the environment nor a caller's setting makes a
    "float32" run use TF32. A CuPy without the switch has no TF32 to leak: float32
    runs go on, tf32 runs are refused.
    """
    try:
        linalg = importlib.import_module(cupy.__name__ + "._core._routines_linalg")
        mode = linalg.COMPUTE_TYPE_TF32 if tf32 else linalg.COMPUTE_TYPE_DEFAULT
        old = cupy._core.get_compute_type(np.float32)
    except (ImportError, AttributeError) as err:
        if tf32:
            raise VxsimError(f"this CuPy cannot switch GEMMs to TF32 ({err})") from None
        yield
        return
    cupy._core.set_compute_type(np.float32, mode)
    try:
        yield
    finally:
        cupy._core.set_compute_type(np.float32, old)


_backends = {}


def gpu_backend(precision):
    """The GpuBackend of a precision (kernels compiled once per process; tf32 shares
    float32's: the kernels are the same, only the GEMMs differ)."""
    key = "float64" if precision == "float64" else "float32"
    backend = _backends.get(key)
    if backend is None:
        backend = _backends[key] = GpuBackend(key)
    return backend
