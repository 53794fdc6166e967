"""The CUDA engine's MLP paths: which one a unit takes, and whether it fits the device.

* **GEMM path** (large widths): per layer a Philox fill of Z, one cuBLAS GEMM
  over every column, a per-point epilogue kernel.
* **Fused path** (small widths): one thread block per grid point keeps its
  state in shared memory across a chunk of layers and does the matrix-vector
  products itself.

Both follow ``engines.schedule`` (``vjp_plan``: checkpoints, never every layer
kept). The recurrent networks (Elman, GRU, LSTM) take the step kernels
(``cuda_rnn``: GEMMs and a fused epilogue per step) or, at small widths, the
persistent kernels (``cuda_persist``: runs of steps per launch, the tied stacked
gate matrix of G N x N reals and v vectors of N in one block's shared memory,
(G N^2 + v N) s bytes <= the opt-in limit): ``recurrent_path``. The residual net
takes its fused epilogue (``cuda_residual``); other weight laws ``engines.generic``
on device arrays, which ``check_unit`` sizes as the CPU engines do.
"""

import math
from typing import NamedTuple

import numpy as np

from ..errors import VxsimError
from ..models import gru, lstm, residual, rnn
from . import base, cuda_graphs, cuda_sources, layout, schedule

# The cost model of engine.path = "auto" (``layer_seconds``), fitted to the per-layer
# times at steady state that scripts/gpu_check.py's "path crossover" section measured
# on an NVIDIA H200 (2026-12-04, CuPy 14.2, CUDA 13.0; tanh, JVP; widths 32-1024,
# 16-4096 points, float32 and float64: 34 cases, rms error 10 %; it picks the faster
# path in 33, the other within 6 %; docs/gpu.md has the tables).
SMS = 132  # multiprocessors of an H200; the device's own count where one is present
SM_THREADS, SM_REGISTERS, SM_BLOCKS = 2048, 65536, 32  # per multiprocessor (sm_80, sm_90)
SM_SHARED_BYTES = 228 * 1024  # shared memory per multiprocessor (sm_90; 164 KiB on sm_80)
KERNEL_REGISTERS = 128  # a per-point thread's registers (ptxas: 122, fused float32 forward)
FUSED_BLOCK_SECONDS = 5.0e-6  # a fused block's fixed time per layer
FUSED_ENTRY_SECONDS = {4: 1.42e-10, 8: 2.05e-10}  # ... and per entry of Z^l it streams
GEMM_LAYER_SECONDS = 14.3e-6  # a GEMM-path layer's fixed time: 3 kernels, one CUDA Graph
GEMM_FLOPS = {4: 48.7e12, 8: 60e12}  # cuBLAS SGEMM (fitted), DGEMM (datasheet; too few fits)
EPILOGUE_ENTRIES_PER_S = 7.7e10  # the GEMM path's epilogue, entries of the P r N state
FILL_ENTRIES_PER_S = 6.1e10  # its Philox fill and the other N^2 terms, entries of Z^l
# Weights of one fused chunk of layers (generated together) take at most this.
FUSED_ZBUF_BYTES = 64 * 2**20
# The fused kernels keep 6 vectors of N reals in shared memory; CUDA grants
# 48 KiB per block without an opt-in, so widths are limited to this.
FUSED_SMEM_BYTES = 46 * 1024
# The persistent small-width kernels (kernels/persist*.cu, engines/cuda_persist.py)
# keep the tied stacked gate matrix (G N x N: G = 1 Elman, 4 LSTM, 3 GRU) and a few
# vectors of N reals in shared memory: an H100/H200 block may opt in to 227 KiB (static
# scratch included: PERSIST_STATIC_BYTES), so the widest that fit are, in float32 /
# float64: Elman 236 / 166, GRU 136 / 95, LSTM 118 / 83. engine.path = "fused" forces
# them, "gemm" the step kernels, and "auto" takes the faster by ``step_seconds``.
PERSIST_SMEM_BYTES = 224 * 1024
# A block's static shared memory beside it: Block::reduce's scratch, (32 + 1) x VX_MAX_RED
# doubles = 1,320 bytes (ptxas reports 1,328 for the persistent kernels), rounded up.
PERSIST_STATIC_BYTES = 2048


