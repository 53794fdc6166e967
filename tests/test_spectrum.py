"""The Jacobian spectrum (measure.spectrum): engines.spectrum against brute force, the graded
SVD against known singular values, the Numba engine against the oracle, the linear
Gaussian net against its finite-N moments, the summary statistics, and sweeps with a
spectrum (resume, shards + merge, xarray)."""

import numpy as np
import pytest
from conftest import assert_same_content, materialised_layers, run_shards, small_config

import vxsim
from vxsim import engines
from vxsim.analysis import jacobian_spectrum
from vxsim.engines import base, generic, graded_svd, spectrum
from vxsim.errors import ConfigError
from vxsim.store import space
from vxsim.store.hdf5 import open_results
from vxsim.store.summary import summarise_file

EPS = np.finfo(np.float64).eps


def spectrum_config(architecture="mlp", width=8, depth=12, layers=(1, 5, 12), qr_every=3, **keys):
    return small_config(
        network__architecture=architecture,
        network__width=[width],
        network__depth=depth,
        grid__sigma_w2=keys.pop("sigma_w2", [0.8, 2.0]),
        grid__sigma_b2=keys.pop("sigma_b2", [0.1]),
        monte_carlo__samples=keys.pop("samples", 1),
        measure__spectrum={"layers": list(layers), "qr_every": qr_every},
        engine__backend="numpy",
        **keys,
    )


def brute_force(config, width, sample):
    """log s of J^l by the model's tangent from every e_k at once, float64, no QR, then
    numpy.linalg.svd: {layer: (P, D)}."""
    cfg = spectrum.spectrum_config(config)
    unit = generic.Unit(cfg, width, sample)
    model = generic.model_of(cfg)
    D = cfg.state_dimension(width)
    ex = spectrum.Expanded(unit, D)
    state = model.start(unit)
    T = spectrum.identity_block(np, D, unit.P, np.float64)
    out = {}
    for layer in range(1, int(cfg.spectrum_layers[-1]) + 1):
        W = model.weights(unit, layer)
        prev = state
        state = model.step(unit, layer, prev, W)
        T = model.tangent(ex, layer, spectrum.expanded_state(ex, prev), W, T)
        if layer in cfg.spectrum_layers:
            J = spectrum.blocks(T, unit.P, D)
            with np.errstate(divide="ignore"):
                out[layer] = np.log(np.linalg.svd(J, compute_uv=False))
    return out


def assert_logs_close(got, ref, floor=1e-12):
    """log s from the product QR vs numpy.linalg.svd of the explicit J: LAPACK's SVD
    has absolute error ~ D eps s_max, i.e. ~ D eps s_max/s_i in log s_i, so each
    value is compared to 1e-12 + 100 D eps e^{log s_max - log s_i}; values below
    s_max * 1e-8 (zero singular values of a ReLU J, at rounding level) are skipped."""
    D = ref.shape[-1]
    gap = ref[..., :1] - ref
    ok = gap < np.log(1e8)
    tol = floor + 100 * D * EPS * np.exp(np.minimum(gap, 40))
    assert np.all(np.where(ok, np.abs(got - ref) <= tol, True)), np.max(np.abs(got - ref)[ok])


# ---------------------------------------------------------------- config


def test_config_spectrum_keys_and_one_line_errors():
    cfg = spectrum_config(layers=(5, 1))
    assert cfg.spectrum_layers.tolist() == [1, 5]
    assert (cfg.spectrum_precision, cfg.spectrum_qr_every) == ("float64", 3)
    assert cfg.measured == ("jvp", "spectrum")
    plain = small_config()
    assert plain.spectrum_layers.size == 0 and plain.measured == ("jvp",)
    assert "spectrum" not in plain.canonical()  # earlier files' configs unchanged
    log = small_config(network__depth=100, measure__spectrum={"log": 3, "precision": "float32"})
    assert log.spectrum_layers.tolist() == [1, 10, 100] and log.spectrum_qr_every == 1
    for bad in (
        {"layers": [0]},
        {"layers": [13]},
        {"layers": [2, 2]},
        {"layers": [2], "log": 2},
        {"every": 2},
        {"layers": [2], "qr_every": 0},
        {"layers": [2], "precision": "float16"},
    ):
        with pytest.raises(ConfigError) as err:
            small_config(network__depth=12, measure__spectrum=bad)
        assert "\n" not in str(err.value) and "measure.spectrum" in str(err.value)


