"""The NumPy oracle against a brute-force network loop, and the physics it must show."""

import numpy as np
import pytest
from conftest import reference_network, small_config

from vxsim import activations
from vxsim.analysis.growth import growth_rates
from vxsim.engines import numpy_ref


@pytest.mark.parametrize("mode", ["jvp", "vjp", "both"])
@pytest.mark.parametrize("acts", [["tanh", "relu"], ["leaky_relu(0.2)", "gelu"], ["elu", "erf"]])
def test_oracle_matches_one_network_at_a_time(mode, acts):
    """float64 engine vs materialised weights: agree to rounding (1e-9 absolute on logs).

    The engine renormalises every layer and batches the grid in one GEMM; the
    loop does neither, so agreement to rounding error shows both are exact.
    """
    cfg = small_config(
        network__width=12,
        network__depth=15,
        network__activation=acts,
        grid__sigma_w2=[0.8, 1.7, 3.0],
        grid__sigma_b2=[0.0, 0.3],
        measure__mode=mode,
        measure__precision="float64",
        monte_carlo__samples=2,
        engine__checkpoint=4,
    )
    sample = 1
    out = numpy_ref.run_unit(cfg, 12, sample)
    idx = cfg.layers - 1
    for a, label in enumerate(cfg.activations):
        act, param = activations.parse(label)
        for i, sw2 in enumerate(cfg.sigma_w2):
            for j, sb2 in enumerate(cfg.sigma_b2):
                ref = reference_network(cfg, 12, sample, act, param, sw2, sb2)
                for name in out:
                    if name == "diverged":
                        assert out[name][a, i, j] == 0
                        continue
                    np.testing.assert_allclose(
                        out[name][a, i, j],
                        ref[name][idx],
                        rtol=1e-9,
                        atol=1e-9,
                        err_msg=f"{name} {label} sw2={sw2} sb2={sb2}",
                    )


def test_float32_close_to_float64():
    keys = dict(
        network__width=64, network__depth=40, grid__sigma_w2=[1.0, 2.5], measure__mode="both"
    )
    out32 = numpy_ref.run_unit(small_config(**keys), 64, 0)
    out64 = numpy_ref.run_unit(small_config(measure__precision="float64", **keys), 64, 0)
    for name in ("log_q", "log_tangent_norm", "log_grad_norm"):
        # float32 rounding (~6e-8 per op) compounds over 40 layers of N=64 dot products
        np.testing.assert_allclose(out32[name], out64[name], atol=2e-3)


def test_recording_subsets_are_the_same_numbers():
    keys = dict(
        network__width=16,
        network__depth=50,
        measure__mode="both",
        grid__sigma_w2=[1.5],
        grid__sigma_b2=[0.1],
    )
    every = small_config(**keys)
    logspaced = small_config(measure__record={"log": 10}, **keys)
    full = numpy_ref.run_unit(every, 16, 0)
    sub = numpy_ref.run_unit(logspaced, 16, 0)
    pick = logspaced.layers - 1
    assert logspaced.layers[-1] == 50 and logspaced.layers[0] == 1
    for name in ("log_q", "corr", "log_tangent_norm", "log_grad_norm"):
        np.testing.assert_array_equal(sub[name], full[name][..., pick])


def _rates(cfg, mode):
    ys = np.stack(
        [numpy_ref.run_unit(cfg, cfg.widths[0], s)[_VAR[mode]] for s in range(cfg.samples)], axis=-2
    )
    return growth_rates(ys, cfg.layers, cfg.depth, cfg.transient, mode)


_VAR = {"jvp": "log_tangent_norm", "vjp": "log_grad_norm"}


@pytest.fixture(scope="module")
def phase_rates():
    cfg = small_config(
        network__width=128,
        network__depth=120,
        network__activation=["tanh", "relu"],
        grid__sigma_w2=[0.7, 1.0, 2.0, 3.0],
        grid__sigma_b2=[0.0],
        measure__mode="both",
        monte_carlo__samples=6,
        measure__transient=20,
    )
    return cfg, {mode: _rates(cfg, mode) for mode in ("jvp", "vjp")}


def test_jvp_and_vjp_agree_within_error_bars(phase_rates):
    cfg, rates = phase_rates
    for kind in ("quenched", "annealed"):
        diff = rates["jvp"][kind] - rates["vjp"][kind]
        se = np.hypot(rates["jvp"][f"{kind}_se"], rates["vjp"][f"{kind}_se"])
        assert np.all(np.abs(diff) < 4 * se + 0.01), (kind, diff, se)