class StepRates(NamedTuple):
    """A recurrent net's cost per step (JVP + VJP) on the two CUDA paths (``step_seconds``)."""

    persist_wave: float  # persistent kernels: a wave's fixed time per step
    steps_fixed: float  # step kernels: the fixed time per step (GEMMs, epilogues, graph)
    steps_product: float  # ... per entry of the G P N^2 gate products
    steps_gate: float  # ... per entry of the G P N gate rows


# Fitted to gpu_check's "persistent vs steps" lines (H200, 2026-12-04; tanh, JVP+VJP,
# float32; every width where the persistent kernels fit, 80, 264 and 1,000 points:
# 51 cases, rms error 12 %; it picks the faster path in 50, the other within 1 %).
STEP_RATES = {
    rnn.ARCHITECTURE.name: StepRates(9.5e-6, 29.2e-6, 3.2e-13, 9.2e-11),
    gru.ARCHITECTURE.name: StepRates(11.8e-6, 56.0e-6, 1.6e-13, 4.4e-11),
    lstm.ARCHITECTURE.name: StepRates(13.5e-6, 35.1e-6, 4.9e-14, 7.7e-11),
}
PERSIST_ENTRY_SECONDS = 1.02e-10  # per entry of a block's G N^2 gate matrix, per wave
PERSIST_ROW_SECONDS = 1.56e-8  # per entry of the G P N gate rows, per multiprocessor
# Vectors of N reals in shared memory beside W, per architecture and kernel (the
# forward kernel with the JVP's tangent is the largest: what decides the fit).
PERSIST_KERNEL_VECTORS = {
    rnn.ARCHITECTURE.name: {"forward": 6, "forward_nojvp": 4, "recompute": 2, "backward": 2},
    lstm.ARCHITECTURE.name: {"forward": 9, "forward_nojvp": 9, "recompute": 2, "backward": 6},
    gru.ARCHITECTURE.name: {"forward": 12, "forward_nojvp": 12, "recompute": 3, "backward": 4},
}
# Threads per block of the per-point kernels (a multiple of 32; fewer for small N;
# at most the kernels' __launch_bounds__).
MAX_THREADS = 256
assert MAX_THREADS <= cuda_sources.MAX_BLOCK_THREADS


def threads_for(width):
    """Threads per block of the per-point kernels: N rounded up to a warp, at most MAX_THREADS."""
    return min(MAX_THREADS, 32 * max(1, math.ceil(width / 32)))


