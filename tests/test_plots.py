"""Figures: size, artists, colour scale, theory overlays checked against closed forms, output
formats, and one-line CLI errors.

Small sweeps (width 16, depth 20, 4 samples, NumPy engine) are made once per module.
"""

import importlib.util
import math
import os
import struct
import sys

import numpy as np
import pytest
from click.testing import CliRunner

import vxsim
from tests.conftest import small_config
from vxsim.cli import main
from vxsim.store import hdf5

HAVE_MPL = importlib.util.find_spec("matplotlib") is not None
needs_mpl = pytest.mark.skipif(
    not HAVE_MPL,
    reason="matplotlib is not installed (it is in the test extra: pip install '.[test]')",
)

SIGMA_W2 = {"start": 0.5, "stop": 4.0, "num": 8}
SIGMA_B2 = [0.0, 0.05, 0.1]


def _config(mode):
    return small_config(
        network__width=16,
        network__depth=20,
        network__activation=["tanh", "relu"],
        monte_carlo__samples=4,
        measure__mode=mode,
        grid__sigma_w2=SIGMA_W2,
        grid__sigma_b2=SIGMA_B2,
    )


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """{'jvp': path, 'both': path} of finished small results files."""
    folder = tmp_path_factory.mktemp("plots")
    out = {}
    for mode in ("jvp", "both"):
        path = str(folder / f"{mode}.h5")
        vxsim.run_sweep(_config(mode), path, backend="numpy")
        out[mode] = path
    return out


def png_size(path):
    """(width, height) in pixels from a PNG's IHDR chunk."""
    with open(path, "rb") as fh:
        head = fh.read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", head[16:24])


def tanh_critical(sigma_b2):
    """Critical sigma_w2 of tanh by brute force: Gauss-Hermite expectations, q* by iterating
    the length map, bisection on chi1 - 1 (independent of vxsim.theory)."""
    z, w = np.polynomial.hermite_e.hermegauss(160)
    w = w / w.sum()

    def chi1(sw2):
        q = 1.0
        for _ in range(3000):
            q = sw2 * np.dot(w, np.tanh(np.sqrt(q) * z) ** 2) + sigma_b2
        return sw2 * np.dot(w, np.cosh(np.sqrt(q) * z) ** -4)

    lo, hi = 1.0, 4.0
    for _ in range(45):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if chi1(mid) < 1.0 else (lo, mid)
    return 0.5 * (lo + hi)


def theory_line_at(line, sigma_b2):
    y = np.asarray(line.get_ydata())
    i = np.flatnonzero(np.isclose(y, sigma_b2, rtol=0, atol=1e-15))
    assert i.size == 1, f"sigma_b2 = {sigma_b2} not on the drawn line"
    return float(np.asarray(line.get_xdata())[i[0]])


# ---------------------------------------------------------------- phase map


@needs_mpl
def test_phase_map_artists_scale_and_theory(files, tmp_path):
    from matplotlib.collections import LineCollection, QuadMesh

    import vxsim.plot as vp

    fig = vp.phase(files["jvp"])
    assert tuple(fig.get_size_inches()) == pytest.approx((3.4, 2.2))
    panels, cbar = fig.axes[:2], fig.axes[2]
    assert len(fig.axes) == 3  # tanh, relu, colour bar
    assert [ax.get_title() for ax in panels] == ["tanh", "relu"]

    ds = vxsim.open_results(files["jvp"])
    an = vxsim.open_results(files["jvp"], group="analysis")
    rates = ds.growth_rate_annealed.sel(mode="jvp", width=16)
    limit = float(np.nanmax(np.abs(rates.values)))
    for ax, act in zip(panels, ["tanh", "relu"], strict=True):
        meshes = [c for c in ax.collections if isinstance(c, QuadMesh)]
        bars = [c for c in ax.collections if isinstance(c, LineCollection)]
        assert len(meshes) == 1 and len(bars) == 1 and len(ax.collections) == 2
        # theory line, the measured points, two caps of the error bars
        assert len(ax.lines) == 4
        mesh = meshes[0]
        assert mesh.norm.vmin == pytest.approx(-limit) and mesh.norm.vmax == pytest.approx(limit)
        assert mesh.norm(0.0) == pytest.approx(0.5)  # rate 0 at the white centre
        # cells: sigma_b2 rows, sigma_w2 columns, the file's rates
        want = rates.sel(activation=act).transpose("sigma_b2", "sigma_w2").values
        np.testing.assert_array_equal(np.ma.filled(mesh.get_array(), np.nan).ravel(), want.ravel())
        # measured boundary = the analysis group's crossings, at the grid's sigma_b2
        crit = an.critical_sigma_w2_annealed.sel(mode="jvp", width=16, activation=act).values
        ok = np.isfinite(crit)
        points = ax.lines[1]
        np.testing.assert_allclose(points.get_xdata(), crit[ok])
        np.testing.assert_allclose(points.get_ydata(), np.array(SIGMA_B2)[ok])
    # the theory's critical line against closed forms and brute force
    tanh_line, relu_line = panels[0].lines[0], panels[1].lines[0]
    assert theory_line_at(tanh_line, 0.0) == pytest.approx(1.0, abs=1e-9)  # tanh: (1, 0)
    for sb2 in (0.05, 0.1):
        assert theory_line_at(tanh_line, sb2) == pytest.approx(tanh_critical(sb2), abs=1e-6)
    assert np.all(np.asarray(relu_line.get_xdata()) == 2.0)  # ReLU: sigma_w2 = 2 everywhere
    assert len(tanh_line.get_xdata()) > 20  # dense, not only the grid's sigma_b2
    assert "growth rate (per layer)" in cbar.get_ylabel()
    assert panels[0].get_ylabel() and panels[0].get_xlabel()

    out = tmp_path / "phase.png"
    vp.save(fig, out, dpi=100)
    assert png_size(out) == (340, 220)


