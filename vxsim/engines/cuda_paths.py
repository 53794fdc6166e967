"""The CUDA engine's MLP paths: which one a unit takes, and whether it fits the device.

* **GEMM path** (large widths): per layer a Philox fill of Z, one cuBLAS GEMM
  over every column, a per-point epilogue kernel.
* **Fused path** (small widths): one thread block per grid point keeps its
  state in shared memory across a chunk of layers and does the matrix-vector
  products itself.

The other architectures take neither (``engines.generic`` on device arrays);
``check_unit`` sizes them as the CPU engines do.
"""

import math

import numpy as np

from ..errors import VxsimError
from . import base, layout

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


def threads_for(width):
    """Threads per block of the per-point kernels: N rounded up to a warp, at most MAX_THREADS."""
    return min(MAX_THREADS, 32 * max(1, math.ceil(width / 32)))


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
    """GPU memory of one unit's buffers, in bytes (what ``cuda_mlp.Unit`` allocates)."""
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
    if config.architecture != "mlp":
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
