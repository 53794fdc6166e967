"""`vxsim plot spectrum` on a synthetic results file in the measurement's layout.

The file holds log_singular_value with dims (width, activation, init, sigma_w2,
sigma_b2, sample, spectrum_layer, sv), from J^l formed explicitly (NumPy, float64),
as the spectrum measurement writes it; the figure's bars and curves are checked
against an independent histogram and against theory.spectrum.density.
"""

import importlib.util
import json
import math

import numpy as np
import pytest
from click.testing import CliRunner

from vxsim.cli import main
from vxsim.theory import meanfield
from vxsim.theory import spectrum as sp

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("matplotlib") is None, reason="matplotlib is not installed"
)
xr = pytest.importorskip("xarray")

SW2, SB2 = 1.5, 0.1
LAYERS = [2, 4, 8]
N, SAMPLES = 120, 2


def log_singular_values(act, init, q0, seed):
    """(sample, spectrum_layer, sv) natural logs of s of J^l at LAYERS, sorted descending."""
    from vxsim import activations

    a, p = activations.parse(act)
    gen = np.random.default_rng(seed)
    out = np.empty((SAMPLES, len(LAYERS), N))
    for s in range(SAMPLES):
        x = gen.standard_normal(N)
        h = x * math.sqrt(q0 * N) / np.linalg.norm(x)
        J = np.eye(N)
        for k in range(1, max(LAYERS) + 1):
            Z = gen.standard_normal((N, N))
            if init == "orthogonal":
                q, r = np.linalg.qr(Z)
                Z = math.sqrt(N) * q * np.sign(np.diag(r))
            W = math.sqrt(SW2 / N) * Z
            if k > 1:
                J = a.dphi(h, p)[:, None] * J
                h = a.phi(h, p)
            J, h = W @ J, W @ h + math.sqrt(SB2) * gen.standard_normal(N)
            if k in LAYERS:
                with np.errstate(divide="ignore"):
                    out[s, LAYERS.index(k)] = np.log(np.linalg.svd(J, compute_uv=False))
    return out


def write_file(path, acts=("tanh",), architecture="mlp", spectrum=True):
    q = meanfield.q_star("tanh", None, SW2, SB2, q0=SW2 + SB2)
    q0 = (q - SB2) / SW2  # q^1 = q*: the data follow the fixed-point law from layer 1
    inits = ["gaussian", "orthogonal"]
    values = np.empty((1, len(acts), 2, 1, 1, SAMPLES, len(LAYERS), N))
    for a, act in enumerate(acts):
        for i, init in enumerate(inits):
            values[0, a, i, 0, 0] = log_singular_values(act, init, q0, seed=10 * a + i)
    coords = {
        "width": [N],
        "activation": list(acts),
        "init": inits,
        "sigma_w2": [SW2],
        "sigma_b2": [SB2],
        "spectrum_layer": LAYERS,
    }
    dims = ("width", "activation", "init", "sigma_w2", "sigma_b2", "sample", "spectrum_layer", "sv")
    data = {"completed": (("width",), np.ones(1, dtype=bool))}
    if spectrum:
        data["log_singular_value"] = (dims, values)
    config = {"network": {"architecture": architecture}, "measure": {"q0": q0}}
    root = xr.Dataset(
        data, coords=coords, attrs={"config": json.dumps(config), "status": "complete"}
    )
    root.to_netcdf(path, engine="h5netcdf")
    analysis = xr.Dataset({"theory_q_star": (("activation",), np.full(len(acts), q))})
    analysis.to_netcdf(path, mode="a", group="analysis", engine="h5netcdf")
    return values, q0


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("spectrum") / "spec.h5")
    values, q0 = write_file(path, acts=("tanh", "relu"))
    return path, values, q0


def _steps(fig):
    from matplotlib.patches import StepPatch

    ax = fig.axes[0]
    return [p for p in ax.patches if isinstance(p, StepPatch) and not p.get_fill()]


def test_bars_are_the_histogram_of_log10_lambda_and_curves_the_theory(synthetic):
    import vxsim.plot as vp

    path, values, q0 = synthetic
    fig = vp.spectrum(path, sel="init=orthogonal", layers="2,8")
    steps = _steps(fig)
    assert len(steps) == 2
    for k, layer_index in enumerate([0, 2]):
        u = 2 * values[0, 0, 1, 0, 0, :, layer_index].ravel() / math.log(10)
        heights, edges = steps[k].get_data()[:2]
        counts, _ = np.histogram(u, bins=edges)
        np.testing.assert_allclose(heights, counts / (u.size * np.diff(edges)), rtol=1e-12)
        # the bars' area is the fraction of values on the axis (the range is cut at
        # the data's 0.5 % quantile unless the theory reaches further): almost all
        inside = np.mean((u >= edges[0]) & (u <= edges[-1]))
        assert np.sum(heights * np.diff(edges)) == pytest.approx(inside, abs=1e-12)
        assert inside >= 0.99
    lines = [ln for ln in fig.axes[0].lines if ln.get_linestyle() != "None"]
    assert len(lines) == 2
    for line, layer in zip(lines, [2, 8], strict=True):
        d = sp.density("tanh", SW2, SB2, "orthogonal", layer, q0)
        x, y = line.get_data()
        np.testing.assert_allclose(
            y, math.log(10) * np.interp(x * math.log(10), d.log_lambda, d.rho_log)
        )
        # the curve's area on the axis: nearly all of the density
        assert np.trapezoid(y, x) == pytest.approx(1.0, abs=0.01)
    assert "init orthogonal" in fig._suptitle.get_text()


