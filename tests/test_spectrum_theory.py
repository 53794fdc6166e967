"""Free-probability spectrum of J J^T (theory.spectrum): closed forms, Monte Carlo, the CLI."""

import json
import math

import numpy as np
import pytest
from click.testing import CliRunner

from vxsim import activations
from vxsim.cli import main
from vxsim.errors import VxsimError
from vxsim.theory import meanfield
from vxsim.theory import spectrum as sp

# The density is integrated by the trapezoidal rule on the adaptive grid in
# t = log lambda; the square-root edges of the bulk cost O(h^1.5) there, which
# with the grid's step control (STEP_TOL) measures 2e-5 .. 2e-4 in the mass and in
# the first two moments of every case below: 5e-4 leaves room and still fails for
# a wrong factor anywhere (an extra layer changes lambda_var_norm by >= 2 %).
QUAD = 5e-4


def _ks(lam, dens):
    """Kolmogorov-Smirnov distance between pooled eigenvalues and the theory's CDF.

    Eigenvalues below 1e-24 of the largest are the rank deficiency of J (the SVD's
    rounding puts them near 1e-32): they count as lambda = 0, the theory's atom.
    """
    lam = np.sort(np.ravel(lam))
    n = lam.size
    zero = lam <= 1e-24 * lam[-1]
    t = np.log(lam[~zero])
    below = zero.sum()
    F = dens.cdf(t)
    hi = (below + np.arange(1, t.size + 1)) / n
    lo = (below + np.arange(t.size)) / n
    return max(np.max(np.abs(F - hi)), np.max(np.abs(F - lo))), below / n


def _haar(gen, n):
    """Haar orthogonal matrix: QR of a Gaussian matrix with the sign fix (Mezzadri 2007)."""
    q, r = np.linalg.qr(gen.standard_normal((n, n)))
    return q * np.sign(np.diag(r))


def monte_carlo(act, sw2, sb2, init, depth, q0, n, samples, seed=0):
    """lambda = s^2 of J^l = W^l D^{l-1} ... W^1 formed explicitly (float64), (samples, n)."""
    a, p = activations.parse(act)
    gen = np.random.default_rng(seed)
    out = []
    for _ in range(samples):
        x = gen.standard_normal(n)
        h = x * math.sqrt(q0 * n) / np.linalg.norm(x)
        J = np.eye(n)
        for k in range(1, depth + 1):
            Z = (
                math.sqrt(n) * _haar(gen, n)
                if init == "orthogonal"
                else gen.standard_normal((n, n))
            )
            W = math.sqrt(sw2 / n) * Z
            if k > 1:
                J = a.dphi(h, p)[:, None] * J
                h = a.phi(h, p)
            J = W @ J
            h = W @ h + math.sqrt(sb2) * gen.standard_normal(n)
        out.append(np.linalg.svd(J, compute_uv=False) ** 2)
    return np.array(out)


def test_weight_law_table():
    assert sp._weight_law("orthogonal") == (0.0, "haar")
    for label in ("gaussian", "uniform", "rademacher", "student_t(5)"):
        assert sp._weight_law(label) == (-1.0, "marchenko_pastur")
    with pytest.raises(VxsimError, match="unknown weight law"):
        sp._weight_law("cauchy")
    with pytest.raises(VxsimError, match="student_t"):
        sp._weight_law("student_t(1)")  # nu > 2


def test_moments_closed_forms():
    # linear, Gaussian: Fuss-Catalan, mean sigma_w2^l, normalised variance l
    m = sp.moments("linear", 1.3, 0.0, "gaussian", [1, 4, 50])
    np.testing.assert_allclose(m.lambda_mean, 1.3 ** np.array([1, 4, 50]), rtol=1e-12)
    np.testing.assert_allclose(m.lambda_var_norm, [1, 4, 50], rtol=1e-12)
    # relu: phi'^2 is Bernoulli(1/2): mu1 = mu2 = 1/2, mu2/mu1^2 - 1 = 1, any q
    m = sp.moments("relu", 2.0, 0.3, "gaussian", [1, 7])
    np.testing.assert_allclose(m.lambda_mean, [2.0, 2.0], rtol=1e-12)
    np.testing.assert_allclose(m.lambda_var_norm, [1.0, 7 + 6], rtol=1e-12)
    m = sp.moments("relu", 2.0, 0.0, "orthogonal", [7])
    assert m.lambda_var_norm[0] == pytest.approx(6.0, rel=1e-12) and m.s1 == 0.0
    # linear orthogonal: exactly isometric up to scale
    m = sp.moments("linear", 0.8, 0.0, "orthogonal", [10])
    assert m.lambda_var_norm[0] == 0.0 and m.lambda_mean[0] == pytest.approx(0.8**10)


