"""Counter-based normals on all CPU cores, bit-identical to ``rng.normals``.

Philox4x32-10 from ``rng`` and the normal transform (rng's module docstring)
written here with the *same* arithmetic as ``rng.log_uniform``,
``rng.sin_cos_turn`` and ``rng.box_muller`` (same operations in the same
order; the exact power-of-two scaling done with exponent bits instead of
``ldexp``, word-to-float conversions with the 2^52 trick, rng's arithmetic
selects as true selects), so that LLVM vectorises it; the tests check it bit
for bit against ``rng.normals``. Kernels that produce random numbers never use
fast-math flags.

How it is made fast (measured on the 2-core AMD EPYC, AVX2): a chunk of
``CHUNK`` Philox blocks goes through six structure-of-arrays passes (Philox;
per radius row the log's reduction with its division, then its polynomial;
per turn row the sin/cos polynomials with the radius's sqrt; the octant and the
stores: see ``_fill_chunk``). Each pass is a short dependency chain, so the core
overlaps many iterations; the earlier three passes (Philox, radius, turn), each
one long chain with four interleaved copies, were latency-bound and 15-20 %
slower with the same bits (2026-12-04, one thread: 270 against 314 M
normals/s). The constants are read once per chunk through ``_opaque`` (Numba's
large code model otherwise reloads each through an absolute address inside the
loop).

The Numba engine's kernels draw the MLP's weights with ``fill_share`` (a lane's
share of Z^l; every lane draws its share, on both paths); ``normal_matrix`` is
the plain parallel fill that the other architectures (engines.generic) use for
their matrices.
"""

from typing import NamedTuple

import numba
import numpy as np
from llvmlite import binding as llvm
from llvmlite import ir
from numba import njit, prange
from numba.core import types
from numba.extending import intrinsic

from vxsim import rng
from vxsim.engines.numba_types import OPT as _OPT

CHUNK = 256  # Philox blocks (4 normals each) per task of the normal generator
SCRATCH_ROWS = 8  # float64 rows of _fill_chunk's per-thread scratch
_U0 = np.uint64(0)
_MASK32 = rng.MASK32
_MANT = np.uint64(0x000FFFFFFFFFFFFF)
_EXP_ONE = np.uint64(0x3FF0000000000000)
_EXP_MASK = np.uint64(0x7FF)
_TWO_52_BITS = np.uint64(0x4330000000000000)  # the bits of 2^52
_S52 = np.uint64(52)
_S29 = rng._TWENTY_NINE
_LOW29 = rng._LOW29
_ONE = rng._ONE
_TWO = rng._TWO
_FOUR = np.uint64(4)
_SEVEN = np.uint64(7)
_STREAM_WEIGHT = np.uint64(rng.STREAM_WEIGHT)
_STREAM_BIAS = np.uint64(rng.STREAM_BIAS)


# ---------------------------------------------------------------- random numbers

# rng's own Philox, inlined at Numba-IR level: called out of line (as a
# register_jitable function is here), the block loop does not vectorise.
_philox = njit(inline="always", error_model="numpy")(rng.philox4x32_10)


@intrinsic
def _f64_bits(typingctx, x):
    """The IEEE 754 bits of a float64, as uint64."""

    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], ir.IntType(64))

    return types.uint64(types.float64), codegen


@intrinsic
def _bits_f64(typingctx, x):
    """The float64 with these IEEE 754 bits."""

    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], ir.DoubleType())

    return types.float64(types.uint64), codegen


@intrinsic
def _opaque(typingctx, x):
    """x itself, hidden from the optimiser (an empty inline-asm statement).

    Numba compiles with LLVM's large code model: a floating-point constant inside
    a vectorised loop is reloaded each iteration through an absolute address held
    in a general-purpose register, and with ~25 constants the loop spends more
    time shuffling those registers than computing (measured: 1.3x slower). Read
    once through ``_opaque`` before the loops, the constants become ordinary
    values that live in vector registers or on the stack.
    """

    def codegen(context, builder, sig, args):
        ty = args[0].type
        register = _FP_REGISTER if isinstance(ty, ir.DoubleType) else "r"
        if register is None:  # an unknown target: plain values (correct, maybe slower)
            return args[0]
        fnty = ir.FunctionType(ty, [ty])
        return builder.asm(fnty, "", f"={register},0", [args[0]], side_effect=False)

    return x(x), codegen


