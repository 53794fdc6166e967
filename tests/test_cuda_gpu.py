"""The CUDA engine on a GPU (issue 5): same numbers as the CPU, TF32 within the error bars.

Runs only where ``cuda_gpu.available()`` (CuPy imports and sees a device);
elsewhere every test is skipped with the reason "no CUDA GPU". Also run without
pytest by scripts/gpu_check.py, so the tests are plain functions with plain
asserts (no fixtures, no parametrize).

* bit for bit: the device's Philox words, normals and weight matrices are
  rng's (float32 and float64), also at widths where each thread of a block
  handles several elements and N is not a multiple of 32;
* the device's activations against NumPy (1e-12 relative, as the C test; the
  absolute tolerance of erf-based ones from CUDA's erf error bound);
* the engine against the NumPy oracle on both paths, every mode, both
  precisions, divergence flags included, with the tolerances of the Numba
  engine's tests (tests/test_numba_engine.py explains them);
* TF32 GEMMs: growth rates within the error bars of float32's; every GEMM of a
  tf32 unit under TF32 and of a float32 unit under strict float32.
"""

import os
import tempfile

import numpy as np

try:
    import pytest
except ImportError:  # scripts/gpu_check.py runs these functions without pytest
    pytest = None

import cuda_probes
from oracle_cases import ACTS, ARCH_AXES, TOL, assert_same, case_config, make_config
from oracle_cases import CASES as BASE_CASES

from vxsim import activations, config, rng
from vxsim.analysis import growth
from vxsim.engines import base, cuda_generic, cuda_gpu, cuda_mlp, cuda_paths, numpy_ref

if pytest is not None:
    pytestmark = pytest.mark.skipif(
        not cuda_gpu.available(), reason=f"no CUDA GPU ({cuda_gpu.unavailable_reason()})"
    )


def backend(precision):
    return cuda_gpu.gpu_backend(precision)


# ---------------------------------------------------------------- random numbers


def test_philox_and_normals_bit_identical():
    be = backend("float64")
    for seed, layer, sample, stream in ((0, 1, 0, 0), (2**40 + 7, 999, 3, 1), (2**64 - 1, 2, 1, 2)):
        n = 200_003
        got = cuda_probes.probe_philox(be, 0, n, layer, sample, stream, seed)
        k0, k1 = rng.seed_key(seed)
        c = [np.full(n, v, dtype=np.uint64) for v in (layer, sample, stream)]
        want = np.stack(rng.philox4x32_10(np.arange(n, dtype=np.uint64), *c, k0, k1), axis=1)
        np.testing.assert_array_equal(got, want.astype(np.uint32))
        z = cuda_probes.probe_normals(be, 4 * n - 3, layer, sample, stream, seed)
        np.testing.assert_array_equal(z, rng.normals(seed, sample, layer, stream, 4 * n - 3))


def test_box_muller_edge_words_bit_identical():
    edges = {0, 1, 2, 3, 2**32 - 1, 2**32 - 2, 0x3FFFFFFF, 0x40000000, 0x7FFFFFFF, 0x80000000}
    edges |= {2**e for e in range(32)} | {2**e - 1 for e in range(1, 33)}
    edges |= {int(2**e * 1.4142135623730951) + d for e in range(1, 31) for d in (-1, 0, 1)}
    words = np.array(sorted(w for w in edges if 0 <= w < 2**32), dtype=np.uint64)
    ka = np.repeat(words, words.size)
    kb = np.tile(words, words.size)
    got = cuda_probes.probe_box_muller(backend("float64"), ka, kb)
    z0, z1 = rng.box_muller(ka, kb)
    np.testing.assert_array_equal(got[:, 0], z0)
    np.testing.assert_array_equal(got[:, 1], z1)


