"""Counter-based normals on all CPU cores, bit-identical to ``rng.normals``.

The Numba engine's own kernels generate the MLP's weights inside fused passes;
this is the plain parallel fill that the other architectures (engines.generic)
use for their matrices. Same functions as the NumPy reference (``rng``'s
register_jitable Philox and Box-Muller), so the same bits.
"""

import numpy as np
from numba import njit, prange

from .. import rng


@njit(parallel=True, cache=True)
def _fill(out, layer, sample, stream, k0, k1):
    count = out.size
    for b in prange((count + 3) // 4):
        w0, w1, w2, w3 = rng.philox4x32_10(np.uint64(b), layer, sample, stream, k0, k1)
        z0, z1 = rng.box_muller(w0, w1)
        z2, z3 = rng.box_muller(w2, w3)
        i = 4 * b
        out[i] = z0
        if i + 1 < count:
            out[i + 1] = z1
        if i + 2 < count:
            out[i + 2] = z2
        if i + 3 < count:
            out[i + 3] = z3


def normals(seed, sample, layer, stream, count):
    """rng.normals(seed, sample, layer, stream, count), computed in parallel."""
    k0, k1 = rng.seed_key(seed)
    out = np.empty(count)
    _fill(out, np.uint64(layer), np.uint64(sample), np.uint64(stream), k0, k1)
    return out


def normal_matrix(config, width, sample, layer, stream, dtype):
    """Z of (layer, stream) as engines.generic asks for it (width x width, ``dtype``)."""
    z = normals(config.seed, sample, layer, stream, width * width)
    return z.reshape(width, width).astype(dtype)