def test_moments_at_the_fixed_point_are_chi1_powers():
    """From q^1 = q*: lambda_mean = chi1^l / mu1, var = l (v - s1) - v, v = mu2/mu1^2 - 1."""
    sw2, sb2 = 1.4, 0.07
    q = meanfield.q_star("tanh", None, sw2, sb2)
    q0 = (q - sb2) / sw2
    for init, s1 in (("gaussian", -1.0), ("orthogonal", 0.0)):
        m = sp.moments("tanh", sw2, sb2, init, [1, 10, 200], q0=q0)
        assert m.q_star == pytest.approx(q, rel=1e-12)
        assert m.chi1 == pytest.approx(meanfield.chi1("tanh", None, sw2, sb2), rel=1e-12)
        ls = np.array([1, 10, 200])
        v = m.mu2 / m.mu1**2 - 1
        np.testing.assert_allclose(m.lambda_mean, m.chi1**ls / m.mu1, rtol=1e-10)
        np.testing.assert_allclose(m.lambda_var_norm, ls * (v - s1) - v, rtol=1e-10)


def test_moments_follow_the_trajectory():
    """From q0 = 1 the early layers have q^k != q*: the sums use each layer's own mu_j."""
    sw2, sb2, l = 1.2, 0.05, 4
    m = sp.moments("tanh", sw2, sb2, "gaussian", [l], q0=1.0)
    q = sw2 * 1.0 + sb2
    mean, var = sw2**l, float(l)
    for _ in range(l - 1):
        mu1 = meanfield._expect(meanfield._resolve("tanh"), lambda x: (1 - np.tanh(x) ** 2) ** 2, q)
        mu2 = meanfield._expect(meanfield._resolve("tanh"), lambda x: (1 - np.tanh(x) ** 2) ** 4, q)
        mean, var = mean * mu1, var + mu2 / mu1**2 - 1
        q = meanfield.length_map("tanh", None, sw2, sb2, q)
    assert m.lambda_mean[0] == pytest.approx(mean, rel=1e-12)
    assert m.lambda_var_norm[0] == pytest.approx(var, rel=1e-12)


def test_log_mean_survives_beyond_the_float_range():
    m = sp.moments("relu", 8.0, 0.0, "gaussian", [2000])
    assert m.log_lambda_mean[0] == pytest.approx(2000 * math.log(8) + 1999 * math.log(0.5))
    assert np.isinf(m.lambda_mean[0]) and np.isfinite(m.lambda_var_norm[0])


@pytest.mark.parametrize("order", [1, 3, 8, 40])
def test_fuss_catalan_moments_and_mass(order):
    sw2 = 1.1
    d = sp.density("linear", sw2, 0.0, "gaussian", order)
    assert d.mass() == pytest.approx(1.0, abs=QUAD)
    assert d.atom_at_zero == 0.0 and d.point_mass is None
    assert d.log_lambda_mean == pytest.approx(order * math.log(sw2))
    for k in (1, 2, 3):
        # the k-th moment sits in the upper tail: its quadrature error grows like (l+1)^k
        tol = QUAD * (k if order < 8 else 4 * k)
        assert d.moment_ratio(k) == pytest.approx(sp.fuss_catalan_moment(order, k), rel=tol)
    assert sp.fuss_catalan_moment(order, 2) == order + 1


def test_marchenko_pastur_density_pointwise():
    """l = 1, sigma_w2 = 1: rho(lambda) = sqrt(lambda (4 - lambda)) / (2 pi lambda) on [0, 4]."""
    d = sp.density("linear", 1.0, 0.0, "gaussian", 1)
    lam = np.exp(d.log_lambda)
    inside = (lam > 0.05) & (lam < 3.9)
    exact = np.sqrt(np.clip(lam * (4 - lam), 0, None)) / (2 * np.pi)  # lambda rho(lambda)
    np.testing.assert_allclose(d.rho_log[inside], exact[inside], atol=1e-6)
    # outside: 0, or O(ETA) where the polish at ETA = 0 did not converge next to the edge
    assert np.all(d.rho_log[lam > 4.0 + 1e-6] <= 1e-8)
    assert np.mean(d.rho_log[lam > 4.0 + 1e-6] == 0.0) > 0.9


def test_point_mass_and_atom():
    d = sp.density("linear", 1.7, 0.0, "orthogonal", 12)
    assert d.point_mass[0] == pytest.approx(1.7**12, rel=1e-12) and d.point_mass[1] == 1.0
    assert d.log_lambda.size == 0 and d.mass() == 1.0
    r = sp.density("relu", 2.0, 0.0, "gaussian", 5)
    assert r.atom_at_zero == pytest.approx(0.5, abs=1e-15)
    assert r.mass() == pytest.approx(1.0, abs=QUAD)
    assert sp.density("relu", 2.0, 0.0, "gaussian", 1).atom_at_zero == 0.0  # J = W^1
    # Haar weights, l = 2: J J^T = sigma_w2^2 O D^2 O^T, half 0 and half sigma_w2^2
    two = sp.density("relu", 1.5, 0.0, "orthogonal", 2)
    assert two.point_mass == (pytest.approx(2.25), pytest.approx(0.5)) and two.atom_at_zero == 0.5
    assert two.moment_ratio(2) / two.moment_ratio(1) ** 2 - 1 == pytest.approx(1.0)
    assert two.lambda_var_norm == pytest.approx(1.0) and two.mass() == 1.0


