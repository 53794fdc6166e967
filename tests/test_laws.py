"""Weight laws (``network.init``, vxsim.laws): the draws, the config, the engines, the files.

Tolerances of the statistical checks are 5 standard errors of the estimator (a
false alarm about once in 1.7 million runs), the standard error from the law's
own higher moments; the draws are deterministic (counter-based), so a check that
passes passes every time on every machine.
"""

import dataclasses
import math

import h5py
import numpy as np
import pytest
from conftest import assert_same_content, run_shards, small_config
from scipy import special, stats

import vxsim
from vxsim import config as config_mod
from vxsim import engines, laws, rng
from vxsim.engines import base, generic, numba_cpu, numba_normals, numpy_ref, weights
from vxsim.errors import ConfigError
from vxsim.store.summary import boundary_rows, summarise_file

EPS = np.finfo(np.float64).eps
ARCHS = ("mlp", "residual", "rnn", "gru", "lstm")
ALL_LAWS = ("gaussian", "orthogonal", "uniform", "rademacher", "student_t(5)")


def _draw(label, width, sample=0, layer=1, stream=rng.STREAM_WEIGHT, seed=0):
    """The law's float64 matrix of (seed, sample, layer, stream), as the NumPy engine draws it."""
    law, param = laws.parse(label)
    Z = rng.normal_matrix(seed, sample, layer, width, stream=stream)
    return weights.draw(law, param, Z, np, seed, sample, layer, stream)


# --- the registry and labels -----------------------------------------------------------


def test_registry_labels_and_theory_records():
    assert laws.names() == ("gaussian", "orthogonal", "uniform", "rademacher", "student_t")
    law, nu = laws.parse(" student_t(5.0) ")
    assert (law.name, nu, laws.label(law, nu)) == ("student_t", 5.0, "student_t(5)")
    assert laws.label(*laws.parse("orthogonal")) == "orthogonal"
    for name in laws.names():
        law = laws.get(name)
        assert law.variance == 1.0
        assert (law.s1, law.free_law) == (
            (0.0, "haar") if name == "orthogonal" else (-1.0, "marchenko_pastur")
        )
    for bad, why in [
        ("xavier", "unknown weight law 'xavier'; allowed: gaussian, orthogonal, uniform, "
         "rademacher, student_t(nu)"),
        ("student_t", "needs its parameter nu"),
        ("student_t(2)", "nu must be > 2"),
        ("student_t(abc)", "bad weight-law parameter"),
        ("student_t(inf)", "must be finite"),
        ("orthogonal(3)", "takes no parameter"),
    ]:  # fmt: skip
        with pytest.raises(ValueError, match=f"^.*{__import__('re').escape(why)}"):
            laws.parse(bad)


def test_gaussian_is_z_itself():
    Z = rng.normal_matrix(3, 1, 2, 9)
    np.testing.assert_array_equal(_draw("gaussian", 9, sample=1, layer=2, seed=3), Z)


# --- orthogonal ------------------------------------------------------------------------


@pytest.mark.parametrize("width", [1, 2, 7, 64, 257])
def test_orthogonal_rows_and_columns_to_rounding(width):
    """Q = Z / sqrt(N) from Householder QR: ||Q Q^T - I||_max and ||Q^T Q - I||_max
    <= 10 N eps (Householder QR is backward stable: the loss of orthogonality is
    O(N eps) with a small constant; 10 N covers it at every N here)."""
    Q = _draw("orthogonal", width) / math.sqrt(width)
    eye = np.eye(width)
    bound = 10 * width * EPS
    assert np.abs(Q @ Q.T - eye).max() <= bound
    assert np.abs(Q.T @ Q - eye).max() <= bound
    assert Q.flags.c_contiguous


def _sign_fixed_r_diagonal(width, sample):
    """diag R of Z = Q R with Q the law's matrix: R = Q^T Z, positive diagonal (Haar)."""
    Z = rng.normal_matrix(0, sample, 1, width)
    Q = _draw("orthogonal", width, sample=sample) / math.sqrt(width)
    return np.diag(Q.T @ Z)


