"""Mean-field theory (vxsim.theory): closed forms, Monte Carlo, quadrature and the CLI."""

import json
import math

import h5py
import numpy as np
import pytest
from click.testing import CliRunner
from scipy import integrate, optimize
from scipy.stats import norm

from vxsim import activations
from vxsim import theory as T
from vxsim.errors import VxsimError
from vxsim.theory import gaussian
from vxsim.theory.cli import theory as theory_cli

POINT_KEYS = {"sigma_w2", "sigma_b2", "q_star", "chi1", "c_star", "chi_c", "xi_q", "xi_c"}


def bound(label):
    act, a = activations.parse(label)
    return (
        lambda x: act.phi(x, a),
        lambda x: act.dphi(x, a),
        lambda x: act.d2phi(x, a),
        tuple(act.kinks(a)),
    )


def arccos_kernel(q1, q2, c):
    """E[relu(u1) relu(u2)] and E[step(u1) step(u2)] (Cho & Saul 2009)."""
    theta = math.acos(c)
    e_phi = math.sqrt(q1 * q2) / (2 * math.pi) * (math.sin(theta) + (math.pi - theta) * c)
    return e_phi, (math.pi - theta) / (2 * math.pi)


# ---------------------------------------------------------------- closed forms


@pytest.mark.parametrize("sw2", [0.5, 1.0, 1.5, 1.9])
@pytest.mark.parametrize("sb2", [0.0, 0.1, 0.7])
def test_relu_closed_forms(sw2, sb2):
    q = T.q_star("relu", None, sw2, sb2)
    assert q == pytest.approx(sb2 / (1 - sw2 / 2), rel=1e-12, abs=1e-300)
    assert T.chi1("relu", None, sw2, sb2) == pytest.approx(sw2 / 2, rel=1e-12)
    # chi1 = sigma_w2 / 2 at every q, not only at q*
    for qq in (1e-3, 0.37, 25.0):
        assert T.chi1("relu", None, sw2, sb2, q=qq) == pytest.approx(sw2 / 2, rel=1e-12)
    assert T.length_map("relu", None, sw2, sb2, 3.1) == pytest.approx(sw2 * 3.1 / 2 + sb2, 1e-13)


def test_relu_correlation_map_arccos_kernel():
    sw2, sb2 = 1.5, 0.2
    q = T.q_star("relu", None, sw2, sb2)
    for c in (-0.9, 0.0, 0.5, 0.99, 1 - 1e-8, 1.0):
        e_phi, e_step = arccos_kernel(q, q, c)
        assert T.correlation_map("relu", None, sw2, sb2, c) == pytest.approx(
            (sw2 * e_phi + sb2) / q, abs=1e-12
        )
        assert T.chi_c("relu", None, sw2, sb2, c=c) == pytest.approx(sw2 * e_step, abs=1e-12)


@pytest.mark.parametrize(("q1", "q2"), [(1.0, 1.0), (0.3, 2.0), (40.0, 9.0)])
@pytest.mark.parametrize("c", [-0.7, 0.3, 0.999, 1 - 1e-9, -1.0, 1.0])
def test_bivariate_kinked_against_arccos_kernel(q1, q2, c):
    relu = lambda x: np.maximum(x, 0.0)
    step = lambda x: (x > 0.0) * 1.0
    e_phi, e_step = arccos_kernel(q1, q2, c)
    assert gaussian.expect2(relu, relu, q1, q2, c, (0.0,), (0.0,)) == pytest.approx(
        e_phi, abs=1e-12
    )
    assert gaussian.expect2(step, step, q1, q2, c, (0.0,), (0.0,)) == pytest.approx(
        e_step, abs=1e-12
    )


