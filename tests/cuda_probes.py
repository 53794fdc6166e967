"""The CUDA program's device math, exposed for the tests (kernels/probe.cu).

Each function runs one kernel on a backend (``cuda_backend.GpuBackend`` on a
GPU, or ``cuda_host.HostBackend`` on the CPU) and returns NumPy arrays, so
tests/test_cuda_host.py and tests/test_cuda_gpu.py (also run by
scripts/gpu_check.py, without pytest) compare them with ``vxsim.rng`` and
the activation registry.
"""

import numpy as np

from vxsim.engines import cuda_sources
from vxsim.engines.cuda_backend import FILL_THREADS, fill_grid, seed_words
from vxsim.engines.cuda_mlp import Unit


def probe_philox(backend, block0, nblocks, layer, sample, stream, seed):
    """Philox words of counters (block0 + b, layer, sample, stream): (nblocks, 4) uint32."""
    out = backend.xp.zeros((nblocks, 4), dtype=np.uint32)
    args = (out, np.uint32(block0), np.int64(nblocks), np.uint32(layer), np.uint32(sample),
            np.uint32(stream), *seed_words(seed))  # fmt: skip
    backend.launch("vx_probe_philox", fill_grid(nblocks), FILL_THREADS, args)
    return backend.to_host(out)


def probe_normals(backend, count, layer, sample, stream, seed):
    """The first ``count`` normals of a stream in float64 (compare rng.normals)."""
    out = backend.xp.zeros(count)
    args = (out, np.int64(count), np.uint32(layer), np.uint32(sample), np.uint32(stream),
            *seed_words(seed))  # fmt: skip
    backend.launch("vx_probe_normals", fill_grid((count + 3) // 4), FILL_THREADS, args)
    return backend.to_host(out)


def probe_box_muller(backend, ka, kb):
    """Box-Muller of word pairs: (count, 2) float64 (compare rng.box_muller)."""
    xp = backend.xp
    ka = xp.asarray(np.asarray(ka, dtype=np.uint32))
    kb = xp.asarray(np.asarray(kb, dtype=np.uint32))
    out = xp.zeros((ka.size, 2))
    backend.launch(
        "vx_probe_box_muller", fill_grid(ka.size), FILL_THREADS, (ka, kb, out, np.int64(ka.size))
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
    backend.launch("vx_probe_activation", fill_grid(x.size), FILL_THREADS, args)
    return backend.to_host(out)


def weights(config, width, sample, layer, backend):
    """Z^{s,l} and xi^{s,l} as the engine generates them (vx_fill_weights, vx_fill_bias)."""
    unit = Unit(config, width, sample, backend, path="gemm")
    unit.has_bias = 1
    unit._fill(layer, 1, transpose=0, bias=True)
    return unit.be.to_host(unit.Zbuf[0]), unit.be.to_host(unit.xibuf)[0]
