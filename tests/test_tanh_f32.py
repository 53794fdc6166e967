"""The Numba kernels' float32 tanh (``activations.tanh_f32``) against the exact tanh.

The reference is libm's float64 tanh (error < 1 ulp of float64, i.e. ~1e-16
relative) rounded to float32: the correctly rounded float32 tanh except where
the exact value lies within ~1e-16 relative of a float32 rounding boundary.

Every positive float32 is covered, in three ranges:

* 0 <= x < 2^-12: tanh(x) = x (1 - x^2/3 + ...), and x^2/3 < 2^-25.6 is below
  half an ulp (>= 2^-25 relative, also just below a power of two), so the
  correctly rounded tanh(x) is x itself: checked for equality;
* 2^-12 <= x < 9.0110: compared with the reference, in ulps (consecutive
  positive floats have consecutive bit patterns, so the ulp distance is the
  difference of the bit patterns);
* x >= 9.0110 (up to +inf): 1 - tanh(x) < 2 e^(-2x) < 2^-25, half an ulp
  below 1, so the correctly rounded tanh(x) is 1: checked for equality.

tanh_f32 works on |x| and restores the sign with copysign (and its small-x
branch is odd term by term), so negative inputs give exactly the negated
result: checked on every float (in the first and last range, against -x and -1).
"""

import math

import numpy as np
from numba import njit, prange

from vxsim import activations

TANH = activations.REGISTRY["tanh"]
_phi = TANH.kernel_phi
_dphi = TANH.kernel_dphi
_reg_phi = TANH.phi
_reg_dphi = TANH.dphi

SMALL = 2.0**-12  # below: tanh rounds to x
ONE = 9.0110  # above: tanh rounds to 1 (26 ln(2) / 2 = 9.01092...)


def _bits(x):
    return int(np.array(x, dtype=np.float32).view(np.uint32))


@njit(parallel=True, cache=False, error_model="numpy")
def _scan(lo, hi, mode):
    """Over float32 bit patterns lo <= b < hi: mode 0: histogram (0, 1, 2, >= 3)
    of the ulp distance to the reference; mode 1: count of tanh(+-x) != +-x;
    mode 2: count of tanh(+-x) != +-1; mode 3: count of tanh(-x) != -tanh(x).
    In blocks whose inner loops vectorise, as the engine's do."""
    block = 4096
    nblocks = (hi - lo + block - 1) // block
    out = np.zeros((nblocks, 4), dtype=np.int64)
    for c in prange(nblocks):
        b0 = lo + c * block
        m = min(block, hi - b0)
        bits = np.empty(m, dtype=np.uint32)
        for i in range(m):
            bits[i] = np.uint32(b0 + i)
        x = bits.view(np.float32)
        got = np.empty(m, dtype=np.float32)
        for i in range(m):
            got[i] = _phi(x[i], np.float32(0.0))
        if mode == 0:
            ref = np.empty(m, dtype=np.float32)
            for i in range(m):
                ref[i] = np.float32(math.tanh(np.float64(x[i])))
            gb = got.view(np.int32)
            rb = ref.view(np.int32)
            for i in range(m):
                out[c, min(abs(np.int64(gb[i]) - np.int64(rb[i])), 3)] += 1
        elif mode == 1:
            for i in range(m):
                out[c, 0] += (got[i] != x[i]) + (_phi(-x[i], np.float32(0.0)) != -x[i])
        elif mode == 2:
            for i in range(m):
                out[c, 0] += (got[i] != np.float32(1.0)) + (
                    _phi(-x[i], np.float32(0.0)) != np.float32(-1.0)
                )
        else:
            for i in range(m):
                out[c, 0] += _phi(-x[i], np.float32(0.0)) != -got[i]
    return out.sum(axis=0)


@njit(cache=False, error_model="numpy")  # as the engine's kernels
def _apply(x, out, dout):
    for i in range(x.size):
        out[i] = _phi(x[i], x.dtype.type(0.0))
        dout[i] = _dphi(x[i], x.dtype.type(0.0))


