"""Where the CUDA engine's work runs: CuPy on a GPU (``GpuBackend``), and whether it can.

A backend offers what the engine's units need: ``xp`` (the array module),
``launch`` (a kernel of ``kernels/`` by name), ``matmul`` (cuBLAS),
``to_host``, ``gemm_precision`` (TF32 or strict float32 GEMMs inside a block)
and ``free_bytes``. ``GpuBackend`` is CuPy on the GPU; ``cuda_host.HostBackend``
is the same interface on the CPU (the kernels built with g++), for the tests.

The kernels are compiled at run time by NVRTC through ``cupy.RawModule``
(``--fmad=false``: no contraction, so the normals match the CPU bit for bit),
once per precision and process (CuPy caches the binary on disk).

Also here: the launch geometry of the generator kernels, which every caller
of ``vx_fill_weights`` (the MLP unit, the generic path's arrays, the test
probes) shares.
"""

import contextlib
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


# ---------------------------------------------------------------- the GPU backend


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