# ---------------------------------------------------------------- brute force


@pytest.mark.parametrize("architecture", ["mlp", "residual", "rnn", "gru", "lstm"])
def test_every_architecture_against_brute_force_svd(architecture):
    cfg = spectrum_config(architecture, network__activation=["tanh", "relu", "linear"])
    got = spectrum.run(cfg, 8, 0)  # (grid..., S, D)
    ref = brute_force(cfg, 8, 0)
    D = cfg.state_dimension(8)
    assert got.shape[-1] == D == (16 if architecture == "lstm" else 8)
    flat = got.reshape(-1, cfg.spectrum_layers.size, D)
    for s, layer in enumerate(cfg.spectrum_layers):
        assert_logs_close(flat[:, s], ref[int(layer)])


@pytest.mark.parametrize("architecture", ["mlp", "gru"])
def test_weight_laws_reach_the_spectrum_against_brute_force(architecture):
    """The spectrum pass draws the law's matrices (engines.run splits per law): an
    orthogonal and a Student-t net against the brute-force SVD of the same weights."""
    cfg = spectrum_config(
        architecture,
        network__activation=["tanh"],
        network__init=["orthogonal", "student_t(5)"],
    )
    got = engines.run(engines.get("numpy"), cfg, 8, 0)["log_singular_value"]
    assert got.shape[:2] == (1, 2)
    for k, law in enumerate(cfg.inits):
        one = spectrum_config(architecture, network__activation=["tanh"], network__init=[law])
        ref = brute_force(one, 8, 0)
        flat = got[:, k : k + 1].reshape(-1, cfg.spectrum_layers.size, 8)
        for s, layer in enumerate(cfg.spectrum_layers):
            assert_logs_close(flat[:, s], ref[int(layer)])


@pytest.mark.parametrize("architecture", ["mlp", "rnn"])
def test_linear_orthogonal_net_is_exactly_isometric(architecture):
    """Saxe et al. 2014: with W = Q orthogonal (sigma_w2 = 1) and phi linear, J^l = Q^l ...
    Q^1 (the RNN: W^t, its input drive does not enter J), so every log s is 0. In float64
    each layer adds ~N eps of rounding to Q's orthogonality and the QR: 1e-10 leaves
    room for 200 layers x 16 x eps ~ 7e-13 by two orders of magnitude."""
    cfg = spectrum_config(
        architecture,
        width=16,
        depth=200,
        layers=(1, 50, 200),
        qr_every=4,
        network__activation=["linear"],
        network__init=["orthogonal"],
        sigma_w2=[1.0],
        sigma_b2=[0.0, 0.3],
        measure__precision="float64",
    )
    got = engines.run(engines.get("numpy"), cfg, 16, 0)["log_singular_value"]
    assert got.shape[-2:] == (3, 16) and np.all(np.isfinite(got))
    assert np.max(np.abs(got)) < 1e-10


@pytest.mark.parametrize("qr_every", [1, 5])
def test_mlp_against_the_explicit_product(qr_every):
    """J^l = W^l D^{l-1} ... D^1 W^1 formed from materialised weights (independent of the
    models' code), for qr_every = 1 and 5 (a QR between spectrum layers and not)."""
    N = 10
    cfg = spectrum_config(
        width=N, network__activation=["tanh"], sigma_w2=[1.5], layers=(3, 9), qr_every=qr_every
    )
    got = spectrum.run(cfg, N, 0).reshape(2, N)
    x1, _, _ = base.inputs(cfg, N, 0)
    Ws, bs = materialised_layers(cfg, N, 0, 1.5, 0.1)
    J, a = np.eye(N), x1
    for layer in range(1, 10):
        h = Ws[layer - 1] @ a + bs[layer - 1]
        J = Ws[layer - 1] @ J
        if layer in (3, 9):
            ref = np.log(np.linalg.svd(J, compute_uv=False))
            assert_logs_close(got[(3, 9).index(layer)], ref)
        J = (1.0 - np.tanh(h) ** 2)[:, None] * J
        a = np.tanh(h)


