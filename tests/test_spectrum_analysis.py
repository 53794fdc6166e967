"""The analysis entries of the Jacobian spectrum's theory (analysis.spectrum), on stand-in configs.

The measurement (config.spectrum_layers, measure.spectrum) and the init axis come
from other work; the stand-in carries exactly the attributes the entries read.
"""

import math
from types import SimpleNamespace

import numpy as np
import pytest

from vxsim import models
from vxsim.analysis import spectrum as analysis_spectrum
from vxsim.theory import spectrum as sp


def stand_in(architecture="mlp", init_axis=True, spectrum_layers=(1, 4, 16), extra=None):
    activations = ("tanh", "relu", "relu_power(2)")
    inits = ("gaussian", "orthogonal") if init_axis else ("gaussian",)
    sigma_w2, sigma_b2 = np.array([0.8, 1.5, 2.0]), np.array([0.0, 0.1])
    extra = extra or {}
    lead = ("activation", "init") if init_axis else ("activation",)
    dims = lead + ("sigma_w2", "sigma_b2") + tuple(extra)
    shape = (len(activations),) + ((len(inits),) if init_axis else ())
    shape += (sigma_w2.size, sigma_b2.size) + tuple(len(v) for v in extra.values())
    return SimpleNamespace(
        architecture=architecture,
        arch=models.get(architecture),
        activations=activations,
        inits=inits,
        init_axis=init_axis,
        sigma_w2=sigma_w2,
        sigma_b2=sigma_b2,
        extra_axes=extra,
        grid_dims=dims,
        grid_shape=shape,
        q0=1.0,
        spectrum_layers=np.array(spectrum_layers) if spectrum_layers is not None else None,
    )


def test_no_spectrum_no_entries():
    assert analysis_spectrum.analyse(stand_in(spectrum_layers=None)) == {}
    assert analysis_spectrum.analyse(stand_in(spectrum_layers=())) == {}


def test_entries_match_the_theory_point_by_point():
    config = stand_in()
    out = analysis_spectrum.analyse(config)
    dims, mean, _ = out["theory_lambda_mean"]
    assert dims == ("activation", "init", "sigma_w2", "sigma_b2", "spectrum_layer")
    _, var, _ = out["theory_lambda_var_norm"]
    _, log_mean, _ = out["theory_log_lambda_mean"]
    assert mean.shape == var.shape == (3, 2, 3, 2, 3)
    for a, act in enumerate(config.activations[:2]):
        for i, init in enumerate(config.inits):
            for w, sw2 in enumerate(config.sigma_w2):
                for b, sb2 in enumerate(config.sigma_b2):
                    m = sp.moments(act, sw2, sb2, init, config.spectrum_layers, q0=1.0)
                    np.testing.assert_allclose(var[a, i, w, b], m.lambda_var_norm, rtol=1e-14)
                    np.testing.assert_allclose(mean[a, i, w, b], m.lambda_mean, rtol=1e-14)
                    np.testing.assert_allclose(log_mean[a, i, w, b], m.log_lambda_mean)
    # the laws differ by l (-s1) exactly: Marchenko-Pastur adds 1 per weight factor
    np.testing.assert_allclose(var[:2, 0] - var[:2, 1], np.broadcast_to([1, 4, 16], (2, 3, 2, 3)))
    # relu: mu1 = mu2 = 1/2 -> var_norm = l + (l - 1) for Gaussian weights
    np.testing.assert_allclose(var[1, 0, 0, 0], [1, 7, 31])
    assert np.all(np.isnan(mean[2])) and np.all(np.isnan(var[2]))  # relu_power: no theory


def test_without_init_axis_the_laws_are_gaussian():
    out = analysis_spectrum.analyse(stand_in(init_axis=False))
    dims, var, _ = out["theory_lambda_var_norm"]
    assert dims == ("activation", "sigma_w2", "sigma_b2", "spectrum_layer")
    m = sp.moments("tanh", 1.5, 0.1, "gaussian", [1, 4, 16])
    np.testing.assert_allclose(var[0, 1, 1], m.lambda_var_norm, rtol=1e-14)


def test_other_architectures_get_nan():
    config = stand_in(architecture="rnn", extra={"sigma_u2": [0.0, 0.5]})
    out = analysis_spectrum.analyse(config)
    dims, var, _ = out["theory_lambda_var_norm"]
    assert dims[-2:] == ("sigma_u2", "spectrum_layer") and var.shape == (3, 2, 3, 2, 2, 3)
    assert np.all(np.isnan(var)) and np.all(np.isnan(out["theory_lambda_mean"][1]))


def test_overflowing_mean_keeps_its_log():
    config = stand_in(spectrum_layers=(1, 1200))
    out = analysis_spectrum.analyse(config)
    mean = out["theory_lambda_mean"][1]
    log_mean = out["theory_log_lambda_mean"][1]
    # relu at sigma_w2 = 2: lambda_mean = 2 exactly at every depth
    assert mean[1, 0, 2, 0, 1] == pytest.approx(2.0)
    # relu, sigma_w2 = 0.8: 0.8^1200 0.5^1199 underflows; its log does not
    assert mean[1, 0, 0, 0, 1] == 0.0
    expected = 1200 * math.log(0.8) + 1199 * math.log(0.5)
    assert log_mean[1, 0, 0, 0, 1] == pytest.approx(expected)


def test_a_sweep_with_a_spectrum_stores_the_theory_beside_it(tmp_path):
    """End to end (numpy engine): the analysis group holds the theory with the data's dims,
    equal to theory.spectrum.moments at each point."""
    import vxsim
    from tests.conftest import small_config

    config = small_config(
        network__width=16,
        network__depth=4,
        network__activation=["relu"],
        network__init=["gaussian", "orthogonal"],
        measure__spectrum={"layers": [2, 4]},
        monte_carlo__samples=2,
        grid__sigma_w2=[1.5, 2.0],
        grid__sigma_b2=[0.0],
    )
    path = str(tmp_path / "spec.h5")
    vxsim.run_sweep(config, path, backend="numpy")
    root = vxsim.open_results(path)
    analysis = vxsim.open_results(path, group="analysis")
    try:
        th = analysis["theory_lambda_var_norm"]
        assert th.dims == root["lambda_var_norm"].dims[1:]
        assert list(th["init"].values) == ["gaussian", "orthogonal"]
        # relu: l (-s1) + (l - 1) (mu2/mu1^2 - 1) = l (-s1) + l - 1
        np.testing.assert_allclose(th.sel(init="gaussian").values[0, :, 0], [[3, 7], [3, 7]])
        np.testing.assert_allclose(th.sel(init="orthogonal").values[0, :, 0], [[1, 3], [1, 3]])
        mean = analysis["theory_lambda_mean"].sel(init="orthogonal", sigma_w2=1.5).values
        np.testing.assert_allclose(mean[0, 0], [1.5**2 / 2, 1.5**4 / 8])
    finally:
        root.close()
        analysis.close()