def test_leaky_relu_and_linear_closed_forms():
    a = 0.2
    assert T.chi1("leaky_relu(0.2)", None, 1.5, 0.3) == pytest.approx(1.5 * (1 + a * a) / 2, 1e-12)
    assert T.critical_sigma_w2("leaky_relu", 0.2, 0.3) == pytest.approx(2 / (1 + a * a), 1e-14)
    assert T.critical_sigma_w2("relu", None, 0.3) == 2.0
    assert T.critical_sigma_w2("linear", None, 0.3) == 1.0
    sw2, sb2 = 0.6, 0.2
    res = T.point("linear", sw2, sb2)
    q = sb2 / (1 - sw2)
    assert res["q_star"] == pytest.approx(q, rel=1e-13)
    assert res["chi1"] == pytest.approx(sw2, rel=1e-13)
    assert res["c_star"] == 1.0 and res["chi_c"] == pytest.approx(sw2, rel=1e-13)
    assert res["xi_q"] == pytest.approx(-1 / math.log(sw2), rel=1e-12)
    assert res["xi_c"] == pytest.approx(-1 / math.log(sw2), rel=1e-12)
    for c in (-0.5, 0.3, 0.9):
        assert T.correlation_map("linear", None, sw2, sb2, c) == pytest.approx(
            (sw2 * q * c + sb2) / q, abs=1e-13
        )


def erf_e_phi2(q):
    return 2 / math.pi * math.asin(2 * q / (1 + 2 * q))


def erf_e_dphi2(q):
    return 4 / math.pi / math.sqrt(1 + 4 * q)


@pytest.mark.parametrize("q", [1e-4, 0.3, 0.99, 1.01, 3.0, 50.0, 1e4])
def test_erf_arcsine_kernel(q):
    phi, dphi, _, kinks = bound("erf")
    assert gaussian.expect(lambda x: phi(x) ** 2, q) == pytest.approx(erf_e_phi2(q), abs=1e-13)
    assert gaussian.expect(lambda x: dphi(x) ** 2, q) == pytest.approx(erf_e_dphi2(q), abs=1e-13)
    # the bivariate kernel, both rules, near c = 1 too
    for c in (-0.6, 0.4, 0.9999, 1 - 1e-10):
        exact = 2 / math.pi * math.asin(2 * c * q / (1 + 2 * q))
        for method in ("auto", "split"):
            got = gaussian.expect2(phi, phi, q, q, c, method=method)
            assert got == pytest.approx(exact, abs=1e-13)


def erf_critical(sb2):
    """The erf critical line in closed form.

    chi1 = sw2 (4/pi) / sqrt(1 + 4q) = 1 gives sw2 = (pi/4) sqrt(1 + 4q); the fixed
    point q = sw2 (2/pi) asin(2q/(1+2q)) + sb2 then reads
        sb2 = q - (1/2) sqrt(1 + 4q) asin(2q/(1+2q)),
    increasing from 0 at q = 0. Solve it for q, then sw2 follows.
    """
    if sb2 == 0.0:
        return math.pi / 4, 0.0
    f = lambda q: q - 0.5 * math.sqrt(1 + 4 * q) * math.asin(2 * q / (1 + 2 * q)) - sb2
    q = optimize.brentq(f, 1e-12, 1e3, xtol=1e-300, rtol=1e-15, maxiter=500)
    return math.pi / 4 * math.sqrt(1 + 4 * q), q


@pytest.mark.parametrize("sb2", [0.0, 0.003, 0.05, 0.3, 2.0])
def test_erf_critical_line_closed_form(sb2):
    sw2, q = erf_critical(sb2)
    assert T.critical_sigma_w2("erf", None, sb2) == pytest.approx(sw2, abs=1e-8)
    res = T.critical("erf", sb2)
    assert res["sigma_w2"] == pytest.approx(sw2, abs=1e-8)
    assert res["q_star"] == pytest.approx(q, abs=1e-7)


def test_tanh_critical_at_one_zero():
    # at sigma_b2 = 0 the q* = 0 branch ends exactly at 1/phi'(0)^2 = 1, where chi1
    # = 1 exactly; beyond it chi1 - 1 ~ (sigma_w2 - 1)^2 / 3 is below rounding for a
    # while, so the edge is located from the branch, not by root finding in the noise
    assert abs(T.critical_sigma_w2("tanh", None, 0.0) - 1.0) <= 1e-12
    res = T.point("tanh", 1.0, 0.0)
    assert res["q_star"] == 0.0 and res["chi1"] == 1.0
    assert res["xi_q"] == math.inf and res["xi_c"] == math.inf
    line = T.critical_line("tanh", [0.0, 0.05, 0.2])
    assert line["sigma_w2"][0] == pytest.approx(1.0, abs=1e-8)
    assert np.all(np.diff(line["sigma_w2"]) > 0)