@pytest.mark.parametrize("architecture", ["mlp", "rnn"])
def test_rounding_bound_covers_another_qr_schedule(architecture):
    """spectrum.rounding_bound, the tolerance between two engines' spectra (the GPU's
    cuSOLVER against LAPACK), holds between two equally valid computations: QR every
    layer against every 4 (the default), tanh at width 32, 24 layers, both phases,
    where the smallest log s lie up to ~130 below the largest. It is also no looser
    than 1,000 times what is seen (so it would catch an error that exceeds rounding)."""
    layers, k, N = (1, 5, 12, 24), 4, 32
    run = {
        qr: engines.run(
            engines.get("numpy"),
            spectrum_config(
                architecture, width=N, depth=24, layers=layers, qr_every=qr,
                network__activation=["tanh"], network__init=["gaussian", "orthogonal"],
                sigma_w2=[0.5, 1.5, 3.0], sigma_b2=[0.01],
            ),
            N, 0,
        )["log_singular_value"]
        for qr in (1, k)
    }  # fmt: skip
    bound = spectrum.rounding_bound(run[1], layers, k)
    err = np.abs(run[k] - run[1])
    assert np.all(np.isfinite(err)) and np.all(err <= bound), np.max(err / bound)
    assert np.max(err / bound) > 1e-3


# ---------------------------------------------------------------- the graded SVD


def graded_blocks(seed, D=8, span=600.0):
    """K = diag(e^b) U built from 2 x 2 upper-triangular blocks e^{b1} M,
    M = [[p, q], [0, e^d r]] (d = b2 - b1 <= 0; scales up to 10^+-span), rows and
    columns permuted: its singular values are the blocks', in closed form:

        F = p^2 + q^2 + e^{2d} r^2,   det M = e^d p r,
        s1(M)^2 = F (1 + sqrt(1 - 4 x)) / 2 with x = det^2 / F^2 <= 1/4,   s2(M) = |det M| / s1(M),
        log s_i(K) = b1 + log s_i(M)   (logs throughout: nothing leaves the float range)."""
    rng = np.random.default_rng(seed)
    b = np.sort(rng.uniform(-span, span, D) * np.log(10))[::-1]
    U = np.zeros((D, D))
    logs = []
    for k in range(0, D, 2):
        b1, d = b[k], b[k + 1] - b[k]
        p, q, r = rng.standard_normal(3)
        U[k, k : k + 2] = p, q
        U[k + 1, k + 1] = r
        F = p * p + q * q + np.exp(2 * d) * r * r
        log_det = d + np.log(abs(p * r))
        x = np.exp(2 * log_det - 2 * np.log(F))
        log_s1 = 0.5 * (np.log(F) + np.log((1 + np.sqrt(1 - 4 * x)) / 2))
        logs += [b1 + log_s1, b1 + log_det - log_s1]
    rows, cols = rng.permutation(D), rng.permutation(D)
    return b[rows], U[rows][:, cols], np.sort(logs)[::-1]


def test_graded_svd_over_1e600_known_logs():
    for seed in range(4):
        b, U, logs = graded_blocks(seed)
        assert logs[0] - logs[-1] > 600 * np.log(10)  # a span far beyond float64's
        got = graded_svd.log_singular_values(b[None], U[None])[0]
        # relative accuracy per value: a few eps in s, absolute in log s (|log s| <= 1400,
        # so the logs themselves carry ~1400 eps of rounding)
        assert np.max(np.abs(got - logs)) < 1e-11