def test_orthogonal_sign_fix_makes_it_haar():
    """Haar O(N): E[tr Q] = 0 with Var(tr Q) = 1 (N >= 2), and Q_11^2 ~ Beta(1/2, (N-1)/2)
    with mean 1/N and variance 2 (N-1) / (N^2 (N+2)). Over S = 4000 draws of N = 4 the
    means must be within 5 standard errors. The same statistics of LAPACK's Q without
    the sign fix miss E[tr Q] = 0 by far (the test can fail)."""
    N, S = 4, 4000
    traces, q11, raw_traces = [], [], []
    for s in range(S):
        Q = _draw("orthogonal", N, sample=s) / math.sqrt(N)
        traces.append(np.trace(Q))
        q11.append(Q[0, 0] ** 2)
        raw_traces.append(np.trace(np.linalg.qr(rng.normal_matrix(0, s, 1, N))[0]))
        if s < 50:
            assert np.all(_sign_fixed_r_diagonal(N, s) > 0)
    se_trace = 1 / math.sqrt(S)
    assert abs(np.mean(traces)) < 5 * se_trace
    var_q11 = 2 * (N - 1) / (N**2 * (N + 2))
    assert abs(np.mean(q11) - 1 / N) < 5 * math.sqrt(var_q11 / S)
    assert abs(np.mean(raw_traces)) > 20 * se_trace  # without the fix: not Haar


def test_orthogonal_weights_keep_norms():
    """W = sqrt(sigma_w2 / N) Z: W W^T = sigma_w2 I, so |W x| = sqrt(sigma_w2) |x|."""
    W = math.sqrt(2.0 / 50) * _draw("orthogonal", 50)
    x = rng.normals(1, 0, 0, rng.STREAM_INPUT, 50)
    assert abs(np.linalg.norm(W @ x) / np.linalg.norm(x) - math.sqrt(2.0)) < 1e-13


# --- the elementwise laws --------------------------------------------------------------


def _t_moment(nu, k):
    """E[T^(2k)] of Student's t(nu) scaled to unit variance (finite for 2k < nu)."""
    raw = (
        nu**k
        * math.gamma(k + 0.5)
        * math.gamma(nu / 2 - k)
        / (math.sqrt(math.pi) * math.gamma(nu / 2))
    )
    return raw * ((nu - 2) / nu) ** k


# label -> (E z^4, E z^8, CDF of the law)
ELEMENTWISE = {
    "uniform": (9 / 5, 9.0, stats.uniform(loc=-math.sqrt(3), scale=2 * math.sqrt(3)).cdf),
    "rademacher": (1.0, 1.0, None),
    "student_t(10)": (4.0, _t_moment(10, 4), stats.t(10, scale=math.sqrt(8 / 10)).cdf),
    "student_t(5)": (9.0, math.inf, stats.t(5, scale=math.sqrt(3 / 5)).cdf),
    "student_t(2.5)": (math.inf, math.inf, stats.t(2.5, scale=math.sqrt(0.5 / 2.5)).cdf),
}


@pytest.mark.parametrize("label", sorted(ELEMENTWISE))
def test_elementwise_law_moments_and_distribution(label):
    """n = 300^2 entries: mean 0 and variance 1 within 5 SE (SE from E z^4), E z^4 (the
    kurtosis: rademacher 1, uniform 9/5, t(nu) 3 + 6/(nu - 4)) within 5 SE where E z^8
    is finite, and a Kolmogorov-Smirnov test at p > 1e-4 against the exact law. The
    expected kurtosis is the record's own (``Law.kurtosis``)."""
    mu4, mu8, cdf = ELEMENTWISE[label]
    law, param = laws.parse(label)
    assert law.kurtosis(param) == pytest.approx(mu4)
    z = _draw(label, 300).ravel()
    n = z.size
    assert abs(z.mean()) < 5 / math.sqrt(n)
    if math.isfinite(mu4):
        assert abs(np.mean(z * z) - 1) <= 5 * math.sqrt((mu4 - 1) / n) + 1e-12  # +: rounding
    if math.isfinite(mu8):
        assert abs(np.mean(z**4) - mu4) < 5 * math.sqrt((mu8 - mu4**2) / n) + 1e-12
    if cdf is None:  # rademacher: exactly +-1, each half the time within 5 SE
        assert set(np.unique(z)) == {-1.0, 1.0}
        assert abs(np.mean(z > 0) - 0.5) < 5 * 0.5 / math.sqrt(n)
    else:
        assert stats.kstest(z, cdf).pvalue > 1e-4