@pytest.mark.parametrize("act", ["tanh", "relu", "erf"])
@pytest.mark.parametrize("init", ["gaussian", "orthogonal"])
def test_density_integrates_to_one_with_the_fixed_point_moments(act, init):
    sw2, sb2, l = (2.0, 0.0, 9) if act == "relu" else (1.3, 0.04, 9)
    d = sp.density(act, sw2, sb2, init, l)
    q = meanfield.q_star(act, None, sw2, sb2, q0=sw2 + sb2) if act != "relu" else 1.0
    m = sp.moments(act, sw2, sb2, init, [l], q0=(q - sb2) / sw2)
    assert d.mass() == pytest.approx(1.0, abs=QUAD)
    assert d.log_lambda_mean == pytest.approx(m.log_lambda_mean[0], abs=1e-12)
    assert d.lambda_var_norm == pytest.approx(m.lambda_var_norm[0], rel=1e-12)
    m1, m2 = d.moment_ratio(1), d.moment_ratio(2)
    assert m1 == pytest.approx(1.0, rel=QUAD)
    assert m2 / m1**2 - 1 == pytest.approx(d.lambda_var_norm, rel=2 * QUAD)


def test_deep_critical_tanh_stays_finite_and_isometric_when_orthogonal():
    """Pennington et al. 2017: tanh on the critical line at q* = 1/64, l = 1000."""
    sb2 = 4.651333266916124e-06  # critical line point with q* = 1/64 (brentq, 1e-14)
    sw2 = meanfield.critical_sigma_w2("tanh", None, sb2)
    assert meanfield.q_star("tanh", None, sw2, sb2) == pytest.approx(1 / 64, rel=1e-9)
    g = sp.density("tanh", sw2, sb2, "gaussian", 1000)
    o = sp.density("tanh", sw2, sb2, "orthogonal", 1000)
    for d in (g, o):
        assert np.all(np.isfinite(d.rho_log)) and d.mass() == pytest.approx(1.0, abs=QUAD)
    assert g.log_lambda[0] < -10000  # the Gaussian net's spread over 10^(-4000) and more
    assert o.log_lambda[0] > -10 and o.log_lambda[-1] < 10  # orthogonal: O(1)
    var = o.moment_ratio(2) / o.moment_ratio(1) ** 2 - 1
    assert var == pytest.approx(o.lambda_var_norm, rel=2 * QUAD)


# Monte Carlo: J^l formed explicitly at N = 200, a few samples (float64, numpy.linalg.svd).
# The per-sample lambda_mean and lambda_var_norm are averaged over samples; their
# spread gives a standard error. Finite width biases lambda_var_norm by O(l/N)
# (a single square Wishart factor has m2 = 2 + 1/N): 6 % at l = 5, N = 200 leaves room.
MC = [("tanh", 1.5, 0.1), ("relu", 2.0, 0.0)]


@pytest.mark.parametrize("act, sw2, sb2", MC)
@pytest.mark.parametrize("init", ["gaussian", "orthogonal"])
def test_monte_carlo_moments(act, sw2, sb2, init):
    l, n, samples = 5, 200, 6
    lam = monte_carlo(act, sw2, sb2, init, l, 1.0, n, samples, seed=3)
    m = sp.moments(act, sw2, sb2, init, [l], q0=1.0)
    mean = lam.mean(axis=1)
    vn = lam.var(axis=1) / mean**2
    se_mean = mean.std(ddof=1) / math.sqrt(samples)
    se_vn = vn.std(ddof=1) / math.sqrt(samples)
    assert mean.mean() == pytest.approx(m.lambda_mean[0], abs=4 * se_mean + 0.02 * mean.mean())
    assert vn.mean() == pytest.approx(m.lambda_var_norm[0], abs=4 * se_vn + 0.06 * vn.mean())