def test_graded_svd_dense_matches_lapack_where_lapack_can_see():
    """A dense (not triangular) case with a modest grading: LAPACK's SVD of the explicit
    matrix is accurate there (its absolute error D eps s_max is small against each s)."""
    rng = np.random.default_rng(3)
    b = rng.normal(0, 2, (5, 9))
    U = rng.standard_normal((5, 9, 9))
    ref = np.log(np.linalg.svd(np.exp(b)[:, :, None] * U, compute_uv=False))
    got = graded_svd.log_singular_values(b, U)
    assert_logs_close(got, ref)


def test_numba_graded_svd_against_the_numpy_version():
    """Both run the same rotation to convergence, in different pair orders, so they agree
    to rounding: relative D eps cond(U) in s (cond(U) < 1e3 here), absolute in log s."""
    numba_svd = pytest.importorskip("vxsim.engines.numba_graded_svd")
    rng = np.random.default_rng(5)
    b = np.sort(rng.normal(0, 300, (6, 16)), axis=1)[:, ::-1].copy()
    U = np.triu(rng.standard_normal((6, 16, 16))) + 4 * np.eye(16)
    for k in range(2):
        assert (
            np.max(
                np.abs(numba_svd.log_singular_values(b, U) - graded_svd.log_singular_values(b, U))
            )
            < 1e-10
        )
        b, U = graded_blocks(k)[0][None], graded_blocks(k)[1][None]


# ---------------------------------------------------------------- engines


@pytest.mark.slow  # > 1.7 s on 2 cores (Numba compiles on a cold cache; sweeps)
def test_numba_engine_against_the_oracle():
    """Weights bit-identical (both draw rng's Philox), the same model code and LAPACK QR;
    only the SVD's pair order differs: agreement to ~1e-13, asserted at 1e-10."""
    pytest.importorskip("numba")
    cfg = spectrum_config("mlp", width=12, depth=10, layers=(4, 10), sigma_w2=[1.0, 2.5])
    a = engines.run(engines.get("numpy"), cfg, 12, 0)
    b = engines.run(engines.get("numba"), cfg, 12, 0)
    assert a.keys() == b.keys() and "log_singular_value" in a
    assert a["log_singular_value"].shape == base.spectrum_shape(cfg)
    np.testing.assert_allclose(a["log_singular_value"], b["log_singular_value"], atol=1e-10)
    for name in ("log_q", "log_tangent_norm"):  # the other results are untouched
        np.testing.assert_array_equal(a[name], engines.get("numpy").run_unit(cfg, 12, 0)[name])


# ---------------------------------------------------------------- physics


def product_ginibre_moments(N, L):
    """E[(tr A/N)^2] and E[tr(A^2)/N] for A = J J^T, J a product of L Ginibre N x N with
    entry variance 1/N, by Wick's theorem on one more factor G (A' = G A G^T):

        E (tr A')^2 = (tr A)^2 + 2 tr(A^2)/N,   E tr(A'^2) = (tr A)^2/N + (1 + 1/N) tr(A^2),

    from a = b = 1 at L = 0. E[tr A/N] = 1 exactly. As N -> oo, b -> L + 1 (Fuss-Catalan)."""
    a, b = 1.0, 1.0
    for _ in range(L):
        a, b = a + 2 * b / N**2, a + (1 + 1 / N) * b
    return a, b


