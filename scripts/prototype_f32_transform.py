"""Speed prototype of a float32 normal transform, beside the generator's own. Not a test.

Would a transform in float32 arithmetic (8 AVX2 lanes instead of 4) make the
generator fast enough to pay for a new generator version (every number of every
file changes)? This keeps Philox and the exact float64 reduction of the log's
argument (``numba_normals._log_head``) and runs the log's and sin/cos's
polynomials, the radius's sqrt and the products in float32, with float32
coefficients of fdlibm's logf, sinf and cosf shapes (approximate: a speed
prototype, not a specified transform). It prints the largest difference from the
generator's normals and the rates of both, side by side, on 1 and 2 threads.
Its Philox and store passes are ``numba_normals._fill_chunk``'s own
(``philox_words``, ``octant_store``): only the passes between them differ, so the
rates compare those.
Measured 2026-12-04 (docs/performance.md, fifth round): 1.24-1.29x.

    PYTHONPATH=. python scripts/prototype_f32_transform.py
"""

import sys
import time
from pathlib import Path

import numba
import numpy as np
from numba import njit, prange

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vxsim import rng  # noqa: E402
from vxsim.engines import numba_normals as nn  # noqa: E402
from vxsim.engines.numba_normals import (  # noqa: E402
    _ONE,
    _S29,
    _SEVEN,
    _U0,
    CHUNK,
    _constants,
    _word_f64,
    octant_store,
    philox_words,
)

# float32 coefficients: log(1+f) series in s^2 (e_logf.c's shape), sin and cos on
# [0, pi/4] (k_sinf.c / k_cosf.c's shapes, Cephes' float values); speed only
LG = np.array([0.66666662693, 0.40000972152, 0.28498786688, 0.24279078841], dtype=np.float32)
SC = np.array(
    [
        -0.166666597127914428710938,
        0.00833307858556509017944336,
        -0.000198106907191686332225800,
        0.0416666455566883087158203,
        -0.00138873036485165357589722,
        2.44331705476e-05,
    ],
    dtype=np.float32,
)
OPT = dict(cache=False, error_model="numpy", nogil=True)


@njit(**OPT)
def fill_chunk32(out, chunk, layer, sample, stream, k0, k1, wbuf, o32, LG, SC):
    K = _constants()
    lg1, lg2, lg3, lg4 = LG[0], LG[1], LG[2], LG[3]
    s1, s2, s3, c1, c2, c3 = SC[0], SC[1], SC[2], SC[3], SC[4], SC[5]
    ln2 = np.float32(0.6931471805599453)
    b0 = chunk * CHUNK  # whole chunks only (main draws a multiple of 4 CHUNK)
    philox_words(wbuf, b0, CHUNK, layer, sample, stream, k0, k1)
    for a in (0, 2):
        for i in range(CHUNK):
            d, f, s = nn._log_head(wbuf[a, i], K)  # float64 exact reduction (its division too)
            o32[4 + a, i] = np.float32(d)
            o32[5 + a, i] = np.float32(f)
        for i in range(CHUNK):
            d = o32[4 + a, i]
            f = o32[5 + a, i]
            s = f / (np.float32(2.0) + f)
            z = s * s
            w = z * z
            r = z * (lg1 + w * lg3) + w * (lg2 + w * lg4)
            hfsq = np.float32(0.5) * f * f
            log_u = d * ln2 - ((hfsq - s * (hfsq + r)) - f)
            o32[a, i] = np.sqrt(np.float32(-2.0) * log_u)
    for b in (1, 3):
        for i in range(CHUNK):
            kb = wbuf[b, i]
            o = (kb >> _S29) & _SEVEN
            j = (kb & K.low29) ^ (K.low29 if (o & _ONE) != 0 else _U0)
            y = np.float32((_word_f64(j, K) + 0.5) * K.quarter_pi_2_m29)
            z = y * y
            sy = y + y * z * (s1 + z * (s2 + z * s3))
            cy = np.float32(1.0) - np.float32(0.5) * z + z * z * (c1 + z * (c2 + z * c3))
            o32[3 + b, i] = sy
            o32[4 + b, i] = cy
    base = 4 * b0
    octant_store(out[base : base + 4 * CHUNK], o32, wbuf)


@njit(parallel=True, cache=False)
def fill32(out, layer, sample, stream, k0, k1, threads, LG, SC):
    count = out.size
    chunks = count // (4 * CHUNK)
    lanes = max(1, min(chunks, threads))
    for lane in prange(lanes):
        words = np.empty((4, CHUNK), dtype=np.uint64)
        o32 = np.empty((8, CHUNK), dtype=np.float32)
        for c in range(lane * chunks // lanes, (lane + 1) * chunks // lanes):
            fill_chunk32(out, c, layer, sample, stream, k0, k1, words, o32, LG, SC)


def main():
    n = 4 * CHUNK * 4096  # 4M normals
    out32 = np.empty(n, dtype=np.float32)
    k0, k1 = rng.seed_key(1)
    keys = (np.uint64(1), np.uint64(0), np.uint64(0), np.uint64(k0), np.uint64(k1))
    ref = np.empty(n, dtype=np.float32)
    fill32(out32, *keys, numba.get_num_threads(), LG, SC)
    nn._fill(ref, *keys, numba.get_num_threads())
    diff = np.abs(out32 - ref)
    print(f"max |f32 - generator| = {diff.max():.2e}; relative to |z| + 1: "
          f"{np.max(diff / (np.abs(ref) + 1)):.2e}")  # fmt: skip
    print(f"mean {out32.mean():.4f}, variance {out32.var():.4f} ({n} normals)")
    for threads in range(1, numba.get_num_threads() + 1):
        numba.set_num_threads(threads)
        best = {"generator": np.inf, "float32": np.inf}
        for _ in range(5):  # alternating, the best of each
            t = time.perf_counter()
            nn._fill(ref, *keys, threads)
            best["generator"] = min(best["generator"], time.perf_counter() - t)
            t = time.perf_counter()
            fill32(out32, *keys, threads, LG, SC)
            best["float32"] = min(best["float32"], time.perf_counter() - t)
        gen, proto = (n / best[k] / 1e6 for k in ("generator", "float32"))
        print(f"{threads} thread(s): generator {gen:.0f} M normals/s, float32 "
              f"prototype {proto:.0f} M/s (x{proto / gen:.2f})")  # fmt: skip


if __name__ == "__main__":
    main()