def test_uniform_is_erf_of_z():
    Z = rng.normal_matrix(0, 0, 1, 20)
    want = math.sqrt(3) * special.erf(Z / math.sqrt(2))
    # Z * (1/sqrt 2) and Z / sqrt 2 differ by an ulp, which erf (condition number
    # x erf'(x) / erf(x) <= 1) passes on; erf's own rounding and the product add ~2 ulp.
    np.testing.assert_allclose(_draw("uniform", 20), want, rtol=4 * EPS, atol=0)


def test_gamma_sampler_rejects_rarely_and_exhausts_to_the_mean(monkeypatch):
    """Marsaglia-Tsang for a = nu/2: the first attempt takes >= 95 % of the entries
    (rejection <= 0.049 for a >= 1, the bound the docstring's tail estimate uses), and
    an entry still pending after the last attempt takes V = nu (Z sqrt((nu-2)/nu))."""
    aux = weights.aux_draws(0, 0, 1, rng.STREAM_WEIGHT)
    n = 40000
    for a in (1.05, 2.5, 10.0):
        first = laws.gamma_marsaglia_tsang(a, n, np, aux)
        monkeypatch.setattr(laws, "GAMMA_ATTEMPTS", 1)
        once = laws.gamma_marsaglia_tsang(a, n, np, aux)
        monkeypatch.undo()
        pending = np.mean(once == a)
        assert pending <= 0.049 + 5 * math.sqrt(0.049 / n)
        assert np.mean(first == a) == 0  # 16 attempts: none pending
        assert stats.kstest(first, stats.gamma(a).cdf).pvalue > 1e-4
    monkeypatch.setattr(laws, "GAMMA_ATTEMPTS", 0)
    Z = rng.normal_matrix(0, 0, 1, 6)
    got = _draw("student_t(5)", 6)
    np.testing.assert_allclose(got, Z * math.sqrt(3 / 5), rtol=EPS)


def test_aux_draws_are_addressed_by_entry_not_by_batch():
    """aux(k, index) depends on each entry's index alone: a subset's draws are the full
    set's at those entries (the rejection loop asks only for the pending entries), and
    attempts and source streams are independent streams."""
    aux = weights.aux_draws(7, 2, 3, rng.STREAM_GATE + 1)
    idx = np.arange(1001)
    x, lu = aux(0, idx)
    sub = np.array([5, 6, 999, 0])
    xs, lus = aux(0, sub)
    np.testing.assert_array_equal(xs, x[sub])
    np.testing.assert_array_equal(lus, lu[sub])
    assert not np.any(aux(1, idx)[0] == x)
    assert not np.any(weights.aux_draws(7, 2, 3, rng.STREAM_GATE)(0, idx)[0] == x)
    assert np.all(lu < 0) and stats.kstest(x, "norm").pvalue > 1e-4
    # the high block bit (entries >= 2^33, widths > 92681) moves to the stream word
    far = np.array([2**33, 2**33 + 1], dtype=np.int64)
    assert not np.any(np.isin(aux(0, far)[0], aux(0, far - 2**33)[0]))


def test_which_streams_follow_the_law():
    assert weights.law_stream(rng.STREAM_WEIGHT)
    assert all(weights.law_stream(rng.STREAM_GATE + g) for g in range(4))
    for s in (rng.STREAM_BIAS, rng.STREAM_INPUT, rng.STREAM_SEQUENCE, rng.STREAM_GATE_INPUT):
        assert not weights.law_stream(s)