def test_phases(phase_rates):
    cfg, rates = phase_rates
    tanh, relu = 0, 1
    sw = {v: i for i, v in enumerate(cfg.sigma_w2)}
    for mode in ("jvp", "vjp"):
        q = rates[mode]["quenched"][..., 0]
        # critical points: log chi1 = 0 up to the finite-width O(1/N) quenched shift
        # (tanh at (1, 0) also approaches q* = 0 like 1/l, so chi1 -> 1 from below)
        assert abs(q[tanh, sw[1.0]]) < 0.05
        assert abs(q[relu, sw[2.0]]) < 0.05
        # tanh at 3: chaotic; at 0.7 with sb2 = 0, q* = 0 and chi1 = 0.7
        assert q[tanh, sw[3.0]] > 0.1
        assert q[tanh, sw[0.7]] == pytest.approx(np.log(0.7), abs=0.05)
        # relu: chi1 = sw2 / 2 for every q
        assert q[relu, sw[3.0]] == pytest.approx(np.log(1.5), abs=0.05)
        assert q[relu, sw[0.7]] == pytest.approx(np.log(0.35), abs=0.05)


@pytest.mark.parametrize("mode", ["jvp", "vjp"])
def test_ten_thousand_layers_stay_finite(mode):
    """Both phases over 10^4 layers: norms span far beyond 10^+-300, logs stay finite."""
    cfg = small_config(
        network__width=16,
        network__depth=10_000,
        network__activation=["tanh", "relu"],
        grid__sigma_w2=[0.5, 4.0],
        grid__sigma_b2=[0.05, 0.5],
        measure__mode=mode,
        measure__record={"log": 20},
        monte_carlo__samples=1,
    )
    out = numpy_ref.run_unit(cfg, 16, 0)
    y = out[_VAR[mode]]
    assert np.all(np.isfinite(y)) and np.all(out["diverged"] == 0)
    assert np.all(np.isfinite(out["log_q"]))
    # the ends of the range are far outside float64: exp(+-700) ~ 10^+-304
    assert y.max() > 700 and y.min() < -700
    # relu at sw2 = 4: q grows like 2^l (log q ~ 6900 at l = 10^4 for N -> inf; the
    # quenched rate at N = 16 sits O(1/N) lower), far beyond float64's log-range of 709
    relu_q = out["log_q"][1, 1, 0, -1]
    assert relu_q > 3000


def test_collapse_to_zero_is_the_fixed_point_not_a_divergence():
    """tanh at sigma_b2 = 0 in the ordered phase: h underflows to 0 = q*, gradients go on."""
    cfg = small_config(
        network__width=16,
        network__depth=3000,
        network__activation=["tanh"],
        grid__sigma_w2=[0.5],
        grid__sigma_b2=[0.0],
        measure__mode="both",
        measure__record={"log": 30},
        monte_carlo__samples=1,
    )
    out = numpy_ref.run_unit(cfg, 16, 0)
    assert out["diverged"][0, 0, 0] == 0
    assert out["log_q"][0, 0, 0, -1] == -np.inf  # underflowed: q* = 0 exactly
    for name in ("log_tangent_norm", "log_grad_norm"):
        y = out[name][0, 0, 0]
        assert np.all(np.isfinite(y))
        # deep in, phi'(h) = 1 and |g|^2 shrinks by exactly sigma_w2 |Z v|^2 / N per layer
        slope = (y[-1] - y[-5]) / (cfg.layers[-1] - cfg.layers[-5])
        assert abs(abs(slope) - np.log(2)) < 0.1 * np.log(2)


def test_divergence_is_flagged_and_contained():
    """ELU in the chaotic phase overflows float32; its point is flagged, neighbours untouched."""
    cfg = small_config(
        network__width=32,
        network__depth=80,
        network__activation=["elu", "tanh"],
        grid__sigma_w2=[1.0, 60.0],
        grid__sigma_b2=[0.0],
        measure__mode="both",
    )
    out = numpy_ref.run_unit(cfg, 32, 0)
    flag = out["diverged"]
    assert flag[0, 1, 0] > 0  # elu, sw2 = 60
    assert np.all(flag[0, 0] == 0) and np.all(flag[1] == 0)
    bad_from = flag[0, 1, 0]
    assert np.all(np.isnan(out["log_q"][0, 1, 0, bad_from - 1 :]))
    assert np.all(np.isfinite(out["log_q"][0, 1, 0, : bad_from - 1]))
    assert np.all(np.isnan(out["log_grad_norm"][0, 1, 0]))
    for name in ("log_q", "corr", "log_tangent_norm", "log_grad_norm"):
        assert np.all(np.isfinite(out[name][1])) and np.all(np.isfinite(out[name][0, 0]))