def test_weights_bit_identical():
    for precision in ("float32", "float64"):
        cfg = make_config("monte_carlo.seed=1099511627781", precision=precision)
        for width in (1, 7, 33, 64, 1000, 2048):
            for sample, layer in ((0, 1), (3, 200)):
                Z, xi = cuda_probes.weights(cfg, width, sample, layer, backend=backend(precision))
                assert Z.dtype == np.dtype(precision)
                np.testing.assert_array_equal(Z, base.weights(cfg, width, sample, layer))
                np.testing.assert_array_equal(xi, base.bias(cfg, width, sample, layer))
    cfg = make_config('engine.path="fused"', width=97, depth=12)
    unit = cuda_mlp.Unit(cfg, 97, 1, backend=backend("float32"))
    unit._fill(4, 5, transpose=1, bias=True)
    Zs, xis = unit.be.to_host(unit.Zbuf), unit.be.to_host(unit.xibuf)
    for li in range(5):
        np.testing.assert_array_equal(Zs[li], base.weights(cfg, 97, 1, 4 + li).T)
        np.testing.assert_array_equal(xis[li], base.bias(cfg, 97, 1, 4 + li))


# CUDA's double-precision erf is within 2 ulp (CUDA C++ Programming Guide, the
# double-precision mathematical functions' error bounds), glibc's within 1. In
# gelu = x/2 (1 + erf(x/sqrt2)) and its derivative, that absolute error is scaled
# by |x|/2, and 1 + erf rounds once more (0.5 ulp of a value < 2): at most
# |x|/2 (2 + 1 + 1) 2^-53 in all. On |x| <= 6 that is 1.3e-15, above the 1e-15
# absolute tolerance of the other activations, whose C expressions use exp, tanh
# and log1p (1-ulp functions) on values that do not cancel.
ERF_ULPS = 2 + 1 + 1


def activation_atol(act, fn, x):
    """1e-15, or for an erf-based expression the bound above over the points x."""
    if "erf(" in act.c[fn]:
        return max(1e-15, 0.5 * float(np.max(np.abs(x))) * ERF_ULPS * 2.0**-53)
    return 1e-15


def test_activations_on_the_device_match_numpy():
    for label in activations.names() + ["leaky_relu(0.2)", "elu(0.5)"]:
        act, a = activations.parse(label)
        x = np.concatenate([np.linspace(-6.0, 6.0, 1200), np.array(act.kinks(a) or [0.0])])
        for fn in ("phi", "dphi", "d2phi"):
            got = cuda_probes.probe_activation(backend("float64"), act.name, fn, x, a)
            want = np.broadcast_to(np.asarray(getattr(act, fn)(x, a), dtype=np.float64), x.shape)
            np.testing.assert_allclose(got, want, rtol=1e-12, atol=activation_atol(act, fn, x),
                                       err_msg=f"{label} {fn}")  # fmt: skip


# ---------------------------------------------------------------- same numbers as the oracle

CASES = BASE_CASES + [
    # several elements per thread (N > 256 threads), N not a multiple of 32
    ("float64", "both", "gemm", 300, 25, "{every = 1}", 0, 1),
    ("float64", "both", "fused", 300, 25, "{every = 2}", 4, 0),
    ("float32", "both", "gemm", 1000, 12, "{every = 1}", 0, 0),
]


def test_matches_oracle():
    for precision, mode, path, width, depth, record, checkpoint, sample in CASES:
        cfg = case_config(
            precision,
            mode,
            path,
            width,
            depth,
            record,
            checkpoint,
            sample,
            acts=ACTS if width < 100 else '["tanh", "relu"]',
        )
        got = cuda_gpu.run_unit(cfg, width, sample)
        want = numpy_ref.run_unit(cfg, width, sample)
        assert_same(got, want, TOL[precision], f"{precision} {mode} {path} width {width}")