@pytest.mark.slow  # ~3 s on 2 cores
def test_linear_gaussian_net_fuss_catalan_finite_n():
    N, S, layers = 24, 24, (1, 4, 8)
    cfg = spectrum_config(
        width=N, depth=8, layers=layers, qr_every=4, samples=S,
        network__activation=["linear"], sigma_w2=[1.0], sigma_b2=[0.0],
    )  # fmt: skip
    x = np.stack([spectrum.run(cfg, N, s).reshape(len(layers), N) for s in range(S)])
    lam = np.exp(2 * x)
    m1, m2 = lam.mean(axis=2), (lam**2).mean(axis=2)  # (S, layers)
    stats = jacobian_spectrum.statistics(x.transpose(1, 0, 2)[None].transpose(0, 2, 1, 3))
    for k, L in enumerate(layers):
        a, b = product_ginibre_moments(N, L)
        se1 = m1[:, k].std(ddof=1) / np.sqrt(S)
        se2 = m2[:, k].std(ddof=1) / np.sqrt(S)
        assert abs(m1[:, k].mean() - 1.0) < 4 * se1  # lambda_mean = chi1^l = 1
        assert abs(m2[:, k].mean() - b) < 4 * se2
        # lambda_var_norm = E[m2/m1^2] - 1 ~ b/a - 1 (-> L as N -> oo); the ratio estimator's
        # bias is O(Var m1) = O(L/N^2): 4 SE plus 3 L/N^2
        vn, vn_se = stats["lambda_var_norm"][0, k], stats["lambda_var_norm_se"][0, k]
        assert abs(vn - (b / a - 1)) < 4 * vn_se + 3 * L / N**2
        assert abs(stats["lambda_mean"][0, k] - m1[:, k].mean()) < 1e-12


# ---------------------------------------------------------------- summary statistics


def test_statistics_against_a_direct_computation():
    rng = np.random.default_rng(2)
    x = rng.normal(0, 1.5, (2, 5, 3, 7))  # (point, sample, spectrum_layer, sv)
    x[1, :, :, 5:] = np.nan  # a smaller width's padding
    x[0, 2] = np.nan  # a diverged sample
    got = jacobian_spectrum.statistics(x)
    for p in range(2):
        for s in range(3):
            rows = [x[p, k, s][~np.isnan(x[p, k, s])] for k in range(5)]
            rows = [r for r in rows if r.size]
            lam = [np.exp(2 * r) for r in rows]
            mean = np.array([v.mean() for v in lam])
            vn = np.array([v.var() / v.mean() ** 2 for v in lam])
            smax = np.array([np.exp(r.max()) for r in rows])
            n = len(rows)
            for name, v in (("lambda_mean", mean), ("lambda_var_norm", vn), ("s_max", smax)):
                assert got[name][p, s] == pytest.approx(v.mean(), rel=1e-12)
                assert got[name + "_se"][p, s] == pytest.approx(
                    v.std(ddof=1) / np.sqrt(n), rel=1e-10
                )


def test_statistics_far_beyond_float64_are_nan_never_inf():
    x = np.full((1, 2, 1, 4), 300.0)
    x[..., 1:] = -300.0  # lambda from e^600 to e^-600: mean e^600/4 still fits
    got = jacobian_spectrum.statistics(x)
    assert np.log(got["lambda_mean"][0, 0]) == pytest.approx(600 - np.log(4), rel=1e-14)
    assert got["lambda_var_norm"][0, 0] == pytest.approx(3.0)  # one of 4 carries it all
    x += 100.0  # e^800: beyond float64
    got = jacobian_spectrum.statistics(x)
    assert np.isnan(got["lambda_mean"][0, 0]) and np.isnan(got["s_max"][0, 0]) is np.False_
    assert got["lambda_var_norm"][0, 0] == pytest.approx(3.0)
    assert not any(np.isinf(v).any() for v in got.values())


# ---------------------------------------------------------------- sweeps


def sweep_config(**keys):
    return small_config(
        network__width=[6, 8],
        network__depth=6,
        network__activation=["tanh", "relu"],
        grid__sigma_w2=[1.0, 2.0],
        grid__sigma_b2=[0.05],
        monte_carlo__samples=3,
        measure__spectrum={"layers": [2, 6]},
        engine__backend="numpy",
        **keys,
    )


