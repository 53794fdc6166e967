"""Counter-based normals on all CPU cores, bit-identical to ``rng.normals``.

The Numba engine's own kernels generate the MLP's weights inside fused passes;
this is the plain parallel fill that the other architectures (engines.generic)
use for their matrices, with the same vectorised Philox and Box-Muller
(``numba_kernels._normals_chunk``: structure-of-arrays passes that LLVM
vectorises, the arithmetic of ``rng`` operation for operation), so the same bits.
"""

import numba
import numpy as np
from numba import njit, prange

from .. import rng
from .numba_kernels import CHUNK, _normals_chunk, _store_chunk


@njit(parallel=True, cache=True)
def _fill(out, layer, sample, stream, k0, k1, threads):
    """out[i] = normal i of the stream (rounded to out's dtype), chunks shared by the threads."""
    count = out.size
    chunks = ((count + 3) // 4 + CHUNK - 1) // CHUNK
    lanes = max(1, min(chunks, threads))
    for lane in prange(lanes):
        words = np.empty((4, CHUNK), dtype=np.uint64)
        values = np.empty((4, CHUNK))
        for c in range(lane * chunks // lanes, (lane + 1) * chunks // lanes):
            nb = _normals_chunk(c, count, layer, sample, stream, k0, k1, words, values)
            _store_chunk(out, c, count, nb, values)


def _call(out, seed, sample, layer, stream):
    k0, k1 = rng.seed_key(seed)
    keys = np.uint64(layer), np.uint64(sample), np.uint64(stream), np.uint64(k0), np.uint64(k1)
    _fill(out, *keys, numba.get_num_threads())
    return out


def normals(seed, sample, layer, stream, count):
    """rng.normals(seed, sample, layer, stream, count), computed in parallel."""
    return _call(np.empty(count), seed, sample, layer, stream)


def normal_matrix(config, width, sample, layer, stream, dtype):
    """Z of (layer, stream) as engines.generic asks for it (width x width, ``dtype``).

    Written straight in ``dtype``: each float64 normal rounded once on store, as
    ``rng.normal_matrix``'s astype rounds it.
    """
    out = np.empty(width * width, dtype=dtype)
    return _call(out, config.seed, sample, layer, stream).reshape(width, width)