def test_tiny_networks_and_chunks_match_oracle():
    for path in ("gemm", "fused"):
        for width, depth, checkpoint in ((1, 5, 0), (2, 1, 0), (3, 2, 0), (5, 7, 3), (6, 10, 20)):
            cfg = make_config(
                f"engine.checkpoint={checkpoint}", width=width, depth=depth, precision="float64"
            )
            got = cuda_gpu.run_unit(cfg, width, 0, path=path)
            assert_same(got, numpy_ref.run_unit(cfg, width, 0), TOL["float64"], f"{path} {width}")
    cfg = make_config("engine.checkpoint=5", 'engine.path="fused"', width=10, depth=23,
                      precision="float64")  # fmt: skip
    whole = cuda_gpu.run_unit(cfg, 10, 1)
    saved = cuda_paths.FUSED_ZBUF_BYTES
    cuda_paths.FUSED_ZBUF_BYTES = 3 * 10 * 10 * 8
    try:
        split = cuda_gpu.run_unit(cfg, 10, 1)
    finally:
        cuda_paths.FUSED_ZBUF_BYTES = saved
    for key, value in whole.items():
        np.testing.assert_array_equal(split[key], value, err_msg=key)


def test_divergence_flags_match_oracle():
    cfg = make_config(width=16, depth=60, sw2="[1.0, 50.0]", precision="float32")
    want = numpy_ref.run_unit(cfg, 16, 0)
    for path in ("gemm", "fused"):
        got = cuda_gpu.run_unit(cfg, 16, 0, path=path)
        np.testing.assert_array_equal(got["diverged"], want["diverged"], err_msg=path)
        assert np.any(got["diverged"][:, 1] > 0) and not np.any(got["diverged"][:, 0])
        for key in ("log_q", "corr", "log_tangent_norm", "log_grad_norm"):
            np.testing.assert_array_equal(np.isnan(got[key]), np.isnan(want[key]), err_msg=key)
            np.testing.assert_allclose(got[key][:, 0], want[key][:, 0], rtol=0,
                                       atol=TOL["float32"][key], err_msg=key)  # fmt: skip


def test_depth_2000_finite_and_deep_fused():
    cfg = make_config("measure.record={log = 30}", "grid.sigma_b2=[0.05, 0.2]", width=16,
                      depth=2000, sw2="[0.5, 1.0, 4.0]")  # fmt: skip
    for path in ("gemm", "fused"):
        out = cuda_gpu.run_unit(cfg, 16, 0, path=path)
        names = [label.split("(")[0] for label in cfg.activations]
        tanh = names.index("tanh")
        for key in ("log_q", "corr", "log_tangent_norm", "log_grad_norm"):
            assert np.all(np.isfinite(out[key][out["diverged"] == 0])), (path, key)
        assert (
            out["log_tangent_norm"][tanh, 0, 0, -1] < -100 < out["log_tangent_norm"][tanh, 2, 0, -1]
        )
        assert out["log_grad_norm"][tanh, 0, 0, 0] < -100 < out["log_grad_norm"][tanh, 2, 0, 0]


# ---------------------------------------------------------------- the other architectures


def test_architectures_match_oracle():
    """residual (its fused epilogue, engines.cuda_residual) and rnn, gru, lstm (their
    fused step kernels, engines.cuda_rnn), and each with path='generic' (engines.generic
    on CuPy arrays) against the oracle, every mode, both precisions, within the engine
    tolerances (cuBLAS and CuPy's elementwise kernels round differently from OpenBLAS
    and NumPy); and the residual net's Z^l, drawn on the device, are rng's bit for bit."""
    for arch, axis in ARCH_AXES.items():
        for precision in ("float64", "float32"):
            for mode in ("jvp", "vjp"):
                for path in (None, "generic"):
                    cfg = make_config(
                        f'network.architecture="{arch}"',
                        f"grid.{axis}=[0.5, 1.0]",
                        "engine.checkpoint=4",
                        width=48,
                        depth=20,
                        precision=precision,
                        mode=mode,
                    )
                    got = cuda_gpu.run_unit(cfg, 48, 1, path=path)
                    want = numpy_ref.run_unit(cfg, 48, 1)
                    assert_same(got, want, TOL[precision], f"{arch} {precision} {mode} {path}")
    arrays = cuda_generic.DeviceArrays(backend("float32"))
    Z = arrays.normal_matrix(cfg, 300, 2, 7, rng.STREAM_WEIGHT, np.float32)
    np.testing.assert_array_equal(arrays.to_host(Z), base.weights(cfg, 300, 2, 7))