@pytest.mark.parametrize("label", ["tanh", "hard_tanh", "elu", "selu", "sigmoid", "erf"])
def test_chi1_is_one_on_the_critical_line(label):
    res = T.critical(label, 0.1)
    assert T.chi1(label, None, res["sigma_w2"], 0.1) == pytest.approx(1.0, abs=1e-10)
    assert T.q_star(label, None, res["sigma_w2"], 0.1) == pytest.approx(res["q_star"], rel=1e-12)


def test_selu_self_normalising_fixed_point():
    # lambda, alpha are chosen so that E[selu(z)^2] = 1: q* = 1 at sigma_w2 = 1, sigma_b2 = 0
    assert T.q_star("selu", None, 1.0, 0.0) == pytest.approx(1.0, abs=1e-9)


# ------------------------------------------------ fixed points and their approach


def test_q_star_zero_and_slow_approach():
    # tanh at sigma_b2 = 0, sigma_w2 <= 1: q* = 0, approached like 1/(2l)
    assert T.q_star("tanh", None, 0.7, 0.0) == 0.0
    assert T.q_star("tanh", None, 1.0, 0.0) == 0.0
    qs = T.iterate_length_map("tanh", None, 1.0, 0.0, 1.0, 2000)
    assert 0.9 < 2 * 2000 * qs[-1] < 1.1  # still far from 0 after 2000 layers
    # just above 1 the nonzero fixed point ~ (sigma_w2 - 1)/2 is found
    assert T.q_star("tanh", None, 1 + 1e-6, 0.0) == pytest.approx(5e-7, rel=1e-5)
    # hard_tanh at sigma_w2 = 1: q' - q ~ -exp(-1/2q) is below rounding near 0, still q* = 0
    for q0 in (1.0, 0.5, 0.2):
        assert T.q_star("hard_tanh", None, 1.0, 0.0, q0=q0) == 0.0


@pytest.mark.parametrize(("sw2", "q0"), [(2.13, 0.001), (2.12, 0.05)])
def test_q_star_near_a_saddle_node(sw2, q0):
    # GELU at sigma_b2 = 0.1: q' - q dips below 0 between two doubling steps of the
    # bracket search (a pair of fixed points about to merge); the fixed point is found
    qs = T.iterate_length_map("gelu", None, sw2, 0.1, q0, 2000)
    assert T.q_star("gelu", None, sw2, 0.1, q0=q0) == pytest.approx(qs[-1], rel=1e-9)


@pytest.mark.parametrize(
    ("label", "sw2", "sb2"),
    [("tanh", 2.5, 0.1), ("erf", 0.7, 1e-3), ("elu", 1.5, 0.1), ("hard_tanh", 1.8, 0.05)],
)
def test_q_star_is_the_limit_of_the_iteration(label, sw2, sb2):
    qs = T.iterate_length_map(label, None, sw2, sb2, 1.0, 400)
    assert T.q_star(label, None, sw2, sb2) == pytest.approx(qs[-1], rel=1e-10)


def test_relu_marginal_and_q0():
    assert T.q_star("relu", None, 2.0, 0.0) == 1.0
    assert T.q_star("relu", None, 2.0, 0.0, q0=3.0) == 3.0
    assert T.critical("relu", 0.0) == {
        "activation": "relu",
        "sigma_b2": 0.0,
        "sigma_w2": 2.0,
        "q_star": 1.0,
    }
    assert T.critical("relu", 0.1)["q_star"] == math.inf