# --- config ----------------------------------------------------------------------------


def test_config_without_init_has_no_init_axis():
    cfg = small_config()
    assert cfg.inits == ("gaussian",) and not cfg.init_axis and cfg.gaussian_weights
    assert cfg.grid_dims == ("activation", "sigma_w2", "sigma_b2")
    assert "init" not in cfg.canonical() and "init" not in config_mod.default_raw()["network"]


def test_config_init_axis():
    cfg = small_config(network__init=["gaussian", "student_t(5.0)", "orthogonal"])
    assert cfg.inits == ("gaussian", "student_t(5)", "orthogonal") and cfg.init_axis
    assert cfg.grid_dims == ("activation", "init", "sigma_w2", "sigma_b2")
    assert cfg.grid_shape == (2, 3, 15, 2) and not cfg.gaussian_weights
    assert cfg.edge_dims == ("activation", "init", "sigma_b2")
    one = small_config(network__init="uniform")
    assert one.inits == ("uniform",) and one.grid_shape == (2, 1, 15, 2)
    rnn = small_config(network__architecture="rnn", network__init=["orthogonal"])
    assert rnn.grid_dims == ("activation", "init", "sigma_w2", "sigma_b2", "sigma_u2")


@pytest.mark.parametrize(
    "value, message",
    [
        ("xavier", "network.init: unknown weight law 'xavier'; allowed: gaussian, orthogonal"),
        (["student_t(2)"], "network.init: weight law 'student_t(2)': nu must be > 2"),
        (["student_t(1.5)"], "nu must be > 2 (finite variance), got 1.5"),
        (["uniform", "uniform"], "network.init has repeated entries"),
        (["student_t(5)", "student_t(5.0)"], "network.init has repeated entries"),
        ([], "network.init must hold at least one law; allowed: gaussian, orthogonal"),
        ([3], "network.init entries must be law names (strings), got 3"),
    ],
)
def test_config_errors_are_one_line(value, message):
    with pytest.raises(ConfigError) as err:
        small_config(network__init=value)
    assert message in str(err.value) and "\n" not in str(err.value)


# --- engines ---------------------------------------------------------------------------


def _law_config(arch, labels, **keys):
    extra = {"grid__sigma_u2": [0.5]} if arch in ("rnn", "gru", "lstm") else {}
    if arch == "residual":
        extra = {"grid__alpha": [0.3]}
    return small_config(
        network__architecture=arch,
        network__width=10,
        network__depth=8,
        network__activation=["tanh", "relu"],
        network__init=list(labels),
        grid__sigma_w2=[0.8, 2.0],
        grid__sigma_b2=[0.1],
        monte_carlo__samples=2,
        **{"measure__mode": "both", "measure__precision": "float64", **extra, **keys},
    )


@pytest.mark.parametrize("arch", ARCHS)
def test_every_law_on_numba_matches_the_oracle(arch):
    """Every architecture and law: numba (the fused MLP kernels hand any law but the
    Gaussian to engines.generic) against the NumPy oracle. Non-Gaussian Z are the same
    float64 Z (numba's generator is rng's bit for bit) through the same LAPACK QR, so
    the weights agree bitwise; the rest to the engines' usual 1e-10."""
    cfg = _law_config(arch, ALL_LAWS)
    numba = engines.get("numba")
    got = engines.run(numba, cfg, 10, 1)
    want = engines.run(engines.get("numpy"), cfg, 10, 1)
    assert set(got) == set(want)
    for key in want:
        assert got[key].shape == base.result_shapes(cfg)[key]
        np.testing.assert_allclose(got[key], want[key], rtol=1e-10, atol=1e-10, err_msg=key)
    for law in ALL_LAWS[1:]:
        one = dataclasses.replace(cfg, inits=(law,))
        for stream in (rng.STREAM_WEIGHT, rng.STREAM_GATE):
            a = generic.Unit(one, 10, 1, generic.HostArrays(numba_normals.normal_matrix))
            b = generic.Unit(one, 10, 1)
            np.testing.assert_array_equal(a.matrix(3, stream), b.matrix(3, stream))