def test_rnn_step_kernels_on_the_device():
    """The RNNs' fused step kernels (kernels/rnn.cu) on the GPU: the tied draws made on the
    device are rng's bit for bit (the same Philox and Box-Muller as the MLP's); the edge
    cases of issue 14 against the oracle: a sequence past the drive's 64-step blocks with
    checkpoints every 9 steps, gate biases of +-30 (saturated sigmoids), q_x = 0, divergence
    (Elman with sigma_w2 = 1e6, float32), width 300 (several elements per thread, a partial
    warp) and width 1 (one active thread)."""
    from vxsim.engines import cuda_rnn

    cfg = make_config('network.architecture="lstm"', width=64, depth=5, precision="float32")
    unit = cuda_rnn.LstmUnit(cfg, 64, 1, backend("float32"))
    to_host = unit.be.to_host
    for g in range(4):
        rows = slice(g * 64, (g + 1) * 64)
        want = rng.normal_matrix(cfg.seed, 1, 0, 64, stream=rng.STREAM_GATE + g)
        np.testing.assert_array_equal(to_host(unit.W)[rows], want.astype(np.float32))
        want = rng.normal_matrix(cfg.seed, 1, 0, 64, stream=rng.STREAM_GATE_INPUT + g)
        np.testing.assert_array_equal(to_host(unit.ZU)[rows], want)
    cases = [
        ("rnn", ["grid.sigma_u2=[0.5, 1.0]", "engine.checkpoint=9"], 70, 24, "float64"),
        ("lstm", ["grid.forget_bias=[-30.0, 30.0]"], 25, 16, "float64"),
        ("gru", ["grid.update_bias=[-30.0, 30.0]"], 25, 16, "float32"),
        ("gru", ["network.input_variance=0.0"], 12, 300, "float64"),
        ("lstm", ["network.input_variance=0.0"], 12, 1, "float64"),
    ]
    for arch, extra, depth, width, precision in cases:
        cfg = make_config(f'network.architecture="{arch}"', *extra, width=width, depth=depth,
                          precision=precision)  # fmt: skip
        got = cuda_gpu.run_unit(cfg, width, 0, path="steps")  # (persistent: test below)
        assert_same(got, numpy_ref.run_unit(cfg, width, 0), TOL[precision], (arch, extra))
    cfg = make_config('network.architecture="rnn"', sw2="[1.0, 1e6]", acts='["elu", "gelu"]',
                      depth=40)  # fmt: skip
    want = numpy_ref.run_unit(cfg, 10, 1)
    assert np.all(want["diverged"][:, 1] > 0)
    assert_same(cuda_gpu.run_unit(cfg, 10, 1), want, TOL["float32"])


def test_persistent_elman_and_residual_epilogue_on_the_device():
    """Elman's persistent kernels (kernels/persist.cu: W in shared memory, the 48 KiB
    opt-in beyond it) and the residual net's epilogue (kernels/residual.cu) against the
    oracle on the GPU: widths 16, 100 (a partial warp), 128 (64 KiB of float32 W) and
    160 in float64 (200 KiB: the largest opt-in), jvp+vjp with checkpoints; the
    persistent and step paths agree."""
    from vxsim.engines import cuda_paths

    for width, precision in ((16, "float32"), (100, "float32"), (128, "float32"),
                             (160, "float64")):  # fmt: skip
        cfg = make_config('network.architecture="rnn"', 'engine.path="fused"',
                          "grid.sigma_u2=[0.5, 1.0]", "engine.checkpoint=9", width=width,
                          depth=40, precision=precision)  # fmt: skip
        assert cuda_paths.choose_path(cfg, width) == "persistent"
        got = cuda_gpu.run_unit(cfg, width, 0)
        assert_same(got, numpy_ref.run_unit(cfg, width, 0), TOL[precision], (width, precision))
        steps = cuda_gpu.run_unit(cfg, width, 0, path="steps")
        assert_same(got, steps, TOL[precision], ("steps", width, precision))
    for precision in ("float32", "float64"):
        cfg = make_config('network.architecture="residual"', "grid.alpha=[0.2, 1.0]",
                          "engine.checkpoint=7", width=96, depth=30,
                          precision=precision)  # fmt: skip
        assert_same(cuda_gpu.run_unit(cfg, 96, 1), numpy_ref.run_unit(cfg, 96, 1),
                    TOL[precision], ("residual", precision))  # fmt: skip