@pytest.mark.parametrize(
    ("label", "sw2", "sb2"),
    [
        ("relu", 2.5, 0.1),
        ("relu", 2.0, 0.1),
        ("leaky_relu(0.2)", 2.0, 0.01),
        ("linear", 1.5, 0.1),
        ("softplus", 2.5, 0.1),
        ("elu", 2.5, 0.0),
        ("gelu", 4.0, 0.3),
    ],
)
def test_no_fixed_point(label, sw2, sb2):
    with pytest.raises(T.NoFixedPoint, match="no finite fixed point"):
        T.q_star(label, None, sw2, sb2)
    with pytest.raises(VxsimError):
        T.point(label, sw2, sb2)


def test_correlation_fixed_point():
    # ordered phase: c* = 1, chi_c = chi1
    res = T.point("tanh", 1.5, 0.05)
    assert res["chi1"] < 1 and res["c_star"] == 1.0 and res["chi_c"] == res["chi1"]
    # chaotic, odd phi, sigma_b2 = 0: c* = 0
    res = T.point("tanh", 2.0, 0.0)
    assert res["chi1"] > 1 and abs(res["c_star"]) < 1e-12
    # chaotic: c* is a fixed point and chi_c < 1 (stable)
    res = T.point("tanh", 2.5, 0.1)
    assert 0 < res["c_star"] < 1 and res["chi_c"] < 1
    c = T.correlation_map("tanh", None, 2.5, 0.1, res["c_star"])
    assert c == pytest.approx(res["c_star"], abs=1e-12)
    assert res["xi_c"] == pytest.approx(-1 / math.log(res["chi_c"]), rel=1e-14)


def test_correlation_map_slope():
    # slope at c = 1 equals chi1: second-order one-sided difference (smooth phi)
    for label, sw2, sb2 in [("tanh", 2.5, 0.1), ("erf", 1.2, 0.3)]:
        f = lambda c, lab=label, s=sw2, b=sb2: T.correlation_map(lab, None, s, b, c)
        h = 1e-4
        slope = (3 * f(1.0) - 4 * f(1 - h) + f(1 - 2 * h)) / (2 * h)
        assert f(1.0) == pytest.approx(1.0, abs=1e-14)
        assert slope == pytest.approx(T.chi1(label, None, sw2, sb2), abs=1e-6)
    # kinked phi: the map has a (1 - c)^(3/2) term at c = 1, so the plain one-sided
    # difference converges like sqrt(h); interior slopes equal chi_c(c) (Price's theorem)
    for label, sw2, sb2 in [("relu", 1.5, 0.2), ("hard_tanh", 2.5, 0.1), ("elu", 1.5, 0.1)]:
        f = lambda c, lab=label, s=sw2, b=sb2: T.correlation_map(lab, None, s, b, c)
        h = 1e-10
        assert (f(1.0) - f(1 - h)) / h == pytest.approx(T.chi1(label, None, sw2, sb2), abs=1e-4)
        for c in (0.2, 0.9):
            d = 1e-5
            slope = (f(c + d) - f(c - d)) / (2 * d)
            assert slope == pytest.approx(T.chi_c(label, None, sw2, sb2, c=c), abs=1e-8)


@pytest.mark.parametrize(
    ("label", "sw2", "sb2"), [("tanh", 1.5, 0.05), ("hard_tanh", 2.5, 0.1), ("elu", 1.5, 0.1)]
)
def test_xi_q_is_the_slope_of_the_length_map(label, sw2, sb2):
    # hard_tanh: phi'' has delta functions at +-1 that the registry's d2phi (0) leaves out
    q = T.q_star(label, None, sw2, sb2)
    h = 1e-5 * q
    fd = (
        T.length_map(label, None, sw2, sb2, q + h) - T.length_map(label, None, sw2, sb2, q - h)
    ) / (2 * h)
    slope = T.length_map_slope(label, None, sw2, sb2)
    assert slope == pytest.approx(fd, abs=1e-8)
    assert T.point(label, sw2, sb2)["xi_q"] == pytest.approx(-1 / math.log(fd), rel=1e-6)


# ------------------------------------------------------------------ quadrature