@pytest.mark.parametrize("act, sw2, sb2", MC)
@pytest.mark.parametrize("init", ["gaussian", "orthogonal"])
def test_monte_carlo_density(act, sw2, sb2, init):
    """The pooled eigenvalues of a net started at q* against the fixed-point density.

    Eigenvalues are rigid (their counting function fluctuates by O(log N / N)), and the
    finite-N edges move by O(N^(-2/3)), which matters most for the narrow orthogonal
    tanh spectrum; measured distances at N = 300 are 0.006-0.03 over seeds: 0.04 is
    the bound. The other weight law's density must be at least twice as far and
    > 0.06 (measured: tanh 0.37, relu 0.08-0.09), the test's power.
    For relu the atom at 0 has mass 1 - min_k rank(D^k)/N at finite N, one minus the
    minimum of l - 1 Binomial(N, 1/2)/N: about 1/2 + 1.03 sqrt(1/(4N)) = 0.54; those
    excess zeros come out of the bottom of the continuous part, so the bound there
    grows by the measured excess.
    """
    l, n, samples = (8 if act == "relu" else 5), 300, 3
    q = meanfield.q_star(act, None, sw2, sb2, q0=sw2 + sb2) if act != "relu" else 1.0
    lam = monte_carlo(act, sw2, sb2, init, l, (q - sb2) / sw2, n, samples, seed=5)
    d = sp.density(act, sw2, sb2, init, l)
    other = sp.density(act, sw2, sb2, "orthogonal" if init == "gaussian" else "gaussian", l)
    ks, frac0 = _ks(lam, d)
    if d.atom_at_zero:
        assert 0.5 <= frac0 < 0.6
    # the excess zeros leave the bottom of the continuous part: the CDFs differ by it there
    assert ks < 0.04 + abs(frac0 - d.atom_at_zero)
    assert _ks(lam, other)[0] > max(2 * ks, 0.06)


def test_errors():
    with pytest.raises(VxsimError, match="layers"):
        sp.moments("tanh", 1.0, 0.0, "gaussian", [0])
    with pytest.raises(VxsimError, match="sigma_w2"):
        sp.density("tanh", 0.0, 0.1, "gaussian", 3)
    with pytest.raises(meanfield.NoFixedPoint):
        sp.density("elu", 30.0, 1.0, "gaussian", 3)
    with pytest.raises(VxsimError):
        sp.moments("nonsense", 1.0, 0.0, "gaussian", [3])


def invoke(*args):
    return CliRunner().invoke(main, list(args))


def test_cli_prints_moments_and_writes_the_density(tmp_path):
    out = tmp_path / "density.csv"
    args = ["theory", "spectrum", "-a", "tanh", "--sigma-w2", "1.3", "--sigma-b2", "0.04"]
    r = invoke(*args, "--init", "orthogonal", "--layers", "9", "--json", "--out", str(out))
    assert r.exit_code == 0, r.output
    res = json.loads(r.output)
    m = sp.moments("tanh", 1.3, 0.04, "orthogonal", [9])
    assert res["lambda_var_norm"] == pytest.approx(m.lambda_var_norm[0], rel=1e-14)
    assert res["s1"] == 0.0 and res["chi1"] == pytest.approx(m.chi1)
    rows = np.loadtxt(out, delimiter=",", skiprows=1)
    assert out.read_text().splitlines()[0] == "lambda,rho,log_lambda,rho_log_lambda"
    d = sp.density("tanh", 1.3, 0.04, "orthogonal", 9)
    np.testing.assert_allclose(rows[:, 2], d.log_lambda)
    np.testing.assert_allclose(rows[:, 0] * rows[:, 1], rows[:, 3], rtol=1e-12, atol=1e-300)
    text = invoke(*args, "--layers", "9")
    assert text.exit_code == 0 and "lambda_var_norm" in text.output


def test_cli_writes_lambda_beyond_the_float_range(tmp_path):
    out = tmp_path / "fc.csv"
    r = invoke("theory", "spectrum", "-a", "linear", "--sigma-w2", "1", "--sigma-b2", "0")
    assert r.exit_code == 2  # --layers missing
    r = invoke(
        "theory", "spectrum", "-a", "linear", "--sigma-w2", "1", "--sigma-b2", "0",
        "--layers", "64", "-o", str(out),
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    first = out.read_text().splitlines()[1].split(",")
    assert float(first[2]) < -800 and "e-" in first[0] and float(first[0]) == 0.0  # text keeps it


@pytest.mark.parametrize(
    "extra, fragment",
    [
        (["--layers", "0"], "--layers"),
        (["--layers", "x"], "--layers"),
        (["--layers", "3", "--init", "cauchy"], "unknown weight law"),
        (["--layers", "3", "--q0", "-1"], "--q0"),
        (["--layers", "3", "-o", "/nonexistent/d.csv"], "does not exist"),
    ],
)
def test_cli_errors_are_one_line(extra, fragment):
    r = invoke("theory", "spectrum", "-a", "tanh", "--sigma-w2", "1.3", "--sigma-b2", "0.1", *extra)
    assert r.exit_code == 2
    assert fragment in r.output and r.output.count("\n") == 1 and "Traceback" not in r.output