def test_cuda_graphs_on_the_device():
    """The forward step loops, and the VJP's full segments, as captured CUDA Graphs
    replayed (engines.cuda_graphs):
    the capture succeeds (engine.cuda_graphs = "on" raises where it does not), cuBLAS is
    called inside it through ctypes with cupy.matmul's own arguments, so the graph path
    gives the step path's bits for Elman, GRU, LSTM and the residual net, float32, tf32
    and float64, jvp+vjp, two replays and a remainder (130 steps); and the oracle's
    numbers (float64)."""
    for arch in ("rnn", "gru", "lstm", "residual"):
        for precision in ("float32", "tf32", "float64"):
            be = backend(precision)
            got = {}
            for graphs in ("on", "off"):
                cfg = make_config(f'network.architecture="{arch}"', 'engine.path="gemm"',
                                  f"grid.{ARCH_AXES[arch]}=[0.5, 1.0]", "engine.checkpoint=11",
                                  f'engine.cuda_graphs="{graphs}"', width=96, depth=130,
                                  precision=precision, sw2="[0.5, 1.0]")  # fmt: skip
                before = be.captures
                got[graphs] = cuda_gpu.run_unit(cfg, 96, 1)
                captures = 2 * (graphs == "on")  # the forward body, the VJP's segments
                assert be.captures == before + captures, (arch, precision, graphs)
            for key in got["off"]:
                np.testing.assert_array_equal(got["on"][key], got["off"][key],
                                              err_msg=f"{arch} {precision} {key}")  # fmt: skip
            if precision == "float64":  # (sigma_w2 <= 1: not chaotic over 130 steps, where
                # the oracle's 1e-8 would measure the amplified rounding, not the kernels)
                assert_same(got["on"], numpy_ref.run_unit(cfg, 96, 1), TOL[precision], arch)


def test_persistent_gated_kernels_on_the_device():
    """The LSTM's and the GRU's persistent kernels (kernels/persist_lstm.cu, persist_gru.cu:
    the stacked gate matrices in shared memory, the opt-in beyond 48 KiB) against the
    oracle on the GPU: widths 16, 100 (a partial warp) and the widest that fit, in float32
    (LSTM 118, GRU 136: about 222 KiB) and float64 (83, 95); jvp+vjp with checkpoints,
    sigma_w2 <= 2 (oracle_cases.TOL). float64: 25 steps, gate biases of -30 and 30 too
    (saturated gates); float32: 16 steps. (An LSTM's rounding errors grow over the steps on either
    path, fastest with f = 1: at 40 steps the step kernels too leave the oracle's
    tolerance on the host build, float32 at width 100, float64 at width 83 with
    forget_bias 30.) The persistent and step paths agree."""
    from vxsim.engines import cuda_paths

    setup = {"float32": ("[0.5, 1.0]", 16, 5), "float64": ("[-30.0, 0.5, 30.0]", 25, 7)}
    cases = {
        "lstm": ((16, "float32"), (100, "float32"), (118, "float32"), (83, "float64")),
        "gru": ((16, "float64"), (100, "float32"), (136, "float32"), (95, "float64")),
    }
    for arch, shapes in cases.items():
        for width, precision in shapes:
            bias, depth, every = setup[precision]
            cfg = make_config(f'network.architecture="{arch}"', 'engine.path="fused"',
                              f"grid.{ARCH_AXES[arch]}={bias}", f"engine.checkpoint={every}",
                              sw2="[0.5, 1.0, 2.0]", width=width, depth=depth,
                              precision=precision)  # fmt: skip
            assert cuda_paths.choose_path(cfg, width) == "persistent"
            what = (arch, width, precision)
            got = cuda_gpu.run_unit(cfg, width, 0)
            assert_same(got, numpy_ref.run_unit(cfg, width, 0), TOL[precision], what)
            steps = cuda_gpu.run_unit(cfg, width, 0, path="steps")
            assert_same(got, steps, TOL[precision], ("steps", *what))