@pytest.mark.parametrize("precision", ["float64", "float32"])
@pytest.mark.parametrize("arch", ["mlp", "lstm"])
def test_every_law_on_the_cuda_engine_host_stand_in(arch, precision):
    """The cuda engine on its CPU stand-in with CuPy's host/device boundary enforced
    (cuda_host.HostBackend, strict): every law runs engines.generic on device arrays
    (the MLP's kernels only for the Gaussian law), the law's draw on the device's xp
    (QR, erf, the gamma sampler's masks; aux draws copied from the host), and gives the
    oracle's numbers bit for bit (the stand-in computes with NumPy)."""
    from vxsim.engines import cuda_gpu, cuda_host

    if cuda_host.compiler() is None:
        pytest.skip("no C++ compiler for the kernels' host build")
    cfg = _law_config(arch, ALL_LAWS[1:], measure__precision=precision)
    be = cuda_host.HostBackend(precision, strict=True)
    for law in cfg.inits:
        one = dataclasses.replace(cfg, inits=(law,))
        got = cuda_gpu.run_unit(one, 10, 1, backend=be)
        want = numpy_ref.run_unit(one, 10, 1)
        for key in want:
            np.testing.assert_array_equal(got[key], want[key], err_msg=f"{law} {key}")


def test_several_laws_are_the_single_law_runs_stitched():
    """engines.run splits per law: each init slice equals the run of that law alone, and
    an explicit init = "gaussian" equals the config without network.init, bit for bit."""
    cfg = _law_config("mlp", ["gaussian", "orthogonal", "rademacher"])
    numpy = engines.get("numpy")
    both = engines.run(numpy, cfg, 10, 0)
    plain = engines.run(
        numpy, dataclasses.replace(cfg, init_axis=False, inits=("gaussian",)), 10, 0
    )
    for i, law in enumerate(cfg.inits):
        alone = engines.run(numpy, dataclasses.replace(cfg, inits=(law,)), 10, 0)
        for key in both:
            np.testing.assert_array_equal(both[key][:, i], alone[key][:, 0], err_msg=key)
    for key in both:
        np.testing.assert_array_equal(both[key][:, 0], plain[key], err_msg=key)
    assert not np.array_equal(both["log_q"][:, 1], both["log_q"][:, 0])  # the law is applied


def test_orthogonal_linear_network_keeps_tangent_norms():
    """A linear MLP with orthogonal weights at sigma_w2 = 1: |t^l| = |t^0| at every layer,
    so log |t^l|^2 / |t^0|^2 = 0 up to rounding (about L N eps); Gaussian weights do not."""
    cfg = small_config(
        network__width=32,
        network__depth=30,
        network__activation=["linear"],
        network__init=["orthogonal", "gaussian"],
        grid__sigma_w2=[1.0],
        grid__sigma_b2=[0.0],
        monte_carlo__samples=1,
        measure__precision="float64",
    )
    for name in ("numpy", "numba"):
        res = engines.run(engines.get(name), cfg, 32, 0)["log_tangent_norm"]
        assert np.abs(res[0, 0]).max() < 1e-12
        assert np.abs(res[0, 1]).max() > 1e-2


def test_fused_mlp_kernels_only_for_the_gaussian_law(monkeypatch):
    """numba_cpu.run_unit takes its fused kernels for the Gaussian law alone."""
    cfg = _law_config("mlp", ["orthogonal"])
    seen = []
    real = generic.run_unit
    monkeypatch.setattr(generic, "run_unit", lambda *a: seen.append(a[0].inits) or real(*a))
    numba_cpu.run_unit(cfg, 10, 0)
    numba_cpu.run_unit(dataclasses.replace(cfg, inits=("gaussian",)), 10, 0)
    assert seen == [("orthogonal",)]