def quad_expect(f, q, kinks):
    """E[f(sqrt(q) z)] with scipy.integrate.quad in x, split at the kinks."""
    s = math.sqrt(q)
    lim = 13 * s
    pts = sorted(k for k in kinks if -lim < k < lim) or None
    g = lambda x: float(f(np.array([x]))[0]) * norm.pdf(x, scale=s)
    val, _ = integrate.quad(g, -lim, lim, points=pts, epsabs=1e-14, epsrel=1e-13, limit=500)
    return val


@pytest.mark.parametrize(
    "label", ["relu", "leaky_relu(0.2)", "hard_tanh", "elu", "elu(0.5)", "selu"]
)
def test_kinked_split_quadrature_against_quad(label):
    phi, dphi, d2phi, kinks = bound(label)
    for q in (0.05, 0.7, 3.0, 40.0):
        for f in (lambda x: phi(x) ** 2, lambda x: dphi(x) ** 2, lambda x: phi(x) * d2phi(x)):
            assert gaussian.expect(f, q, kinks) == pytest.approx(quad_expect(f, q, kinks), abs=1e-9)


def test_quadrature_across_a_kink_is_wrong():
    # why kinks are panel edges: Gauss-Hermite straight across hard_tanh's kinks
    _, dphi, _, kinks = bound("hard_tanh")
    f = lambda x: dphi(x) ** 2
    exact = 2 * norm.cdf(1 / math.sqrt(0.8)) - 1
    assert gaussian.expect(f, 0.8, kinks) == pytest.approx(exact, abs=1e-14)
    assert abs(gaussian.expect(f, 0.8, method="hermite") - exact) > 1e-4


@pytest.mark.parametrize("label", ["tanh", "gelu", "silu", "softplus", "sigmoid"])
def test_smooth_rules_agree(label):
    # Gauss-Hermite (q <= 1) and the split rule agree where both apply, and the split
    # rule agrees with quad at large q
    phi, dphi, d2phi, _ = bound(label)
    fs = (lambda x: phi(x) ** 2, lambda x: dphi(x) ** 2, lambda x: phi(x) * d2phi(x))
    for q in (0.01, 0.4, 1.0):
        for f in fs:
            gh = gaussian.expect(f, q, method="hermite")
            assert gh == pytest.approx(gaussian.expect(f, q, method="split"), abs=1e-13)
    for q in (1.5, 3.0, 30.0):
        for f in fs:
            assert gaussian.expect(f, q) == pytest.approx(quad_expect(f, q, ()), abs=1e-9)


def test_bivariate_hard_tanh_against_quad():
    q, c = 2.0, 0.9
    phi, _, _, kinks = bound("hard_tanh")
    r, s = math.sqrt(q), math.sqrt(1 - c * c)

    def inner(z1):  # E[clip(X, -1, 1)], X ~ N(m, sd^2), in closed form
        m, sd = r * c * z1, r * s
        a, b = (-1 - m) / sd, (1 - m) / sd
        mid = m * (norm.cdf(b) - norm.cdf(a)) + sd * (norm.pdf(a) - norm.pdf(b))
        return -norm.cdf(a) + norm.sf(b) + mid

    g = lambda z1: float(phi(np.array([r * z1]))[0]) * inner(z1) * norm.pdf(z1)
    pts = [-1 / r, 1 / r, -1 / (r * c), 1 / (r * c)]
    want, _ = integrate.quad(g, -13, 13, points=pts, epsabs=1e-14, epsrel=1e-13, limit=500)
    assert gaussian.expect2(phi, phi, q, q, c, kinks, kinks) == pytest.approx(want, abs=1e-11)


# ------------------------------------------------------------------ Monte Carlo


@pytest.fixture(scope="module")
def normals():
    rng = np.random.default_rng(20170101)
    return rng.standard_normal(2_000_000), rng.standard_normal(2_000_000)