# ---------------------------------------------------------------- weight laws


def test_weight_laws_agree_with_numpy():
    """network.init on the device (vxsim.laws on CuPy: cuSOLVER's QR, cupyx's erf, the
    gamma sampler's masks) against NumPy's on the same float64 Z. Orthogonal: the
    device's Q is orthogonal to 10 N eps and, the sign fix making the QR unique, equals
    LAPACK's to about cond(Z) N eps (cond ~ N for a Gaussian Z; 1e-9 at N = 256);
    uniform to 4 ulp (erf's rounding), rademacher exactly, Student's t to 1e-13 (its
    draws are rng's on the host; only sqrt and the acceptance test's log run on the
    device). Then the MLP and the LSTM with orthogonal weights against the oracle."""
    from vxsim import laws
    from vxsim.engines import weights

    be = backend("float64")
    N = 256
    Z = rng.normal_matrix(0, 1, 3, N)
    for label in ("orthogonal", "uniform", "rademacher", "student_t(5)"):
        law, param = laws.parse(label)
        want = weights.draw(law, param, Z, np, 0, 1, 3, rng.STREAM_WEIGHT)
        got = be.to_host(
            weights.draw(law, param, be.xp.asarray(Z), be.xp, 0, 1, 3, rng.STREAM_WEIGHT,
                         be.to_host)
        )  # fmt: skip
        diff = float(np.abs(got - want).max())
        print(f"    law {label:13} N = {N}: max |device - numpy| = {diff:.3g}")
        if label == "orthogonal":
            Q = got / np.sqrt(N)
            assert np.abs(Q @ Q.T - np.eye(N)).max() <= 10 * N * np.finfo(float).eps
            assert diff <= 1e-9, diff
        elif label == "uniform":
            np.testing.assert_allclose(got, want, rtol=4 * np.finfo(float).eps, atol=0)
        elif label == "rademacher":
            np.testing.assert_array_equal(got, want)
        else:
            np.testing.assert_allclose(got, want, rtol=1e-13, atol=0)
    for arch in ("mlp", "lstm"):
        for precision in ("float64", "float32"):
            cfg = make_config(f'network.architecture="{arch}"', 'network.init=["orthogonal"]',
                              width=48, depth=20, precision=precision, mode="jvp")  # fmt: skip
            got = cuda_gpu.run_unit(cfg, 48, 1)
            want = numpy_ref.run_unit(cfg, 48, 1)
            assert_same(got, want, TOL[precision], f"orthogonal {arch} {precision}")


# ---------------------------------------------------------------- TF32


def _rates(precision, samples=8):
    cfg = config.load(overrides=[
        "network.width=[512]", "network.depth=120", 'network.activation=["tanh", "relu"]',
        "grid.sigma_w2=[0.8, 1.2, 1.6, 2.4, 3.2]", "grid.sigma_b2=[0.05]",
        f"monte_carlo.samples={samples}", 'measure.mode="both"', "measure.record={every = 2}",
        f'measure.precision="{precision}"', 'engine.path="gemm"', "measure.transient=10",
    ])  # fmt: skip
    runs = [cuda_gpu.run_unit(cfg, 512, s) for s in range(samples)]
    out = {}
    for mode, var in growth.MODE_VARIABLE.items():
        y = np.stack([r[var] for r in runs], axis=-2)  # (A, W, B, S, R)
        out[mode] = growth.growth_rates(y, cfg.layers, cfg.depth, cfg.transient, mode)
    return out, runs