def resident_blocks(width, smem_bytes=0):
    """Blocks of a per-point kernel that one multiprocessor runs at once: its threads
    (``threads_for``), KERNEL_REGISTERS registers each and ``smem_bytes`` of shared
    memory (with the 1 KiB the runtime reserves per block) against the SM's limits."""
    t = threads_for(width)
    fit = [SM_BLOCKS, SM_THREADS // t, SM_REGISTERS // (KERNEL_REGISTERS * t)]
    if smem_bytes:
        fit.append(SM_SHARED_BYTES // (smem_bytes + 1024))
    return max(1, min(fit))


def waves(points, width, smem_bytes=0):
    """Rounds of one block per grid point over the device: ceil(P / (SMs x resident))."""
    return math.ceil(points / (multiprocessors() * resident_blocks(width, smem_bytes)))


def multiprocessors():
    """The device's multiprocessors, or SMS (an H200's) where no device is usable."""
    from .cuda_backend import multiprocessor_count

    return multiprocessor_count() or SMS


def layer_seconds(path, points, width, itemsize, rows):
    """Estimated time of one forward layer of a unit on a path (the cost model).

    With P points, N the width, s the itemsize, r the rows per point (2, or 3
    with the JVP's tangent):

        fused:  t = waves(P, N) (t_block + N^2 t_entry(s))
        gemm:   t = t_layer + 2 r P N^2 / F_gemm(s) + r P N / R_epilogue + N^2 / R_fill

    A fused block streams all of Z^l (N^2 entries) for its point: the blocks that
    run at once share the device, so the time goes in waves of SMs x resident
    blocks (``waves``), each as long as one block's layer. The GEMM path is
    cuBLAS, the epilogue over the state and the fill of Z^l, with a fixed time per
    layer of three launches replayed from a CUDA Graph. (The fused path's launch per
    chunk of >= 16 layers is below the fit's resolution.)
    """
    P, N, s, r = float(points), float(width), int(itemsize), float(rows)
    if path == "fused":
        return waves(points, width) * (FUSED_BLOCK_SECONDS + N * N * FUSED_ENTRY_SECONDS[s])
    return (
        GEMM_LAYER_SECONDS
        + 2 * r * P * N * N / GEMM_FLOPS[s]
        + r * P * N / EPILOGUE_ENTRIES_PER_S
        + N * N / FILL_ENTRIES_PER_S
    )


def persist_smem(width, itemsize, vectors, gates=1):
    """Shared memory of a persistent kernel's block: the stacked W (G N^2 reals) and
    ``vectors`` vectors of N reals, (G N^2 + v N) s bytes."""
    return (gates * width * width + vectors * width) * itemsize


def persist_limit():
    """Shared memory a persistent block may use here: PERSIST_SMEM_BYTES, or less where
    the device's opt-in limit is lower (static + dynamic <= the opt-in: PERSIST_STATIC_BYTES
    left for the reductions' static scratch)."""
    from .cuda_backend import shared_memory_optin

    optin = shared_memory_optin()
    if optin is None:
        return PERSIST_SMEM_BYTES
    return min(PERSIST_SMEM_BYTES, optin - PERSIST_STATIC_BYTES)


def persist_fits(config, width):
    """Whether the persistent kernels of this architecture fit a block at this width
    (their largest, the forward kernel with the tangent's vectors)."""
    vectors = max(PERSIST_KERNEL_VECTORS[config.arch.name].values())
    return persist_smem(width, config.dtype.itemsize, vectors, config.arch.gates) <= persist_limit()


def persist_widest(config):
    """The widest width whose persistent kernels fit (0: none)."""
    return max((w for w in range(1, 512) if persist_fits(config, w)), default=0)


def step_seconds(path, arch, points, width, itemsize):
    """Estimated time of one JVP + VJP step of a recurrent unit on a path (the cost model).

    With P points, N the width, G the architecture's gate matrices, M the
    multiprocessors and a, b, c, d its ``STEP_RATES``:

        persistent:  t = waves(P, N, smem) (a + G N^2 t_entry) + G P N t_row / M
        steps:       t = b + c G P N^2 + d G P N

    The persistent blocks hold W in shared memory, so few fit a multiprocessor at
    once (``resident_blocks``): the time goes in waves of one block per point, and
    the blocks resident together share their multiprocessor's issue slots.
    """
    rates, P, N, G = STEP_RATES[arch.name], points, width, arch.gates
    if path == "persistent":
        vectors = max(PERSIST_KERNEL_VECTORS[arch.name].values())
        smem = persist_smem(N, itemsize, vectors, G) + PERSIST_STATIC_BYTES
        wave = rates.persist_wave + G * N * N * PERSIST_ENTRY_SECONDS
        return waves(P, N, smem) * wave + G * P * N * PERSIST_ROW_SECONDS / multiprocessors()
    return rates.steps_fixed + G * P * N * (N * rates.steps_product + rates.steps_gate)


def recurrent_path(config, width):
    """'persistent' (runs of steps per launch, the tied gate matrices in shared memory)
    or 'steps' (GEMMs and a fused epilogue per step): the faster by ``step_seconds``
    where the persistent kernels fit."""
    if config.path == "gemm" or not persist_fits(config, width):
        return "steps"
    if config.path == "fused":
        return "persistent"
    args = (config.arch, int(np.prod(config.grid_shape)), width, config.dtype.itemsize)
    persistent = step_seconds("persistent", *args)
    return "persistent" if persistent <= step_seconds("steps", *args) else "steps"


def choose_path(config, width):
    """'gemm' or 'fused' for this width and grid (engine.path forces either): the
    fused path where it fits in shared memory and the cost model says it is faster.
    The RNNs: ``recurrent_path``; the residual net: its epilogue on the GEMM path."""
    if config.recurrent:
        return recurrent_path(config, width)  # cuda_rnn's kernels
    if config.arch.name == residual.ARCHITECTURE.name:
        return "skip"  # the GEMM path with the skip's fused epilogue (cuda_residual)
    if config.path in ("gemm", "fused"):
        return config.path
    if not fused_fits(config, width):
        return "gemm"
    points = int(np.prod(config.grid_shape))
    item = config.dtype.itemsize
    rows = 3 if "jvp" in config.modes else 2
    fused = layer_seconds("fused", points, width, item, rows)
    return "fused" if fused <= layer_seconds("gemm", points, width, item, rows) else "gemm"


def fused_smem(width, itemsize, vectors):
    """Shared memory of a fused kernel's block: ``vectors`` vectors of ``width`` reals."""
    return vectors * width * itemsize


def fused_fits(config, width):
    return fused_smem(width, config.dtype.itemsize, 6) <= FUSED_SMEM_BYTES


def fused_chunk(config, width):
    """Layers per fused launch: as many weight matrices as fit in FUSED_ZBUF_BYTES."""
    per_layer = width * width * config.dtype.itemsize
    return max(1, min(config.depth, FUSED_ZBUF_BYTES // per_layer))


def vjp_plan(config, width, path):
    """The unit's schedule.Plan (schedule.NO_VJP without the VJP mode).

    A budget of 0: checkpoints every ``checkpoint_every`` layers, nothing else kept
    by the forward pass. On the GEMM path a segment's Z^l are kept from its
    recomputation for its backward steps when k of them fit in schedule.ZSTORE_BYTES;
    the fused path draws them again (its recomputation reads Z^l transposed, its
    backward steps as it is).
    """
    if "vjp" not in config.modes:
        return schedule.NO_VJP
    item = config.dtype.itemsize
    points = int(np.prod(config.grid_shape))
    layer = schedule.LayerBytes(points * width * item, width * width * item)
    plan = schedule.vjp_plan(config, layer, 0)
    return plan if path == "gemm" else plan._replace(keep_weights=False)


def weight_slots(plan):
    """Z^l buffers of the GEMM path: a segment's k when it keeps them, else one."""
    return plan.every if plan.keep_weights else 1


def estimate_device_bytes(config, width, path):
    """GPU memory of one unit's buffers, in bytes (what ``cuda_mlp.Unit`` allocates)."""
    P = int(np.prod(config.grid_shape))
    item = config.dtype.itemsize
    rows = 3 if "jvp" in config.modes else 2
    plan = vjp_plan(config, width, path)
    total = 2 * rows * P * width * item  # A, H
    if path == "fused":
        k = fused_chunk(config, width)
        total += k * width * (width * item + 8)
    else:
        total += weight_slots(plan) * width * width * item + width * 8
    if "vjp" in config.modes:
        every = plan.every
        total += schedule.checkpoint_count(config.depth, every) * P * (width * item + 8)
        total += every * P * width * item + 2 * P * width * item  # D, G, U
    total += 4 * P * config.layers.size * 8 + P * (8 * layout.N_F + 4 * layout.N_I)
    total += 4 * width * item  # inputs, output direction
    return int(total + cuda_graphs.device_bytes(config))  # the layer tables


def check_unit(config, width, path, free_bytes=None):
    """VxsimError (one line) when a unit of this width cannot run on this path or device."""
    if config.samples > 2**32:
        raise VxsimError("monte_carlo.samples must be <= 2**32 (a 32-bit Philox counter word)")
    if "cuda" not in config.arch.fast_paths or not config.gaussian_weights:
        path = "generic"  # engine.path chooses between the MLP's kernels only
    if path == "fused" and not fused_fits(config, width):
        widest = FUSED_SMEM_BYTES // (6 * config.dtype.itemsize)
        raise VxsimError(
            f"engine.path = 'fused' on the cuda backend takes widths up to {widest} "
            f"in {config.precision}; got {width} (use path 'gemm' or 'auto')"
        )
    fused_rnn = config.path == "fused" and config.recurrent
    if path == "steps" and fused_rnn and not persist_fits(config, width):
        raise VxsimError(
            f"engine.path = 'fused' (the persistent kernel) on the cuda backend takes "
            f"{config.arch.name} widths up to {persist_widest(config)} in {config.precision}; "
            f"got {width} (use 'gemm' or 'auto')"
        )
    if free_bytes is not None:
        if path == "generic":
            need = base.estimate_unit_bytes(config, width)  # the same arrays as on the CPU
        elif path in ("steps", "persistent"):
            from .cuda_rnn import device_bytes

            need = device_bytes(config, width)
        elif path == "skip":
            from .cuda_residual import device_bytes

            need = device_bytes(config, width)
        else:
            need = estimate_device_bytes(config, width, path)
        free = free_bytes()
        if need > 0.9 * free:
            raise VxsimError(
                f"a work unit of width {width} needs about {need / 2**30:.1f} GiB of GPU memory "
                f"but only {free / 2**30:.1f} GiB is free; lower network.width, the grid or "
                f"(in vjp mode) set engine.checkpoint"
            )