@pytest.mark.slow  # > 1.7 s on 2 cores (Numba compiles on a cold cache; sweeps)
def test_sweep_file_xarray_summary_and_estimates(tmp_path):
    cfg = sweep_config()
    out = str(tmp_path / "s.h5")
    vxsim.run_sweep(cfg, out)
    with open_results(out) as opened:
        ds = opened.load()
    assert ds["spectrum_layer"].values.tolist() == [2, 6]
    assert ds["sv"].values.tolist() == list(range(8))
    x = ds["log_singular_value"]
    assert x.dims == (
        "width",
        "activation",
        "sigma_w2",
        "sigma_b2",
        "sample",
        "spectrum_layer",
        "sv",
    )
    assert np.isnan(x.sel(width=6).values[..., 6:]).all()  # padding of the smaller width
    assert np.isfinite(x.sel(width=8).values).all()
    direct = jacobian_spectrum.statistics(x.values)
    for name in jacobian_spectrum.NAMES:
        np.testing.assert_array_equal(ds[name].values, direct[name])
        assert ds[name].dims[-1] == "spectrum_layer"
    assert summarise_file(out)["spectrum"]["layers"] == [2, 6]
    extra = space.file_bytes(cfg) - space.file_bytes(small_config(
        network__width=[6, 8], network__depth=6, network__activation=["tanh", "relu"],
        grid__sigma_w2=[1.0, 2.0], grid__sigma_b2=[0.05], monte_carlo__samples=3,
    ))  # fmt: skip
    # (width, activation, sigma_w2, sigma_b2, sample, spectrum_layer, sv) float64
    assert extra == (2 * 2 * 2 * 1 * 3 * 2 * 8) * 8
    assert base.estimate_unit_bytes(cfg, 8) >= base.spectrum_unit_bytes(cfg, 8)


@pytest.mark.slow  # > 1.7 s on 2 cores (Numba compiles on a cold cache; sweeps)
def test_resume_and_shards_give_the_single_runs_file(tmp_path, monkeypatch):
    cfg = sweep_config()
    single = str(tmp_path / "single.h5")
    vxsim.run_sweep(cfg, single)
    from vxsim.engines import numpy_ref

    real, calls = numpy_ref.run_unit, []

    def dying(config, width, sample):
        calls.append(sample)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(config, width, sample)

    monkeypatch.setattr(numpy_ref, "run_unit", dying)
    resumed = str(tmp_path / "resumed.h5")
    with pytest.raises(KeyboardInterrupt):
        vxsim.run_sweep(cfg, resumed)
    monkeypatch.setattr(numpy_ref, "run_unit", real)
    vxsim.run_sweep(cfg, resumed, resume=True)
    assert_same_content(single, resumed, may_differ=("created",))
    parts = run_shards(tmp_path / "parts", cfg, 2)
    merged = str(tmp_path / "merged.h5")
    vxsim.merge(parts, merged)
    assert_same_content(single, merged, may_differ=("created", "merged_from"))


@pytest.mark.parametrize("architecture", ["mlp", "lstm"])
def test_cuda_engine_spectrum_on_its_host_stand_in(architecture):
    """The cuda engine's spectrum pass (DeviceArrays, the QR on the device's xp, the graded
    SVD on the host) on the CPU stand-in with CuPy's host/device boundary enforced: the
    oracle's numbers. The stand-in computes with NumPy and the same LAPACK, and the graded
    SVD differs only by Numba's rotation order against the NumPy oracle's: 1e-10 (the
    Numba-vs-oracle tolerance above)."""
    from vxsim.engines import cuda_gpu, cuda_host, numpy_ref

    if cuda_host.compiler() is None:
        pytest.skip("no C++ compiler for the kernels' host build")
    cfg = spectrum_config(architecture, network__activation=["tanh"], network__init=["orthogonal"])
    be = cuda_host.HostBackend(cfg.spectrum_precision, strict=True)
    got = spectrum.run(cfg, 8, 0, cuda_gpu.spectrum_arrays(cfg, be), cuda_gpu.graded_svd)
    want = spectrum.run(cfg, 8, 0, numpy_ref.spectrum_arrays(cfg), numpy_ref.graded_svd)
    assert np.all(np.isfinite(want))
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-10)