@needs_mpl
def test_phase_map_sel_estimator_size(files):
    import vxsim.plot as vp

    fig = vp.phase(
        files["both"], sel="mode=vjp,activation=relu", estimator="quenched", size="double"
    )
    assert tuple(fig.get_size_inches()) == pytest.approx((7.0, 2.2 * 1.6))
    assert len(fig.axes) == 2 and fig.axes[0].get_title() == "relu"
    mesh = fig.axes[0].collections[0]
    ds = vxsim.open_results(files["both"])
    want = ds.growth_rate_quenched.sel(mode="vjp", width=16, activation="relu")
    np.testing.assert_array_equal(
        np.ma.filled(mesh.get_array(), np.nan).ravel(),
        want.transpose("sigma_b2", "sigma_w2").values.ravel(),
    )
    assert "quenched" in fig.axes[1].get_ylabel()
    assert "mode vjp" in fig._suptitle.get_text()
    # mode not chosen in a file with two: the first, and the title says so
    fig = vp.phase(files["both"], size=(5, 3))
    assert tuple(fig.get_size_inches()) == pytest.approx((5, 3))
    assert "mode jvp (first of 2)" in fig._suptitle.get_text()


@needs_mpl
def test_extra_grid_axis_is_taken_by_name(files):
    """A dataset with an extra grid axis after sigma_b2 (as residual/RNN sweeps will have)."""
    import vxsim.plot as vp

    ds = vxsim.open_results(files["jvp"])
    an = vxsim.open_results(files["jvp"], group="analysis")
    alpha = [0.5, 1.0]
    ds2 = ds.expand_dims(alpha=alpha).transpose(
        "mode", "width", "activation", "sigma_w2", "sigma_b2", "alpha", ...
    )
    ds2["growth_rate_annealed"] = ds2.growth_rate_annealed * ds2.alpha  # alpha = 1: unchanged
    an2 = an.expand_dims(alpha=alpha)
    fig = vp.phase(ds2, analysis=an2)
    assert r"$\alpha$ = 0.5 (first of 2)" in fig._suptitle.get_text()
    fig = vp.phase(ds2, analysis=an2, sel={"alpha": "1"})
    got = np.ma.filled(fig.axes[0].collections[0].get_array(), np.nan)
    want = ds.growth_rate_annealed.sel(mode="jvp", width=16, activation="tanh").values.T
    np.testing.assert_array_equal(got.ravel(), want.ravel())  # alpha = 1: factor 1
    with pytest.raises(vxsim.VxsimError, match=r"alpha=2: .* allowed: 0.5, 1$"):
        vp.phase(ds2, analysis=an2, sel={"alpha": 2})
    fig = vp.boundary([an2], sel={"alpha": 1})
    assert len(fig.axes) == 1


# ---------------------------------------------------------------- depth profile