@pytest.mark.parametrize(
    ("label", "sw2", "sb2"),
    [
        ("tanh", 2.5, 0.1),
        ("hard_tanh", 2.5, 0.1),
        ("erf", 2.0, 0.05),
        ("relu", 1.5, 0.2),
        ("leaky_relu(0.2)", 1.5, 0.2),
        ("elu", 1.5, 0.1),
        ("selu", 1.2, 0.1),
        ("gelu", 1.5, 0.3),
        ("silu", 2.5, 0.1),
        ("softplus", 1.5, 0.05),
        ("sigmoid", 4.0, 0.3),
        ("linear", 0.5, 0.1),
    ],
)
def test_against_monte_carlo(normals, label, sw2, sb2):
    z1, z2 = normals
    phi, dphi, _, _ = bound(label)
    res = T.point(label, sw2, sb2)
    q, c = res["q_star"], res["c_star"]
    n = z1.size

    def check(samples, want):
        mean, se = samples.mean(), samples.std() / math.sqrt(n)
        assert abs(mean - want) <= 5 * se + 1e-12, (mean, want, se)

    u1 = math.sqrt(q) * z1
    check(sw2 * phi(u1) ** 2 + sb2, q)  # q* is a fixed point of the MC length map
    check(sw2 * dphi(u1) ** 2, res["chi1"])
    if c < 1.0:  # chaotic: c* is a fixed point of the MC correlation map
        u2 = math.sqrt(q) * (c * z1 + math.sqrt(1 - c * c) * z2)
        check((sw2 * phi(u1) * phi(u2) + sb2) / q, c)
        check(sw2 * dphi(u1) * dphi(u2), res["chi_c"])


# ------------------------------------------------------------------ input checks


def test_bad_inputs_raise_vxsim_error():
    with pytest.raises(VxsimError, match="unknown activation"):
        T.point("tanhh", 1.0, 0.0)
    with pytest.raises(VxsimError, match="takes no parameter"):
        T.point("tanh(0.3)", 1.0, 0.0)
    with pytest.raises(VxsimError, match="sigma_w2"):
        T.point("tanh", -1.0, 0.0)
    with pytest.raises(VxsimError, match="sigma_b2"):
        T.q_star("tanh", None, 1.0, float("nan"))
    with pytest.raises(VxsimError, match="sigma_b2"):
        T.critical("tanh", float("inf"))
    with pytest.raises(VxsimError, match="q0"):
        T.q_star("tanh", None, 1.0, 0.1, q0=-1.0)
    with pytest.raises(VxsimError, match="c must lie"):
        T.correlation_map("tanh", None, 1.0, 0.1, 1.5)
    assert issubclass(T.NoFixedPoint, VxsimError)


# -------------------------------------------------------------------------- CLI


def run(*args):
    return CliRunner().invoke(theory_cli, list(args))


def test_cli_point_json_and_text():
    res = run("point", "--activation", "tanh", "--sigma-w2", "2.5", "--sigma-b2", "0.1", "--json")
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert set(data) == POINT_KEYS
    assert data["q_star"] == pytest.approx(T.point("tanh", 2.5, 0.1)["q_star"], rel=1e-15)
    res = run("point", "-a", "tanh", "--sigma-w2", "1", "--sigma-b2", "0", "--json")
    assert json.loads(res.stdout)["xi_c"] is None  # inf -> null: strict JSON
    res = run("point", "-a", "relu", "--sigma-w2", "1.5", "--sigma-b2", "0.2")
    assert res.exit_code == 0
    for key in ("q_star", "chi1", "c_star", "xi_q", "xi_c"):
        assert key in res.stdout


def test_cli_critical():
    res = run("critical", "--activation", "relu", "--sigma-b2", "0.1", "--json")
    assert res.exit_code == 0
    data = json.loads(res.stdout)
    assert set(data) == {"activation", "sigma_b2", "sigma_w2", "q_star"}
    assert data["sigma_w2"] == 2.0 and data["q_star"] is None
    res = run("critical", "--activation", "tanh", "--sigma-b2", "0")
    assert res.exit_code == 0 and "critical sigma_w2 = 1" in res.stdout


