"""Residual MLPs and Elman RNNs against one-network-at-a-time loops, and the generic driver.

The brute-force loops below materialise every matrix in float64, run one grid
point at a time without any renormalisation and compute tangents and gradients by
the textbook recursions. For the Elman RNN they use ONE W, U and b for every time
step, so an engine that drew them per step would fail here. Agreement is to 1e-9
in float64: the engines renormalise every layer and sum logs in another order,
which moves the last few digits of values of order 1-100.
"""

import numpy as np
import pytest
from conftest import materialised_layers, small_config
from oracle_cases import ARCH_AXES

from vxsim import rng
from vxsim.analysis import growth
from vxsim.config import ConfigError
from vxsim.engines import base, generic, numba_cpu, numba_normals, numpy_ref, schedule

GRID = dict(grid__sigma_w2=[0.6, 1.4, 2.5], grid__sigma_b2=[0.0, 0.2])


def _observables(h1s, h2s, log_t, log_g):
    return {
        "log_q": np.array([np.log(np.mean(h * h)) for h in h1s]),
        "corr": np.array(
            [(a @ b) / np.sqrt((a @ a) * (b @ b)) for a, b in zip(h1s, h2s, strict=True)]
        ),
        "log_tangent_norm": np.array(log_t),
        "log_grad_norm": log_g,
    }


def residual_reference(config, width, sample, act, param, sw2, sb2, alpha):
    """h^l = h^{l-1} + alpha (W^l phi(h^{l-1}) + b^l), one network, float64."""
    L = config.depth
    x1, x2, v0 = base.inputs(config, width, sample)
    Ws, bs = materialised_layers(config, width, sample, sw2, sb2)
    h1, h2, t = x1, x2, v0
    h1s, h2s, log_t = [x1], [x2], []
    for l in range(L):
        t = t + alpha * Ws[l] @ (act.dphi(h1, param) * t)
        h1 = h1 + alpha * (Ws[l] @ act.phi(h1, param) + bs[l])
        h2 = h2 + alpha * (Ws[l] @ act.phi(h2, param) + bs[l])
        h1s.append(h1)
        h2s.append(h2)
        log_t.append(np.log(t @ t) - np.log(v0 @ v0))
    g = base.output_direction(config, width, sample)
    g0, log_g = np.log(g @ g), np.zeros(L)
    for l in range(L - 1, 0, -1):  # g^l from g^{l+1}; h1s[l] = h^l
        g = g + alpha * act.dphi(h1s[l], param) * (Ws[l].T @ g)
        log_g[l - 1] = np.log(g @ g) - g0
    return _observables(h1s[1:], h2s[1:], log_t, log_g)


def elman_reference(config, width, sample, act, param, sw2, sb2, su2):
    """u_t = W phi(u_{t-1}) + U x_t + b with ONE W, U, b for all steps (u_1 from h_0 = x)."""
    T, qx = config.depth, config.input_variance
    x1, x2, v0 = base.inputs(config, width, sample)
    W = np.sqrt(sw2 / width) * rng.normal_matrix(config.seed, sample, 0, width, rng.STREAM_GATE)
    U = np.sqrt(su2 / width) * rng.normal_matrix(
        config.seed, sample, 0, width, rng.STREAM_GATE_INPUT
    )
    b = np.sqrt(sb2) * rng.normals(config.seed, sample, 0, rng.STREAM_BIAS, width)
    xs = [
        np.sqrt(qx) * rng.normals(config.seed, sample, t, rng.STREAM_SEQUENCE, width)
        for t in range(1, T + 1)
    ]
    a1, a2, t_vec = x1, x2, v0
    u1s, u2s, log_t = [], [], []
    for step in range(T):
        u1 = W @ a1 + U @ xs[step] + b
        u2 = W @ a2 + U @ xs[step] + b
        t_vec = W @ t_vec
        u1s.append(u1)
        u2s.append(u2)
        log_t.append(np.log(t_vec @ t_vec) - np.log(v0 @ v0))
        a1, a2 = act.phi(u1, param), act.phi(u2, param)
        t_vec = act.dphi(u1, param) * t_vec
    g = base.output_direction(config, width, sample)
    g0, log_g = np.log(g @ g), np.zeros(T)
    for step in range(T - 1, 0, -1):
        g = act.dphi(u1s[step - 1], param) * (W.T @ g)
        log_g[step - 1] = np.log(g @ g) - g0
    return _observables(u1s, u2s, log_t, log_g)