# The inline-asm register class of a float64 on this machine (``_opaque``).
_FP_REGISTER = {"x86_64": "x", "aarch64": "w", "arm64": "w"}.get(
    llvm.get_process_triple().split("-")[0]
)


class Constants(NamedTuple):
    """The transform's constants as run-time values (see ``_opaque``)."""

    two_52: float
    sqrt2: float
    ln2_hi: float
    ln2_lo: float
    lg1: float
    lg2: float
    lg3: float
    lg4: float
    lg5: float
    lg6: float
    lg7: float
    quarter_pi_2_m29: float
    s1: float
    s2: float
    s3: float
    s4: float
    s5: float
    s6: float
    c1: float
    c2: float
    c3: float
    c4: float
    c5: float
    c6: float
    two_52_bits: np.uint64
    mask32: np.uint64
    exp_mask: np.uint64
    mant: np.uint64
    exp_one: np.uint64
    low29: np.uint64


@njit(inline="always", **_OPT)
def _constants():
    """rng's constants, read once (``_opaque``) for the loops of one chunk."""
    return Constants(
        _opaque(rng.TWO_52), _opaque(rng.SQRT2), _opaque(rng.LN2_HI), _opaque(rng.LN2_LO),
        _opaque(rng.LG1), _opaque(rng.LG2), _opaque(rng.LG3), _opaque(rng.LG4),
        _opaque(rng.LG5), _opaque(rng.LG6), _opaque(rng.LG7), _opaque(rng.QUARTER_PI_2_M29),
        _opaque(rng.S1), _opaque(rng.S2), _opaque(rng.S3), _opaque(rng.S4), _opaque(rng.S5),
        _opaque(rng.S6), _opaque(rng.C1), _opaque(rng.C2), _opaque(rng.C3), _opaque(rng.C4),
        _opaque(rng.C5), _opaque(rng.C6), _opaque(_TWO_52_BITS), _opaque(_MASK32),
        _opaque(_EXP_MASK), _opaque(_MANT), _opaque(_EXP_ONE), _opaque(_LOW29),
    )  # fmt: skip


@njit(inline="always", **_OPT)
def _word_f64(k, K):
    """A word k < 2^52 as float64, exactly: the bits of 2^52 + k, minus 2^52 (AVX2
    has no 64-bit integer conversion; this is two vector instructions)."""
    return _bits_f64(K.two_52_bits | k) - K.two_52


@njit(inline="always", **_OPT)
def _log_head(ka, K):
    """The reduction of rng.log_uniform for u = (ka + 1/2) 2^-32: (d, f, s), the same
    arithmetic.

    x = ka + 1/2 = m 2^e with m in [1, 2) and e read off the bits (exactly what
    ldexp(x, -e) gives, e = bit_length(ka) - 1), the same fold to [1/sqrt2, sqrt2]
    (a select); d = e - 32 (+1 where folded), f = m - 1, s = f / (2 + f).
    """
    bits = _f64_bits(_word_f64(ka & K.mask32, K) + 0.5)
    d = _word_f64((bits >> _S52) & K.exp_mask, K) - (1023.0 + 32.0)
    m = _bits_f64((bits & K.mant) | K.exp_one)
    big = m > K.sqrt2
    m = m * 0.5 if big else m
    d = d + 1.0 if big else d
    f = m - 1.0
    return d, f, f / (2.0 + f)


@njit(inline="always", **_OPT)
def _minus_two_log(d, f, s, K):
    """-2 log u from ``_log_head``'s (d, f, s): rng.log_uniform's fdlibm polynomial,
    in the same order, times -2 (what rng.box_muller takes the sqrt of)."""
    hfsq = (0.5 * f) * f
    z = s * s
    w = z * z
    t1 = w * (K.lg2 + w * (K.lg4 + w * K.lg6))
    t2 = z * (K.lg1 + w * (K.lg3 + w * (K.lg5 + w * K.lg7)))
    log_u = d * K.ln2_hi - ((hfsq - (s * (hfsq + (t2 + t1)) + d * K.ln2_lo)) - f)
    return -2.0 * log_u


