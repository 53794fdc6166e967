"""CuPy's -ftz=true on the CUDA engine's float32 program, shown without a GPU (issue 17 item 5).

CuPy appends ``-ftz=true`` to every NVRTC compile, after the options it is
given, so the device build of the float32 program flushes single-precision
subnormals (|x| < FLT_MIN = 2^-126) to zero: results, operands, and the
float-to-double conversions that feed the float64 sums. The random numbers are
unaffected (double precision, never near its own subnormals). The host build
emulates the flush (``HostBackend(ftz=True)``: the SSE control word's FTZ and
DAZ bits around every kernel call and GEMM), so what it changes is measured
here against the NumPy oracle, which keeps IEEE gradual underflow.

The one case where it shows: tanh at sigma_b2 = 0 in the ordered phase (q* = 0),
where h shrinks geometrically and its entries pass through float32's subnormal
range on the way to 0. There

* ``log_q`` agrees with the oracle to the engine tolerance while the oracle's
  log q >= LOG_Q_FLUSH_FLOOR (~ -161, why: its comment); below it the two
  differ (an entry flushed at one layer changes the later ones) but stay in that
  deep regime, and the flushed state reaches q = 0 (log q = -inf) some layers
  earlier (here about 30 of 160 to 325);
* the tangent and the gradient, renormalised every layer, stay far from the
  subnormal range: their log norms match the oracle as with IEEE arithmetic;
* nothing is flagged as divergence, in either build.

This is the documented difference (docs/gpu.md): the kernels are not made
flush-proof, because the quantities the boundary analysis uses (the growth
rates of the tangent and gradient norms) are immune, and log q below ~-160 is
already below the precision of float32 itself (the oracle's subnormal entries
carry fewer than 23 significant bits).
"""

import cuda_probes
import numpy as np
import pytest
from oracle_cases import TOL, make_config

from vxsim import config
from vxsim.engines import base, cuda_gpu, cuda_host, numpy_ref

# Above this, every entry of h that carries weight in q is a normal float32: with
# q = |h|^2 / N, an entry below FLT_MIN is more than 2^10 below the RMS of h once
# log q >= 2 ln(FLT_MIN) + 2 ln(2^10), so it moves q by less than 2^-20 relative
# (within the float32 tolerance 2e-4) whether or not it is flushed.
FLT_MIN = float(np.finfo(np.float32).tiny)
LOG_Q_FLUSH_FLOOR = 2 * np.log(FLT_MIN) + 2 * np.log(2.0**10)  # about -160.9


def _ordered_tanh(path):
    return config.load(overrides=[
        "network.width=[8]", "network.depth=400", 'network.activation=["tanh"]',
        "grid.sigma_w2=[0.3, 0.6]", "grid.sigma_b2=[0.0]", 'measure.mode="both"',
        "measure.record={every = 5}", f'engine.path="{path}"',
    ])  # fmt: skip


def _first_neginf(log_q):
    """Per point, the first record where log q = -inf (len when never)."""
    hit = np.isneginf(log_q)
    return np.where(hit.any(axis=-1), hit.argmax(axis=-1), log_q.shape[-1])


@pytest.fixture(scope="module")
def ftz():
    if cuda_host.compiler() is None:
        pytest.skip("no C++ compiler (g++, c++, clang++ or $CXX) on PATH")
    try:
        return cuda_host.HostBackend("float32", strict=True, ftz=True)
    except RuntimeError as err:
        pytest.skip(str(err))


def test_flush_to_zero_is_emulated_and_spares_the_random_numbers(ftz):
    """The emulation is on inside (a float32 product below FLT_MIN reads 0) and off
    again afterwards (NumPy keeps gradual underflow); the generator, all double
    precision, gives rng's weights bit for bit under it."""
    with ftz.flush_to_zero():
        flushed = np.float32(1e-38) * np.float32(0.5)
    assert flushed == 0.0
    assert np.float32(1e-38) * np.float32(0.5) > 0  # restored
    cfg = make_config("monte_carlo.seed=1099511627781", precision="float32")
    for width, sample, layer in ((7, 0, 1), (33, 3, 200)):
        Z, xi = cuda_probes.weights(cfg, width, sample, layer, backend=ftz)
        np.testing.assert_array_equal(Z, base.weights(cfg, width, sample, layer))
        np.testing.assert_array_equal(xi, base.bias(cfg, width, sample, layer))


@pytest.mark.parametrize("path", ["gemm", "fused"])
def test_ordered_tanh_float32_with_flush_to_zero(ftz, path):
    cfg = _ordered_tanh(path)
    got = cuda_gpu.run_unit(cfg, 8, 0, backend=ftz)
    want = numpy_ref.run_unit(cfg, 8, 0)
    assert not np.any(got["diverged"]) and not np.any(want["diverged"])
    # tangent and gradient: renormalised, immune (the existing test's tolerance)
    for key in ("log_tangent_norm", "log_grad_norm"):
        np.testing.assert_allclose(got[key], want[key], rtol=1e-5, err_msg=key)
    lq, ref = got["log_q"], want["log_q"]
    normal = ref >= LOG_Q_FLUSH_FLOOR
    np.testing.assert_allclose(lq[normal], ref[normal], rtol=0, atol=TOL["float32"]["log_q"])
    np.testing.assert_allclose(got["corr"][normal], want["corr"][normal], rtol=0,
                               atol=TOL["float32"]["corr"])  # fmt: skip
    deep = ~normal
    # below the floor the two differ (an entry flushed at one layer changes the later
    # ones), but the flushed state stays in the same deep regime, or is 0
    assert np.all(lq[deep] < LOG_Q_FLUSH_FLOOR + 1.0)
    # both reach q* = 0; the flushed state some records earlier, never later
    first_ftz, first_ref = _first_neginf(lq), _first_neginf(ref)
    assert np.all(first_ref < lq.shape[-1])
    assert np.all(first_ftz <= first_ref) and np.any(first_ftz < first_ref), (first_ftz, first_ref)