def _compare(result, config, reference, extra_name, atol=1e-9):
    grid = base.grid(config)
    flat = {k: v.reshape(grid.points, -1) for k, v in result.items() if k != "diverged"}
    for act, param, cols in grid.groups:
        for p in range(cols.start, cols.stop):
            ref = reference(
                act, param, grid.sigma_w2[p], grid.sigma_b2[p], grid.extra[extra_name][p]
            )
            for key, values in ref.items():
                if key in flat:
                    np.testing.assert_allclose(
                        flat[key][p], values, rtol=1e-9, atol=atol, err_msg=f"{key} point {p}"
                    )


@pytest.mark.parametrize("mode", ["jvp", "vjp"])
def test_residual_matches_one_network_loop(mode):
    config = small_config(
        network__architecture="residual",
        network__width=[12],
        network__depth=25,
        network__activation=["tanh", "relu"],
        grid__alpha=[0.2, 1.0],
        measure__mode=mode,
        measure__precision="float64",
        engine__checkpoint=4,
        **GRID,
    )
    res = numpy_ref.run_unit(config, 12, 1)
    ref = lambda *a: residual_reference(config, 12, 1, *a)  # noqa: E731
    _compare(res, config, ref, "alpha")


@pytest.mark.parametrize("mode", ["jvp", "vjp"])
def test_elman_matches_one_network_loop_with_tied_weights(mode):
    config = small_config(
        network__architecture="rnn",
        network__width=[12],
        network__depth=25,
        network__activation=["tanh", "relu"],
        network__input_variance=0.7,
        grid__sigma_u2=[0.0, 0.5],
        measure__mode=mode,
        measure__precision="float64",
        engine__checkpoint=4,
        **GRID,
    )
    res = numpy_ref.run_unit(config, 12, 2)
    ref = lambda *a: elman_reference(config, 12, 2, *a)  # noqa: E731
    _compare(res, config, ref, "sigma_u2")


def test_elman_loop_fails_an_engine_drawing_weights_per_step(monkeypatch):
    """The tied-weights check can fail: untie the Elman model and the comparison breaks."""
    from vxsim.models import rnn

    config = small_config(
        network__architecture="rnn",
        network__width=[8],
        network__depth=6,
        network__activation="tanh",
        measure__precision="float64",
        grid__sigma_w2=[1.5],
        grid__sigma_b2=[0.1],
    )
    monkeypatch.setattr(rnn, "weights", lambda unit, layer: unit.matrix(layer, rng.STREAM_GATE))
    res = numpy_ref.run_unit(config, 8, 0)
    ref = lambda *a: elman_reference(config, 8, 0, *a)  # noqa: E731
    with pytest.raises(AssertionError):
        _compare(res, config, ref, "sigma_u2")


def test_parallel_normals_are_bit_identical():
    for layer, sample, stream, count in [(0, 0, rng.STREAM_GATE, 1), (5, 3, 33, 4099)]:
        a = rng.normals(2**40 + 7, sample, layer, stream, count)
        b = numba_normals.normals(2**40 + 7, sample, layer, stream, count)
        np.testing.assert_array_equal(a, b)
    cfg = small_config(monte_carlo__seed=2**40 + 7)
    for dtype in (np.float32, np.float64):  # matrices are written in the run's precision
        for width in (1, 7, 65):
            got = numba_normals.normal_matrix(cfg, width, 3, 5, rng.STREAM_GATE + 2, dtype)
            want = rng.normal_matrix(2**40 + 7, 3, 5, width, rng.STREAM_GATE + 2, dtype)
            assert got.dtype == dtype
            np.testing.assert_array_equal(got, want)