@njit(inline="always", **_OPT)
def _sin_cos_reduced(kb, K):
    """(sin y, cos y) of the angle y in (0, pi/4) that rng.sin_cos_turn reduces the
    word kb to (an exact octant reduction), by fdlibm's kernels: the same arithmetic."""
    o = (kb >> _S29) & _SEVEN
    j = (kb & K.low29) ^ (K.low29 if (o & _ONE) != 0 else _U0)
    y = (_word_f64(j, K) + 0.5) * K.quarter_pi_2_m29
    z = y * y
    w = z * z
    rs = (K.s2 + z * (K.s3 + z * K.s4)) + (z * w) * (K.s5 + z * K.s6)
    s = y + (z * y) * (K.s1 + z * rs)
    rc = z * (K.c1 + z * (K.c2 + z * K.c3)) + (w * w) * (K.c4 + z * (K.c5 + z * K.c6))
    hz = 0.5 * z
    h = 1.0 - hz
    c = h + (((1.0 - h) - hz) + z * rc)
    return s, c


@njit(inline="always", **_OPT)
def _octant(r, s, c, kb):
    """(r cos theta, r sin theta) from the reduced (s, c) = (sin y, cos y): kb's octant
    swaps them and sets the signs, as rng.sin_cos_turn's arithmetic selects do (exact:
    a number times 1 plus another times 0, signs +-1, so true selects give the same bits)."""
    o = (kb >> _S29) & _SEVEN
    swap = ((o + _ONE) & _TWO) != 0
    sin_t = c if swap else s
    cos_t = s if swap else c
    sin_t = -sin_t if (o & _FOUR) != 0 else sin_t
    cos_t = -cos_t if ((o + _TWO) & _FOUR) != 0 else cos_t
    return r * cos_t, r * sin_t


@njit(**_OPT)
def _box_muller(ka, kb):
    """rng.box_muller, same arithmetic: (r cos theta, r sin theta) from two 32-bit words."""
    K = _constants()
    d, f, s = _log_head(ka, K)
    sy, cy = _sin_cos_reduced(kb, K)
    return _octant(np.sqrt(_minus_two_log(d, f, s, K)), sy, cy, kb)


@njit(inline="always", **_OPT)
def philox_words(wbuf, b0, n, layer, sample, stream, k0, k1):
    """Pass 1 of ``_fill_chunk``: the words of Philox blocks b0 .. b0 + n - 1 of the
    stream into ``wbuf[0:4, :n]``."""
    for i in range(n):
        w0, w1, w2, w3 = _philox(np.uint64(b0 + i), layer, sample, stream, k0, k1)
        wbuf[0, i] = w0
        wbuf[1, i] = w1
        wbuf[2, i] = w2
        wbuf[3, i] = w3


@njit(inline="always", **_OPT)
def octant_store(dst, rows, wbuf):
    """Pass 4 of ``_fill_chunk`` for a whole chunk: the normals 4 i .. 4 i + 3 of block i
    into ``dst`` (4 CHUNK long), from r in ``rows[0]``, ``rows[2]``, (sin y, cos y) in
    rows 4-5 and 6-7, and the octants of the words ``wbuf[1]``, ``wbuf[3]``."""
    for i in range(CHUNK):
        z0, z1 = _octant(rows[0, i], rows[4, i], rows[5, i], wbuf[1, i])
        z2, z3 = _octant(rows[2, i], rows[6, i], rows[7, i], wbuf[3, i])
        dst[4 * i] = z0
        dst[4 * i + 1] = z1
        dst[4 * i + 2] = z2
        dst[4 * i + 3] = z3