@njit(cache=False, error_model="numpy")  # as the engine's kernels
def _apply_registry(x, out, dout):
    for i in range(x.size):
        out[i] = _reg_phi(x[i], x.dtype.type(0.0))
        dout[i] = _reg_dphi(x[i], x.dtype.type(0.0))


def kernel_tanh(x):
    x = np.ascontiguousarray(x)
    out, dout = np.empty_like(x), np.empty_like(x)
    _apply(x, out, dout)
    return out, dout


def test_at_most_one_ulp_where_tanh_is_neither_x_nor_one():
    hist = _scan(_bits(SMALL), _bits(ONE), 0)
    total = hist.sum()
    assert total == _bits(ONE) - _bits(SMALL) > 1.2e8
    assert hist[2] == 0 and hist[3] == 0, hist  # never 2 ulps or more
    # and mostly the correctly rounded value: 2.3 % of these floats are an ulp off
    # (measured 2026-12-04: the rounding of the float32 polynomials and of 1 - 2/(1+E))
    assert hist[1] < 0.03 * total, hist


def test_exactly_x_below_two_to_minus_twelve():
    assert _scan(0, _bits(SMALL), 1)[0] == 0  # +0, every subnormal, up to 2^-12


def test_exactly_one_from_9_011_to_infinity():
    assert _scan(_bits(ONE), _bits(np.inf) + 1, 2)[0] == 0  # up to and including +inf


def test_odd():
    assert _scan(_bits(SMALL), _bits(ONE), 3)[0] == 0


def test_special_values():
    x = np.array([0.0, -0.0, 1e-45, -1e-45, np.finfo(np.float32).tiny, 9.02, -1e30], np.float32)
    x = np.concatenate([x, np.array([np.finfo(np.float32).max, np.inf, -np.inf, np.nan], "f4")])
    y, dy = kernel_tanh(x)
    np.testing.assert_array_equal(y[:5], x[:5])
    assert not np.signbit(y[0]) and np.signbit(y[1])  # tanh(-0) = -0
    np.testing.assert_array_equal(y[5:10], [1.0, -1.0, 1.0, 1.0, -1.0])
    assert np.isnan(y[10]) and np.isnan(dy[10])
    np.testing.assert_array_equal(dy[:5], 1.0)
    np.testing.assert_array_equal(dy[5:10], 0.0)


def test_against_numpy_float32_tanh_and_dphi():
    """NumPy's own float32 tanh (the oracle engine's) is also within an ulp of
    the correctly rounded value, so the two differ by at most 2 ulps; phi' =
    1 - tanh^2 from either agrees to a few float32 ulps of 1."""
    rng = np.random.default_rng(5)
    x = np.concatenate([rng.standard_normal(200_000) * 3, rng.uniform(-10, 10, 100_000)])
    x = x.astype(np.float32)
    y, dy = kernel_tanh(x)
    ref = np.tanh(x)
    ulps = np.abs(y.view(np.int32).astype(np.int64) - ref.view(np.int32))
    assert ulps.max() <= 2
    np.testing.assert_allclose(dy, TANH.dphi(x, np.float32(0.0)), rtol=0, atol=5e-7)


def test_float64_unchanged():
    """In float64 runs the kernels keep libm's tanh: the same bits as the
    registry's phi and phi' compiled by Numba (what they used before), and as
    math.tanh."""
    x = np.random.default_rng(6).standard_normal(10_000) * 4
    y, dy = kernel_tanh(x)
    ref, dref = np.empty_like(x), np.empty_like(x)
    _apply_registry(x, ref, dref)
    np.testing.assert_array_equal(y, ref)
    np.testing.assert_array_equal(dy, dref)
    np.testing.assert_array_equal(y, [math.tanh(v) for v in x])


def test_kernel_loop_vectorises_without_calls():
    """The point of tanh_f32: a loop applying phi and phi' in float32 compiles
    to vector arithmetic, with no call to libm's tanh left in it."""
    kernel_tanh(np.zeros(64, dtype=np.float32))
    sig = [s for s in _apply.signatures if str(s[0].dtype) == "float32"][0]
    ir = _apply.inspect_llvm(sig)
    assert "@tanhf" not in ir and "@tanh(" not in ir
    assert "x float>" in ir and "x double>" not in ir  # float32 lanes throughout