@needs_mpl
@pytest.mark.parametrize("mode", ["jvp", "vjp"])
def test_depth_profile_mean_spread_and_theory_slope(files, mode):
    from matplotlib.collections import PolyCollection

    import vxsim.plot as vp

    sw2 = [1.0, 2.0, 3.0]
    fig = vp.depth(files["both"], sel=f"activation=relu,sigma_b2=0.05,mode={mode}", sigma_w2=sw2)
    assert tuple(fig.get_size_inches()) == pytest.approx((3.4, 2.6))
    (ax,) = fig.axes
    fills = [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert len(fills) == 3 and len(ax.collections) == 3
    assert len(ax.lines) == 6  # a mean and a theory line per sigma_w2
    ds = vxsim.open_results(files["both"])
    var = {"jvp": "log_tangent_norm", "vjp": "log_grad_norm"}[mode]
    y = ds[var].sel(width=16, activation="relu", sigma_b2=0.05)
    layers = ds.layer.values
    l0 = 11 if mode == "jvp" else 10  # depth 20, transient 10: first layer of the fit window
    sign = 1 if mode == "jvp" else -1
    for k, s in enumerate(sw2):
        mean_line, theory = ax.lines[2 * k], ax.lines[2 * k + 1]
        want = y.sel(sigma_w2=s).mean("sample").values
        np.testing.assert_allclose(mean_line.get_ydata(), want)
        np.testing.assert_array_equal(mean_line.get_xdata(), layers)
        lx, ly = np.asarray(theory.get_xdata()), np.asarray(theory.get_ydata())
        # ReLU: chi1 = sigma_w2 / 2 at every q (closed form), slope +-log chi1 per layer
        slope = np.polyfit(lx, ly, 1)[0]
        assert slope == pytest.approx(sign * math.log(s / 2), abs=1e-12)
        anchor = int(np.flatnonzero(lx == l0)[0])
        assert ly[anchor] == pytest.approx(float(y.sel(sigma_w2=s, layer=l0).mean("sample")))
        assert set(lx) == set(layers[layers > 10] if mode == "jvp" else layers[layers <= 10])
        # band: mean +- s.d. over samples
        band = fills[k].get_paths()[0].vertices[:, 1]
        sd = y.sel(sigma_w2=s).std("sample", ddof=1).values
        assert band.max() == pytest.approx(np.max(want + sd))
        assert band.min() == pytest.approx(np.min(want - sd))
    assert "(annealed)" in " ".join(t.get_text() for leg in fig.legends for t in leg.get_texts())
    assert ax.get_xlabel() == "layer $l$" and ax.get_ylabel()


@needs_mpl
def test_depth_profile_default_lines_and_title(files):
    import vxsim.plot as vp

    fig = vp.depth(files["jvp"])
    title = fig._suptitle.get_text()
    assert "activation tanh (first of 2)" in title and "(first of 3)" in title
    assert len(fig.axes[0].collections) == 5  # up to five sigma_w2 spread over the grid
    with pytest.raises(vxsim.VxsimError, match=r"--sigma-w2 1.1: .* allowed: 0.5, 1, 1.5"):
        vp.depth(files["jvp"], sigma_w2="1.1")


# ---------------------------------------------------------------- boundary


@needs_mpl
def test_boundary_files_and_theory_curves(files):
    import vxsim.plot as vp

    fig = vp.boundary([files["jvp"], files["both"]], activations="erf,relu", sel="mode=jvp")
    (ax,) = fig.axes
    an = vxsim.open_results(files["jvp"], group="analysis")
    # theory: tanh, relu (shared by both files and --activation relu), erf
    theory = [line for line in ax.lines if len(line.get_xdata()) > 20]
    assert len(theory) == 3
    tanh, relu, erf = theory
    assert theory_line_at(tanh, 0.0) == pytest.approx(1.0, abs=1e-9)
    assert theory_line_at(tanh, 0.05) == pytest.approx(tanh_critical(0.05), abs=1e-6)
    assert np.all(np.asarray(relu.get_xdata()) == 2.0)
    assert theory_line_at(erf, 0.0) == pytest.approx(math.pi / 4, abs=1e-9)  # erf: 1/E[phi'(0)^2]
    # measured: one error-bar set per (file, activation) with a crossing
    bars = [c for c in ax.containers]
    n_expected = 2 * sum(
        bool(np.isfinite(an.critical_sigma_w2_annealed.sel(mode="jvp", activation=a)).any())
        for a in ("tanh", "relu")
    )
    assert len(bars) == n_expected
    relu_pts = bars[1].lines[0]
    crit = an.critical_sigma_w2_annealed.sel(mode="jvp", width=16, activation="relu").values
    np.testing.assert_allclose(relu_pts.get_xdata(), crit[np.isfinite(crit)])
    texts = [t.get_text() for leg in fig.legends for t in leg.get_texts()]
    assert {"tanh", "relu", "erf"} <= set(texts)
    assert any("jvp.h5: measured (annealed, 95% CI)" in t for t in texts)


@needs_mpl
def test_boundary_theory_only_range():
    import vxsim.plot as vp

    fig = vp.boundary(activations=["relu", "leaky_relu(0.5)"], sigma_b2="0:0.2:5")
    lines = fig.axes[0].lines
    assert len(lines) == 2
    np.testing.assert_allclose(lines[0].get_ydata(), [0, 0.0125, 0.05, 0.1125, 0.2])
    # leaky ReLU(a): sigma_w2 = 2 / (1 + a^2)
    np.testing.assert_allclose(lines[1].get_xdata(), 2 / 1.25)


# ---------------------------------------------------------------- output formats


@needs_mpl
def test_vector_and_raster_outputs(files, tmp_path):
    import vxsim.plot as vp

    fig = vp.depth(files["jvp"], sel="activation=relu,sigma_b2=0")
    pdf, svg, png = tmp_path / "d.pdf", tmp_path / "d.svg", tmp_path / "d.png"
    vp.save(fig, pdf)
    vp.save(fig, svg)
    vp.save(fig, png, dpi=200)
    raw = pdf.read_bytes()
    assert raw.startswith(b"%PDF-") and raw.rstrip().endswith(b"%%EOF")
    assert b"/Subtype /Image" not in raw  # lines and text as vectors, no embedded bitmap
    text = svg.read_text()
    assert text.startswith("<?xml") and "<svg" in text and text.count("<path") > 20
    assert "<image" not in text
    assert png_size(png) == (680, 520)
    assert not list(tmp_path.glob(".vxsim-plot-*"))  # no temporary files left behind
    mask = os.umask(0)
    os.umask(mask)
    assert png.stat().st_mode & 0o777 == 0o666 & ~mask  # as open() makes it, not 0600


# ---------------------------------------------------------------- command line


def invoke(*args):
    return CliRunner().invoke(main, ["plot", *args])


@needs_mpl
def test_cli_writes_each_figure(files, tmp_path):
    out = tmp_path / "phase.png"
    r = invoke("phase", files["jvp"], "-o", str(out), "--dpi", "100")
    assert r.exit_code == 0, r.output
    assert png_size(out) == (340, 220)
    out = tmp_path / "depth.svg"
    r = invoke("depth", files["jvp"], "--sel", "activation=tanh,sigma_b2=0.05", "-o", str(out))
    assert r.exit_code == 0, r.output
    assert out.read_text().startswith("<?xml")
    out = tmp_path / "boundary.pdf"
    r = invoke("boundary", files["jvp"], "-a", "erf", "-o", str(out), "--size", "7,3")
    assert r.exit_code == 0, r.output
    assert out.read_bytes().startswith(b"%PDF-") and "7 x 3 in" in r.output


def _one_line_error(r, *fragments):
    assert r.exit_code == 2, r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vxsim: error: "), r.output
    for frag in fragments:
        assert frag in lines[0], lines[0]


@needs_mpl
def test_cli_errors_are_one_line(files, tmp_path):
    out = str(tmp_path / "x.png")
    f = files["jvp"]
    _one_line_error(
        invoke("phase", f, "-o", out, "--sel", "depth=3"),
        "no dimension 'depth'",
        "selectable: mode, width, activation",
    )
    _one_line_error(
        invoke("phase", f, "-o", out, "--sel", "activation=gelu"), "allowed: tanh, relu"
    )
    _one_line_error(
        invoke("depth", f, "-o", out, "--sel", "sigma_b2=0.07"), "allowed: 0, 0.05, 0.1"
    )
    _one_line_error(invoke("phase", f, "-o", out, "--sel", "sigma_w2=1"), "drawn on an axis")
    _one_line_error(invoke("phase", f, "-o", out, "--sel", "activation"), "expected NAME=VALUE")
    _one_line_error(invoke("phase", f, "-o", str(tmp_path / "x.gif")), ".png, .pdf, .svg")
    _one_line_error(invoke("phase", f), "missing option -o")
    _one_line_error(invoke("phase", f, "-o", out, "--size", "wide"), "--size")
    _one_line_error(invoke("phase", f, "-o", out, "--estimator", "x"), "annealed, quenched")
    _one_line_error(invoke("boundary", "-o", out), "nothing to draw")
    _one_line_error(invoke("boundary", "-a", "tahn", "-o", out), "unknown activation")
    _one_line_error(invoke("phase", str(tmp_path / "none.h5"), "-o", out), "does not exist")
    assert not (tmp_path / "x.png").exists()


@needs_mpl
def test_cli_refuses_unfinished_file(tmp_path):
    path = str(tmp_path / "running.h5")
    hdf5.create(path, _config("jvp"), "numpy", "cpu")
    for kind in ("phase", "depth", "boundary"):
        out = tmp_path / f"{kind}.png"
        _one_line_error(
            invoke(kind, path, "-o", str(out)),
            "is not finished (status: running, 0/4 work units)",
            "--resume",
        )
        assert not out.exists()


def test_cli_without_matplotlib(files, tmp_path, monkeypatch):
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    out = tmp_path / "x.png"
    _one_line_error(invoke("phase", files["jvp"], "-o", str(out)), 'pip install "vxsim[plot]"')
    assert not out.exists()