def arch_config(arch, width=16, depth=30, **keys):
    """tanh and relu, GRID, two values of the architecture's axis, float64, JVP and VJP."""
    return small_config(
        network__architecture=arch,
        network__width=[width],
        network__depth=depth,
        network__activation=["tanh", "relu"],
        measure__mode="both",
        measure__precision="float64",
        **{f"grid__{ARCH_AXES[arch]}": [0.3, 1.0]},
        **GRID,
        **keys,
    )


@pytest.mark.parametrize("arch", sorted(ARCH_AXES))
def test_numba_backend_matches_oracle(arch):
    """Numba keeps every layer within its store budget, the oracle recomputes from
    checkpoints: the same numbers to rounding."""
    config = arch_config(arch, width=24, depth=40)
    a, b = numba_cpu.run_unit(config, 24, 3), numpy_ref.run_unit(config, 24, 3)
    for key in a:
        np.testing.assert_allclose(a[key], b[key], rtol=1e-10, atol=1e-10, err_msg=key)


@pytest.mark.parametrize("arch", sorted(ARCH_AXES))
def test_vjp_that_keeps_every_layer_equals_the_checkpointed_one(arch, monkeypatch):
    """Within the store budget the VJP keeps trajectory 1's state at every layer (and
    the residual net's every Z^l) and recomputes nothing; beyond it, checkpoints.
    Both give the same numbers, and the kept weights are drawn once per layer."""
    config = arch_config(arch)
    drawn = []

    def counting(*args):
        drawn.append(args[3:5])  # (layer, stream)
        return numba_normals.normal_matrix(*args)

    plans, results = {}, {}
    model = generic.model_of(config)
    tied, gated = arch != "residual", arch in ("gru", "lstm")
    # a budget that holds every layer's trajectory-1 state (and Z) but not the gates
    start = model.start(generic.Unit(config, 16, 2))
    state_only = 30 * (sum(v.nbytes for v in start.values()) // 2 + 16 * 16 * 8 * (not tied))
    for name, budget in (("store", 2**40), ("states only", state_only), ("checkpoints", 0)):
        arrays = generic.HostArrays(counting, lambda b=budget: b)
        unit = generic.Unit(config, 16, 2, arrays)
        plans[name] = generic.vjp_plan(unit, model)
        del drawn[:]
        results[name] = generic.run_unit(config, 16, 2, arrays)
        if arch == "residual":
            fresh = [layer for layer, stream in drawn if stream == rng.STREAM_WEIGHT]
            assert sorted(set(fresh)) == list(range(1, 31))
            if name == "store":
                assert len(fresh) == 30  # forward only: the backward pass reuses them
    # (every, keep_all, keep_weights, keep_steps); checkpointed, a segment's Z^l are
    # kept from its recomputation (they fit in schedule.ZSTORE_BYTES)
    assert plans == {
        "store": schedule.Plan(30, True, not tied, gated),  # gated RNNs keep their gates too
        "states only": schedule.Plan(30, True, not tied, False),
        "checkpoints": schedule.Plan(config.checkpoint_every, False, True, False),
    }
    if gated:  # kept gates: computed once per step (the forward's), none recomputed
        computed, real_gates = [], model.gates

        def counting_gates(unit, t, *args):
            computed.append(t)
            return real_gates(unit, t, *args)

        monkeypatch.setattr(model, "gates", counting_gates)
        generic.run_unit(config, 16, 2, generic.HostArrays(None, lambda: 2**40))
        assert computed == list(range(1, 31))
    for name in ("store", "states only"):
        for key, value in results["checkpoints"].items():
            np.testing.assert_allclose(results[name][key], value, rtol=1e-12, atol=1e-12)
    # an explicit engine.checkpoint is obeyed whatever the budget
    spaced = arch_config(arch, engine__checkpoint=4)
    unit = generic.Unit(spaced, 16, 2, generic.HostArrays(None, lambda: 2**40))
    assert generic.vjp_plan(unit, generic.model_of(spaced)) == schedule.Plan(4, False, True, False)


@pytest.mark.parametrize(
    "arch,key,value,message",
    [
        ("mlp", "grid.forget_bias", "[1.0]", "grid.forget_bias does not apply"),
        ("mlp", "grid.alpha", "[0.5]", "grid.alpha does not apply"),
        ("rnn", "grid.alpha", "[0.5]", "it is an axis of residual"),
        ("gru", "grid.forget_bias", "[1.0]", "it is an axis of lstm"),
        ("lstm", "grid.update_bias", "[1.0]", "it is an axis of gru"),
        ("residual", "network.input_variance", "1.0", "applies to rnn, gru and lstm"),
        ("rnn", "grid.sigma_u2", "[-1.0]", "must be >= 0"),
        ("rnn", "network.input_variance", "-0.5", "must be >= 0"),
        ("transformer", "network.depth", "10", "network.architecture must be one of"),
    ],
)
def test_bad_architecture_combinations(arch, key, value, message):
    from vxsim import config as config_mod

    with pytest.raises(ConfigError, match=message):
        config_mod.load(overrides=[f'network.architecture="{arch}"', f"{key}={value}"])


def test_gate_bias_axes_may_be_negative():
    from vxsim import config as config_mod

    cfg = config_mod.load(overrides=['network.architecture="lstm"', "grid.forget_bias=[-1.0, 2.0]"])
    assert cfg.grid_dims == ("activation", "sigma_w2", "sigma_b2", "sigma_u2", "forget_bias")
    np.testing.assert_array_equal(cfg.extra_axes["forget_bias"], [-1.0, 2.0])


def test_residual_fits_a_power_law_and_says_so(tmp_path):
    """A residual tanh sweep: rates are power-law exponents, beside the theory's exponent.

    The theory's exponent is the same fit applied to the mean-field curve
    (theory.residual), so it must agree with the annealed estimate within its
    error bars (width 256: finite-width corrections are O(l/N) and small here).
    """
    from vxsim import open_results, run_sweep

    config = small_config(
        network__architecture="residual",
        network__width=[256],
        network__depth=200,
        network__activation="tanh",
        grid__sigma_w2=[0.5, 2.0],
        grid__sigma_b2=[0.05],
        grid__alpha=[0.5],
        monte_carlo__samples=6,
        measure__mode="both",
        measure__record={"log": 40},
    )
    out = run_sweep(config, str(tmp_path / "res.h5"), backend="numba")
    ds = open_results(out)
    an = open_results(out, group="analysis")
    assert ds.attrs["growth_law"] == "power"
    assert an.attrs["rate_model"].startswith("power")
    rate = ds["growth_rate_annealed"].values.squeeze()
    se = ds["growth_rate_annealed_se"].values.squeeze()
    theory = an["theory_growth_rate"].values.squeeze()
    assert np.all(theory > 0) and np.all(rate > 0)  # residual gradients only grow
    assert np.all(np.abs(rate - theory) < 4 * se + 0.05 * np.abs(theory)), (rate, theory, se)


def test_residual_theory_recursion_matches_brute_force_sum():
    """theory.residual.curves against a direct loop over meanfield's moments (tanh)."""
    from vxsim.theory import meanfield, residual

    moments = residual.moment_function("tanh")
    q, log_chi = residual.curves(moments, 1.5, 0.1, 0.5, 1.0, 50)
    qq, acc = 1.0, 0.0
    for l in range(1, 51):
        dphi2 = meanfield.chi1("tanh", None, 1.0, 0.0, q=qq)  # E[phi'^2] at q (sigma_w2 = 1)
        acc += np.log1p(0.25 * 1.5 * dphi2)
        qq = qq + 0.25 * (1.5 * meanfield.second_moment("tanh", None, qq) + 0.1)
        assert abs(q[l] - qq) < 1e-4 * qq
        assert abs(log_chi[l] - acc) < 1e-4 * max(acc, 1.0)


@pytest.mark.slow
def test_elman_boundary_matches_mean_field_at_width_512(tmp_path):
    """Elman tanh, width 512: the empirical edge of chaos sits on the theory's line.

    Theory: the MLP's maps with sigma_b2_eff = sigma_b2 + sigma_u2 q_x. The
    annealed VJP crossing must fall within its bootstrap interval widened by the
    grid spacing's linear-interpolation error, or within 0.08 of theory.
    """
    from vxsim import open_results, run_sweep
    from vxsim.theory import meanfield

    config = small_config(
        network__architecture="rnn",
        network__width=[512],
        network__depth=120,
        network__activation="tanh",
        network__input_variance=1.0,
        grid__sigma_w2={"start": 0.8, "stop": 2.2, "num": 8},
        grid__sigma_b2=[0.0],
        grid__sigma_u2=[0.05],
        monte_carlo__samples=4,
        measure__mode="vjp",
        measure__record={"every": 2},
    )
    out = run_sweep(config, str(tmp_path / "rnn.h5"), backend="numba")
    an = open_results(out, group="analysis")
    theory = meanfield.critical_sigma_w2("tanh", None, 0.05)
    value = lambda name: float(an[name].values.squeeze())  # noqa: E731
    np.testing.assert_allclose(value("theory_critical_sigma_w2"), theory, rtol=1e-12)
    for kind in ("annealed", "quenched"):
        x = value(f"critical_sigma_w2_{kind}")
        lo = value(f"critical_sigma_w2_{kind}_ci_low")
        hi = value(f"critical_sigma_w2_{kind}_ci_high")
        assert lo - 0.08 <= theory <= hi + 0.08, (kind, x, lo, hi, theory)


def test_rnn_growth_rate_is_negative_in_order_and_positive_in_chaos():
    config = small_config(
        network__architecture="rnn",
        network__width=[128],
        network__depth=60,
        network__activation="tanh",
        grid__sigma_w2=[0.5, 3.0],
        grid__sigma_b2=[0.0],
        grid__sigma_u2=[0.1],
        measure__mode="both",
    )
    res = numba_cpu.run_unit(config, 128, 0)
    for mode, key in (("jvp", "log_tangent_norm"), ("vjp", "log_grad_norm")):
        y = res[key][..., None, :]  # one sample
        rates = growth.growth_rates(y, config.layers, config.depth, config.transient, mode)
        r = rates["quenched"].squeeze()
        assert r[0] < -0.2 and r[1] > 0.1, (mode, r)


# ---------------------------------------------------------------- alpha-ReLU (relu_power)


@pytest.mark.parametrize("a", [0.6, 0.75, 1.0])
@pytest.mark.parametrize("q", [1e-3, 1.0, 250.0])
def test_relu_power_closed_form_moments(a, q):
    """E[phi^2], E[phi'^2] against scipy's quad with the x^p endpoint weight (independent)."""
    from scipy import integrate

    from vxsim import activations

    act, _ = activations.parse(f"relu_power({a})")
    phi2, dphi2 = act.moments(q, a)
    density = lambda x: np.exp(-x * x / (2 * q)) / np.sqrt(2 * np.pi * q)  # noqa: E731
    top = 40 * np.sqrt(q)
    e_phi2 = integrate.quad(density, 0, top, weight="alg", wvar=(2 * a, 0), epsabs=0)[0]
    e_dphi2 = (
        a * a * integrate.quad(density, 0, top, weight="alg", wvar=(2 * a - 2, 0), epsabs=0)[0]
    )
    assert phi2 == pytest.approx(e_phi2, rel=1e-10)
    assert dphi2 == pytest.approx(e_dphi2, rel=1e-10)


def test_relu_power_parameter_range_and_no_mlp_theory():
    from vxsim import config as config_mod
    from vxsim.errors import VxsimError
    from vxsim.theory import meanfield

    with pytest.raises(ConfigError, match=r"must be in \(0.5, 1\]"):
        config_mod.load(overrides=['network.activation="relu_power(0.5)"'])
    with pytest.raises(VxsimError, match="no MLP mean-field theory"):
        meanfield.q_star("relu_power(0.75)", None, 1.0, 0.1)


def test_relu_power_mlp_runs_without_theory_and_numba_agrees():
    config = small_config(
        network__width=[16],
        network__depth=20,
        network__activation=["relu_power(0.75)"],
        measure__mode="both",
        measure__precision="float64",
        **GRID,
    )
    a, b = numba_cpu.run_unit(config, 16, 0), numpy_ref.run_unit(config, 16, 0)
    for key in a:
        np.testing.assert_allclose(a[key], b[key], rtol=1e-9, atol=1e-9, err_msg=key)
    from vxsim.theory.architectures import predict

    assert np.all(np.isnan(predict(config)["theory_log_chi1"][1]))


@pytest.mark.slow
def test_residual_relu_power_gradients_grow_as_a_power_of_depth(tmp_path):
    """Yang & Schoenholz: alpha-ReLU residual gradients grow polynomially.

    With phi = relu^a, q^l ~ l^(1/(1-a)) and E[phi'^2] ~ 1/l, so |g^l|^2 ~ l^(-beta)
    going down with the universal exponent beta = 4 a^2 M(2a-2) / M(2a) (4.5 at
    a = 3/4, independent of sigma_w2 and alpha). The local slope of the measured
    log |g|^2 against log l approaches beta deep in the network, and the fitted
    exponent matches the mean-field recursion's fit over the same layers.
    """
    from vxsim import activations, open_results, run_sweep

    config = small_config(
        network__architecture="residual",
        network__width=[256],
        network__depth=600,
        network__activation="relu_power(0.75)",
        grid__sigma_w2=[2.0],
        grid__sigma_b2=[0.05],
        grid__alpha=[1.0],
        monte_carlo__samples=4,
        measure__mode="vjp",
        measure__record={"log": 40},
    )
    out = run_sweep(config, str(tmp_path / "res.h5"), backend="numba")
    ds, an = open_results(out), open_results(out, group="analysis")
    rate = float(ds["growth_rate_annealed"].values.squeeze())
    se = float(ds["growth_rate_annealed_se"].values.squeeze())
    theory = float(an["theory_growth_rate"].values.squeeze())
    assert abs(rate - theory) < 4 * se + 0.03 * theory, (rate, theory, se)
    act, a = activations.parse("relu_power(0.75)")
    m = lambda p: activations._half_moment(p)  # noqa: E731
    beta = 4 * a * a * m(2 * a - 2) / m(2 * a)
    y = ds["log_grad_norm"].values.squeeze().mean(axis=0)  # mean over samples, per layer
    layers = ds["layer"].values
    deep = (layers >= 60) & (layers <= 300)
    local = -np.polyfit(np.log(layers[deep]), y[deep], 1)[0]
    assert abs(local - beta) < 0.1 * beta, (local, beta)
    exponential = np.polyfit(layers[deep], y[deep], 1, full=True)[1][0]
    power = np.polyfit(np.log(layers[deep]), y[deep], 1, full=True)[1][0]
    assert power < 0.1 * exponential  # log |g|^2 is linear in log l, not in l


def test_engines_that_do_not_run_an_architecture_are_refused_or_skipped(monkeypatch):
    """'auto' passes over an engine without the architecture; naming it is an error."""
    import types

    from vxsim import engines
    from vxsim.errors import VxsimError

    fake = types.SimpleNamespace(NAME="cuda", ARCHITECTURES=("mlp",), available=lambda: True)
    real_import = engines.importlib.import_module

    def import_module(name, package=None):
        return fake if name == ".cuda_gpu" else real_import(name, package)

    monkeypatch.setattr(engines.importlib, "import_module", import_module)
    assert engines.auto("mlp") == "cuda"
    assert engines.auto("lstm") == "numba"
    assert engines.get("auto", "residual").NAME == "numba"
    with pytest.raises(VxsimError, match="runs architecture mlp only, not 'rnn'"):
        engines.get("cuda", "rnn")