def _compute_types_of_gemms(precision):
    """The float32 compute type CuPy held at each GEMM of a unit (a spy on matmul)."""
    import cupy

    be = backend(precision)
    seen = []
    real = be.matmul

    def spy(a, b, out):
        seen.append(cupy._core.get_compute_type(np.float32))
        real(a, b, out)

    be.matmul = spy
    try:
        cfg = config.load(overrides=[
            "network.width=[64]", "network.depth=6", f'measure.precision="{precision}"',
            'engine.path="gemm"', 'engine.backend="cuda"', 'measure.mode="both"',
        ])  # fmt: skip
        cuda_gpu.run_unit(cfg, 64, 0)
    finally:
        del be.matmul
    return seen


def test_tf32_growth_rates_match_float32():
    """TF32 GEMMs (10-bit mantissa products) against float32: the per-layer growth
    rates agree within 3 combined standard errors at every point, for both
    estimators and both modes. That TF32 was really in use is shown without
    relying on cuBLAS's choice of kernel for the engine's skinny GEMMs: every GEMM
    of a tf32 unit ran under COMPUTE_TYPE_TF32 and every GEMM of a float32 unit
    under COMPUTE_TYPE_DEFAULT (whatever CUPY_TF32 says), and on compute
    capability >= 8.0 a square 1024 GEMM, for which cuBLAS takes the tensor
    cores, differs from float32's under the same switch."""
    import cupy
    from cupy._core import _routines_linalg as linalg

    f32, _ = _rates("float32")
    before = cupy._core.get_compute_type(np.float32)
    t32, _ = _rates("tf32")
    assert cupy._core.get_compute_type(np.float32) == before  # restored after the unit
    for mode in ("jvp", "vjp"):
        for est in ("quenched", "annealed"):
            a, b = f32[mode][est], t32[mode][est]
            se = np.sqrt(f32[mode][f"{est}_se"] ** 2 + t32[mode][f"{est}_se"] ** 2)
            assert np.all(np.isfinite(a)) and np.all(np.isfinite(b)), (mode, est)
            assert np.all(np.abs(a - b) <= 3 * se), (mode, est, a, b, se)
    kinds = set(_compute_types_of_gemms("tf32"))
    assert kinds == {linalg.COMPUTE_TYPE_TF32}, kinds
    kinds = set(_compute_types_of_gemms("float32"))
    assert kinds == {linalg.COMPUTE_TYPE_DEFAULT}, kinds
    if int(cupy.cuda.Device().compute_capability) >= 80:  # "90", "100": not [0]
        rnd = np.random.default_rng(0)
        a = cupy.asarray(rnd.standard_normal((1024, 1024), dtype=np.float32))
        b = cupy.asarray(rnd.standard_normal((1024, 1024), dtype=np.float32))
        with backend("float32").gemm_precision(False):
            strict = cupy.asnumpy(a @ b)
        with backend("float32").gemm_precision(True):
            fast = cupy.asnumpy(a @ b)
        exact = cupy.asnumpy(a.astype(np.float64) @ b.astype(np.float64))
        assert np.abs(fast - exact).max() > 10 * np.abs(strict - exact).max()


# ---------------------------------------------------------------- a sweep


def test_sweep_on_the_gpu():
    import h5py

    from vxsim.sweep import run_sweep

    cfg = make_config(width=64, depth=30, mode="both")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "gpu.h5")
        run_sweep(cfg, path, backend="cuda")
        with h5py.File(path, "r") as f:
            assert f.attrs["backend"] == "cuda"
            assert f.attrs["status"] == "complete"
            log_q = f["log_q"][...]
    assert np.isfinite(log_q[..., -1]).sum() > 0
