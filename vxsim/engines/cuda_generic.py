"""Every architecture but the MLP on the CUDA engine: ``engines.generic`` on device arrays.

The residual, Elman, GRU and LSTM networks run their model's step as
``engines.generic`` drives it, on the backend's arrays (CuPy on a GPU): the
same NumPy code as the oracle, dispatched to CuPy's elementwise kernels and
cuBLAS. Not fused: a few dozen kernel launches per layer.
"""

import numpy as np

from .. import rng
from . import schedule
from .cuda_backend import FILL_THREADS, fill_grid, i32, seed_words

# The VJP keeps every layer instead of recomputing from checkpoints when that
# fits in min(this, a quarter of the free device memory).
GENERIC_STORE_BYTES_MAX = 8 * 2**30


class DeviceArrays:
    """Where ``engines.generic`` keeps a unit on the GPU.

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
        """What the VJP may keep on the device: schedule.store_budget of the free memory
        (0 where the backend cannot say: nothing kept, checkpoints)."""
        free = getattr(self.be, "free_bytes", None)
        return schedule.store_budget(0 if free is None else free(), GENERIC_STORE_BYTES_MAX)

    def normal_matrix(self, config, width, sample, layer, stream, dtype):
        if stream == rng.STREAM_WEIGHT and np.dtype(dtype) == self.be.real:
            Z = self.xp.empty((width, width), dtype=dtype)
            args = (Z, i32(width), i32(layer), i32(1), i32(0), np.uint32(sample),
                    *seed_words(config.seed))  # fmt: skip
            self.be.launch("vx_fill_weights", fill_grid((width * width + 3) // 4), FILL_THREADS,
                           args)  # fmt: skip
            return Z
        return self.xp.asarray(host_normal_matrix(config, width, sample, layer, stream, dtype))


def host_normal_matrix(config, width, sample, layer, stream, dtype):
    """Z of (layer, stream) on the host: Numba's parallel generator, or ``rng``'s where
    Numba cannot be imported (the same bits: both are ``rng.normals``)."""
    try:
        from . import numba_normals
    except ImportError:
        return rng.normal_matrix(config.seed, sample, layer, width, stream=stream, dtype=dtype)
    return numba_normals.normal_matrix(config, width, sample, layer, stream, dtype)