def test_cli_line(tmp_path):
    csv, h5 = tmp_path / "line.csv", tmp_path / "line.h5"
    for path in (csv, h5):
        res = run("line", "-a", "erf", "--sigma-b2", "0:0.3:4", "-o", str(path))
        assert res.exit_code == 0, res.output
    lines = csv.read_text().splitlines()
    assert lines[0] == "sigma_b2,sigma_w2,q_star" and len(lines) == 5
    rows = np.array([[float(v) for v in line.split(",")] for line in lines[1:]])
    with h5py.File(h5) as fh:
        assert fh.attrs["activation"] == "erf"
        for i, key in enumerate(("sigma_b2", "sigma_w2", "q_star")):
            np.testing.assert_array_equal(fh[key][:], rows[:, i])
    np.testing.assert_allclose(rows[:, 0], [0, 0.1, 0.2, 0.3])
    for sb2, sw2 in rows[:, :2]:
        assert sw2 == pytest.approx(erf_critical(sb2)[0], abs=1e-8)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["line.csv", "line.h5"]


@pytest.mark.parametrize(
    "args",
    [
        ["point", "-a", "tanhh", "--sigma-w2", "1", "--sigma-b2", "0"],
        ["point", "-a", "leaky_relu(x)", "--sigma-w2", "1", "--sigma-b2", "0"],
        ["point", "-a", "tanh", "--sigma-w2", "-1", "--sigma-b2", "0"],
        ["point", "-a", "tanh", "--sigma-w2", "1", "--sigma-b2", "-0.1"],
        ["point", "-a", "tanh", "--sigma-w2", "nan", "--sigma-b2", "0"],
        ["point", "-a", "tanh", "--sigma-w2", "abc", "--sigma-b2", "0"],
        ["point", "-a", "tanh", "--sigma-w2", "1", "--sigma-b2", "0", "--q0", "-2"],
        ["point", "-a", "tanh", "--sigma-b2", "0"],
        ["point", "--sigma-w2", "1", "--sigma-b2", "0"],
        ["point", "-a", "relu", "--sigma-w2", "2.5", "--sigma-b2", "0.1"],
        ["point", "-a", "relu", "--sigma-w2", "2.5", "--sigma-b2", "0.1", "--json"],
        ["critical", "-a", "nope", "--sigma-b2", "0.1"],
        ["critical", "-a", "tanh", "--sigma-b2", "-1"],
        ["critical", "-a", "tanh"],
        ["line", "-a", "tanh", "--sigma-b2", "0:0.3", "-o", "{tmp}/l.csv"],
        ["line", "-a", "tanh", "--sigma-b2", "0:0.3:x", "-o", "{tmp}/l.csv"],
        ["line", "-a", "tanh", "--sigma-b2", "0:0.3:0", "-o", "{tmp}/l.csv"],
        ["line", "-a", "tanh", "--sigma-b2", "a:0.3:3", "-o", "{tmp}/l.csv"],
        ["line", "-a", "tanh", "--sigma-b2", "-1:0.3:3", "-o", "{tmp}/l.csv"],
        ["line", "-a", "tanh", "--sigma-b2", "0:0.3:3", "-o", "{tmp}/l.txt"],
        ["line", "-a", "tanh", "--sigma-b2", "0:0.3:3", "-o", "{tmp}/missing/l.csv"],
        ["line", "-a", "tanh", "--sigma-b2", "0:0.3:3"],
        ["line", "-a", "bad", "--sigma-b2", "0:0.3:3", "-o", "{tmp}/l.h5"],
    ],
)
def test_cli_errors_one_line_exit_2(tmp_path, args):
    res = run(*[a.replace("{tmp}", str(tmp_path)) for a in args])
    assert res.exit_code == 2
    assert res.stdout == ""
    lines = res.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("vxsim: error: "), res.stderr
    assert "Traceback" not in res.output
    assert not any(p.name != "missing" for p in tmp_path.iterdir())  # nothing half-written


def test_cli_click_usage_errors_exit_2():
    assert run("point", "-a", "tanh", "--bogus").exit_code == 2
    assert run("nonsense").exit_code == 2