@njit(**_OPT)
def _fill_chunk(out, chunk, count, layer, sample, stream, k0, k1, wbuf, obuf):
    """Normals ``4 chunk CHUNK ...`` of a stream into ``out[4 chunk CHUNK ...]`` (the
    first ``count`` of ``out``; cast to its dtype, round to nearest).

    Structure-of-arrays passes over the chunk's Philox blocks (rounded up to a
    multiple of 8; the extra words are finite garbage, never stored), each a short
    chain that LLVM vectorises and the core overlaps across iterations (one pass
    per stage with a long chain ran at ~0.85 of this speed, latency-bound):

    1. Philox words into ``wbuf`` (4, CHUNK) uint64;
    2. per radius row a = 0, 2: d, f, s of its words into ``obuf`` rows 4 + a,
       5 + a, a (the division), then -2 log u into row a (the polynomial);
    3. per turn row b = 1, 3: sin y, cos y into rows 3 + b, 4 + b (the
       polynomials), and r = sqrt(row b - 1) in place (the sqrt shares the
       divider with nothing in this pass);
    4. the octant's swap and signs times r, stored straight into ``out`` for a
       whole chunk (LLVM interleaves the four lanes), through ``obuf`` rows 0-3
       for the last, partial one.

    ``obuf``: the calling thread's (SCRATCH_ROWS, CHUNK) float64 scratch.
    """
    K = _constants()
    b0 = chunk * CHUNK
    nb = min(CHUNK, (count + 3) // 4 - b0)
    n8 = (nb + 7) // 8 * 8
    philox_words(wbuf, b0, n8, layer, sample, stream, k0, k1)
    for a in (0, 2):
        for i in range(n8):
            d, f, s = _log_head(wbuf[a, i], K)
            obuf[4 + a, i] = d
            obuf[5 + a, i] = f
            obuf[a, i] = s
        for i in range(n8):
            obuf[a, i] = _minus_two_log(obuf[4 + a, i], obuf[5 + a, i], obuf[a, i], K)
    for b in (1, 3):
        for i in range(n8):
            sy, cy = _sin_cos_reduced(wbuf[b, i], K)
            obuf[3 + b, i] = sy
            obuf[4 + b, i] = cy
            obuf[b - 1, i] = np.sqrt(obuf[b - 1, i])
    base = 4 * b0
    if nb == CHUNK and base + 4 * CHUNK <= count:
        octant_store(out[base : base + 4 * CHUNK], obuf, wbuf)
        return
    for i in range(n8):
        z0, z1 = _octant(obuf[0, i], obuf[4, i], obuf[5, i], wbuf[1, i])
        z2, z3 = _octant(obuf[2, i], obuf[6, i], obuf[7, i], wbuf[3, i])
        obuf[0, i] = z0
        obuf[1, i] = z1
        obuf[2, i] = z2
        obuf[3, i] = z3
    for k in range(count - base):
        out[base + k] = obuf[k % 4, k // 4]


def scratch(lanes):
    """Per-lane scratch of ``_fill_chunk``: words (lanes, 4, CHUNK) uint64 and values
    (lanes, SCRATCH_ROWS, CHUNK) float64."""
    return (
        np.zeros((lanes, 4, CHUNK), dtype=np.uint64),
        np.zeros((lanes, SCRATCH_ROWS, CHUNK), dtype=np.float64),
    )


@njit(**_OPT)
def fill_share(Z, xi, nxt, nxt_bias, keys, wbuf, obuf, lane, lanes):
    """Lane ``lane``'s share (of ``lanes``) of Z^{nxt}, and of xi^{nxt} into ``xi`` where
    ``nxt_bias``; nothing if nxt == 0."""
    if nxt <= 0:
        return
    n = Z.shape[0]
    zflat = Z.reshape(n * n)
    lay = np.uint64(nxt)
    nch = ((n * n + 3) // 4 + CHUNK - 1) // CHUNK
    for c in range(lane * nch // lanes, (lane + 1) * nch // lanes):
        _fill_chunk(zflat, c, n * n, lay, keys[0], _STREAM_WEIGHT, keys[1], keys[2], wbuf, obuf)
    if nxt_bias:
        nch = ((n + 3) // 4 + CHUNK - 1) // CHUNK
        for c in range(lane * nch // lanes, (lane + 1) * nch // lanes):
            _fill_chunk(xi, c, n, lay, keys[0], _STREAM_BIAS, keys[1], keys[2], wbuf, obuf)


@njit(parallel=True, cache=True)
def _fill(out, layer, sample, stream, k0, k1, threads):
    """out[i] = normal i of the stream (rounded to out's dtype), chunks shared by the threads."""
    count = out.size
    chunks = ((count + 3) // 4 + CHUNK - 1) // CHUNK
    lanes = max(1, min(chunks, threads))
    for lane in prange(lanes):
        words = np.empty((4, CHUNK), dtype=np.uint64)
        values = np.empty((SCRATCH_ROWS, CHUNK))
        for c in range(lane * chunks // lanes, (lane + 1) * chunks // lanes):
            _fill_chunk(out, c, count, layer, sample, stream, k0, k1, words, values)


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