def test_measured_density_follows_the_theory(synthetic):
    """Bin by bin at l = 8 (240 values of a Gaussian tanh net): |bars - curve| is the
    counting noise of a rigid spectrum; the wrong law's curve is far worse."""
    import vxsim.plot as vp

    path, values, q0 = synthetic
    fig = vp.spectrum(path, sel="init=gaussian", layers="8")
    heights, edges = _steps(fig)[0].get_data()[:2]
    centre = 0.5 * (edges[1:] + edges[:-1]) * math.log(10)
    right = sp.density("tanh", SW2, SB2, "gaussian", 8, q0)
    wrong = sp.density("tanh", SW2, SB2, "orthogonal", 8, q0)
    dx = np.diff(edges)

    def l1(d):
        curve = math.log(10) * np.interp(centre, d.log_lambda, d.rho_log, left=0, right=0)
        return np.sum(np.abs(heights - curve) * dx)

    assert l1(right) < 0.35 and l1(wrong) > 2 * l1(right)


def test_relu_zero_singular_values_are_counted_off_axis(synthetic):
    import vxsim.plot as vp

    path, values, _ = synthetic
    fig = vp.spectrum(path, sel="activation=relu,init=gaussian", layers="4")
    heights, edges = _steps(fig)[0].get_data()[:2]
    area = np.sum(heights * np.diff(edges))
    u = 2 * values[0, 1, 0, 0, 0, :, 1].ravel() / math.log(10)
    inside = np.isfinite(u) & (u >= edges[0]) & (u <= edges[-1])
    assert area == pytest.approx(inside.mean(), abs=1e-12)
    assert area < 0.75  # about half of lambda is 0 for relu (rank of D^k ~ N/2)
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "off axis" in labels[0]


def test_default_layers_and_first_values_in_title(synthetic):
    import vxsim.plot as vp

    fig = vp.spectrum(synthetic[0])
    assert len(_steps(fig)) == 3
    title = fig._suptitle.get_text()
    assert "(first of 2)" in title


def test_other_architectures_have_no_theory(tmp_path):
    import vxsim.plot as vp

    path = str(tmp_path / "rnn.h5")
    write_file(path, architecture="elman")
    fig = vp.spectrum(path, layers="2")
    assert not [ln for ln in fig.axes[0].lines if ln.get_linestyle() != "None"]
    assert "no theory" in fig._suptitle.get_text()


def invoke(*args):
    return CliRunner().invoke(main, list(args))


def test_cli_writes_the_figure(synthetic, tmp_path):
    out = tmp_path / "spec.png"
    r = invoke("plot", "spectrum", synthetic[0], "-o", str(out), "--sel", "init=orthogonal")
    assert r.exit_code == 0, r.output
    assert out.stat().st_size > 1000 and out.read_bytes()[:4] == b"\x89PNG"


def test_cli_errors_are_one_line(synthetic, tmp_path):
    path = synthetic[0]
    out = str(tmp_path / "x.png")
    cases = [
        (["--sel", "colour=red"], "no dimension"),
        (["--sel", "sv=3"], "drawn on an axis"),
        (["--sel", "init=haar"], "not a value of init"),
        (["--layers", "5"], "--layers 5"),
    ]
    for extra, fragment in cases:
        r = invoke("plot", "spectrum", path, "-o", out, *extra)
        assert r.exit_code == 2, r.output
        assert fragment in r.output and r.output.count("\n") == 1
    plain = str(tmp_path / "plain.h5")
    write_file(plain, spectrum=False)
    r = invoke("plot", "spectrum", plain, "-o", out)
    assert r.exit_code == 2 and "has no spectrum" in r.output


def test_missing_values_are_not_counted_but_zeros_are():
    """NaN (past a smaller width's N, diverged samples) is no value; -inf (lambda = 0) is."""
    from vxsim.plot.spectrum import measured

    log_s = np.array([[0.0, 0.1, -np.inf, np.nan], [0.05, np.nan, np.nan, np.nan]])
    bins = np.linspace(-1, 1, 5)
    heights, outside = measured(log_s, bins)
    assert np.sum(heights * np.diff(bins)) == pytest.approx(3 / 4)  # 3 of 4 values on axis
    assert outside == pytest.approx(1 / 4)