def test_float32_runs_round_the_float64_law_once():
    cfg = _law_config("mlp", ["orthogonal"], measure__precision="float32")
    unit = generic.Unit(cfg, 10, 0)
    Z = unit.matrix(2)
    assert Z.dtype == np.float32
    np.testing.assert_array_equal(Z, _draw("orthogonal", 10, layer=2).astype(np.float32))


def test_a_unit_runs_one_law():
    cfg = _law_config("mlp", ["gaussian", "orthogonal"])
    with pytest.raises(ValueError, match="one weight law"):
        numpy_ref.run_unit(cfg, 10, 0)


# --- files -----------------------------------------------------------------------------

SWEEP_KEYS = dict(
    network__width=[8, 12],
    network__depth=10,
    network__init=["gaussian", "orthogonal"],
    monte_carlo__samples=3,
    measure__mode="both",
    grid__sigma_w2={"start": 0.5, "stop": 4.0, "num": 5},
    engine__backend="numpy",
)


@pytest.fixture(scope="module")
def law_sweep(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("laws") / "single.h5")
    vxsim.run_sweep(small_config(**SWEEP_KEYS), path)
    return path


def test_sweep_with_laws_opens_in_xarray(law_sweep):
    s = summarise_file(law_sweep)
    assert s["init"] == ["gaussian", "orthogonal"] and s["status"] == "complete"
    assert {r["init"] for r in s["crossings"]} == {"gaussian", "orthogonal"}
    assert {r["init"] for r in boundary_rows(law_sweep)} == {"gaussian", "orthogonal"}
    with vxsim.open_results(law_sweep) as ds:
        assert ds["log_q"].dims == (
            "width", "activation", "init", "sigma_w2", "sigma_b2", "sample", "layer",
        )  # fmt: skip
        assert ds["init"].values.tolist() == ["gaussian", "orthogonal"]
        rate = ds["growth_rate_quenched"].sel(
            mode="jvp", width=12, activation="tanh", init="orthogonal"
        )
        assert rate.dims == ("sigma_w2", "sigma_b2") and np.isfinite(rate.values).all()
    with vxsim.open_results(law_sweep, group="analysis") as an:
        assert an["theory_critical_sigma_w2"].dims == ("activation", "init", "sigma_b2")
        assert an["critical_sigma_w2_quenched"].dims == (
            "mode", "width", "activation", "init", "sigma_b2",
        )  # fmt: skip
        theory = an["theory_log_chi1"].values  # the mean field is the same for every law
        np.testing.assert_array_equal(theory[:, 0], theory[:, 1])


def test_sweep_with_laws_resumes(law_sweep, tmp_path, monkeypatch):
    cfg = small_config(**SWEEP_KEYS)
    out = str(tmp_path / "resumed.h5")
    real, calls = numpy_ref.run_unit, []

    def dies_in_the_third(config, width, sample):
        calls.append(config.inits)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(config, width, sample)

    monkeypatch.setattr(numpy_ref, "run_unit", dies_in_the_third)
    with pytest.raises(KeyboardInterrupt):
        vxsim.run_sweep(cfg, out)
    assert summarise_file(out)["units_done"] == 1  # one unit = both laws
    monkeypatch.undo()
    vxsim.run_sweep(cfg, out, resume=True)
    assert_same_content(out, law_sweep, {"created"})


def test_sweep_with_laws_shards_and_merges(law_sweep, tmp_path):
    parts = run_shards(tmp_path, small_config(**SWEEP_KEYS), 3)
    merged = str(tmp_path / "merged.h5")
    vxsim.merge(parts, merged)
    assert_same_content(merged, law_sweep, {"created", "merged_from"})
    virtual = str(tmp_path / "virtual.h5")
    vxsim.merge(parts, virtual, virtual=True)
    with h5py.File(virtual, "r") as f, h5py.File(law_sweep, "r") as g:
        assert f["log_q"].is_virtual
        np.testing.assert_array_equal(f["log_q"][...], g["log_q"][...])
    with vxsim.open_results(virtual) as ds:
        assert ds["init"].values.tolist() == ["gaussian", "orthogonal"]
