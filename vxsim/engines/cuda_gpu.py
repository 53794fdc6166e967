"""The CUDA engine: CuPy arrays, cuBLAS GEMMs, and the hand-written kernels of ``kernels/``.

The engine's entry (``NAME``, ``available``, ``numerics``, ``run_unit``); the
work is in six modules, one concern each:

* ``cuda_backend``: where it runs. ``GpuBackend`` (CuPy, cuBLAS, the kernels
  compiled by NVRTC), whether CuPy can run here, the generator's launch
  geometry;
* ``cuda_paths``: which MLP path a unit takes (GEMM or fused) and whether it
  fits the device;
* ``cuda_mlp``: the MLP unit (``Unit``): both paths, forward, JVP and the
  checkpointed VJP;
* ``cuda_rnn``: the recurrent architectures (Elman, GRU, LSTM): stacked gate
  GEMMs and one fused step kernel each (``kernels/rnn.cu``);
* ``cuda_persist``: the same at small widths, whole runs of steps per launch with the
  tied gate matrices in shared memory (``kernels/persist*.cu``);
* ``cuda_residual``: the residual MLP: the MLP's GEMM path with the skip in a
  fused epilogue (``kernels/residual.cu``);
* ``cuda_generic``: any weight law
  but the Gaussian, and ``path='generic'``: ``engines.generic`` on device
  arrays (``DeviceArrays``).

How the work is launched is separate from where: the units take a backend.
``GpuBackend`` is CuPy on the GPU; the tests also run these modules unchanged
on ``cuda_host.HostBackend``, the same kernels built for the CPU with host
threads (slow, but every line of the engine and of the kernels' arithmetic
runs without a GPU).
"""

from . import cuda_persist, cuda_residual, cuda_rnn, gemm
from .cuda_backend import available, gpu_backend, numerics, unavailable_reason
from .cuda_generic import DeviceArrays
from .cuda_mlp import Unit
from .cuda_paths import check_unit, choose_path

NAME = "cuda"

__all__ = [
    "NAME",
    "available",
    "check_config",
    "graded_svd",
    "numerics",
    "run_unit",
    "spectrum_arrays",
    "unavailable_reason",
]


def check_config(config):
    """Before a sweep writes anything: every width fits its path and the GPU's memory."""
    free = getattr(gpu_backend(config.precision), "free_bytes", None)
    for width in config.widths:
        check_unit(config, width, choose_path(config, width), free)


@gemm.deterministic
def run_unit(config, width, sample, path=None, backend=None):
    """Run one (width, sample) for every grid point; arrays shaped (A, W, B[, R]).

    The MLP runs on the engine's kernels (``path``: 'gemm' or 'fused'), the RNNs on
    their fused step kernels (``cuda_rnn``), the residual net on its fused epilogue
    (``cuda_residual``); any weight law but the Gaussian, and ``path='generic'``
    run engines.generic on the device
    (``DeviceArrays``). ``backend``: where (default the GPU's, ``gpu_backend``).
    """
    backend = backend or gpu_backend(config.precision)
    fast = NAME in config.arch.fast_paths and config.gaussian_weights  # laws: generic
    if path == "generic" or not fast:
        from . import generic

        check_unit(config, width, None, getattr(backend, "free_bytes", None))
        return generic.run_unit(config, width, sample, DeviceArrays(backend))
    if config.recurrent:  # path: 'steps' or 'persistent' (small widths), or chosen
        path = path if path in ("steps", "persistent") else choose_path(config, width)
        check_unit(config, width, path, getattr(backend, "free_bytes", None))
        unit = cuda_persist if path == "persistent" else cuda_rnn
        return unit.run_unit(config, width, sample, backend)
    if config.arch.name == cuda_residual.ARCH:
        check_unit(config, width, "skip", getattr(backend, "free_bytes", None))
        return cuda_residual.run_unit(config, width, sample, backend)
    return Unit(config, width, sample, backend, path=path).run()


def spectrum_arrays(config, backend=None):
    """Where engines.spectrum keeps a unit: CuPy arrays in the spectrum's precision."""
    return DeviceArrays(backend or gpu_backend(config.spectrum_precision))


def graded_svd(b, U):
    """The graded SVD of the accumulated triangles, on the host (Numba where it imports)."""
    try:
        from .numba_graded_svd import log_singular_values
    except ImportError:
        from .graded_svd import log_singular_values
    return log_singular_values(b, U)
