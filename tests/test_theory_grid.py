"""vxsim.theory.grid: the whole-grid evaluator against meanfield, point by point."""

import importlib
import math
import time

import numpy as np
import pytest

from vxsim import activations
from vxsim import theory as T
from vxsim.errors import VxsimError
from vxsim.theory import gaussian, meanfield

# the module (vxsim.theory.grid, the attribute, is the function)
G = importlib.import_module("vxsim.theory.grid")

KEYS = {"q_star", "chi1", "log_chi1", "c_star", "chi_c", "xi_q", "xi_c"}
POINT_KEYS = ("q_star", "chi1", "c_star", "chi_c", "xi_q", "xi_c")
# every activation with an MLP theory (relu_power has its residual theory only)
LABELS = [n for n in activations.names() if activations.REGISTRY[n].mlp_theory]
LABELS += ["leaky_relu(0.2)"]

# 6 x 4, both phases for the saturating activations, q^l diverging for the others
SW2 = np.linspace(0.5, 4.0, 6)
SB2 = np.linspace(0.0, 0.3, 4)


def homogeneous(label):
    return activations.parse(label)[0].homogeneous


def check_against_meanfield(label, res, sw2_values, sb2_values, rel=1e-6, abs_=1e-9):
    """Every point of ``res`` against meanfield.point; returns (ordered, chaotic) counts."""
    counts = [0, 0]
    for i, sw2 in enumerate(sw2_values):
        for j, sb2 in enumerate(sb2_values):
            got = {k: res[k][i, j] for k in KEYS}
            where = f"{label} at sigma_w2={sw2:g}, sigma_b2={sb2:g}"
            try:
                ref = T.point(label, sw2, sb2)
            except T.NoFixedPoint:
                for k in ("q_star", "c_star", "chi_c", "xi_q", "xi_c"):
                    assert math.isnan(got[k]), f"{k} not NaN for {where}"
                if homogeneous(label):
                    # chi1 = sigma_w2 E[phi'(z)^2] at any q
                    want = T.chi1(label, None, sw2, sb2, q=1.0)
                    assert got["chi1"] == pytest.approx(want, rel=1e-13), where
                else:
                    assert math.isnan(got["chi1"]), f"chi1 not NaN for {where}"
                continue
            for k in POINT_KEYS:
                assert got[k] == pytest.approx(ref[k], rel=rel, abs=abs_), f"{k} for {where}"
            counts[ref["chi1"] > 1.0 and ref["c_star"] < 1.0] += 1
        assert np.array_equal(res["log_chi1"][i], np.log(res["chi1"][i]), equal_nan=True)
    return counts


@pytest.mark.slow
@pytest.mark.parametrize("label", LABELS)
def test_grid_agrees_with_meanfield(label):
    res = T.grid(label, None, SW2, SB2)
    ordered, chaotic = check_against_meanfield(label, res, SW2, SB2)
    if label in ("tanh", "erf", "hard_tanh", "elu", "selu"):
        assert ordered > 0 and chaotic > 0  # the grid spans both phases


def test_points_settled_at_c_zero_leave_the_others_right(monkeypatch):
    """tanh at sigma_b2 = 0 has c* = 0 exactly (E[phi] = 0). Quadrature gives E[phi] = 0
    or ~1e-18 depending on its summation order, which differs between CPUs (this
    failed on an AVX-512 machine): with exact zeros the first stage settles those
    points and the others go on with their own series. Here the zeros are exact."""
    original = G._hermite_coefficients

    def exact(fa, r, nt):
        A, B = original(fa, r, nt)
        A[np.abs(A[:, 0]) < 1e-12, 0] = 0.0  # E[tanh(r z)] = 0 in exact arithmetic
        return A, B

    monkeypatch.setattr(G, "_hermite_coefficients", exact)
    sb2 = [0.0, 0.1]
    res = T.grid("tanh", None, SW2, sb2)
    assert np.all(res["c_star"][SW2 > 1.0, 0] == 0.0)  # settled at the first stage
    ordered, chaotic = check_against_meanfield("tanh", res, SW2, sb2)
    assert ordered > 0 and chaotic > 0


@pytest.mark.slow
@pytest.mark.parametrize(
    ("label", "sw2", "sb2"),
    [
        ("tanh", [1.3, 2.5, 4.0], [0.0, 0.05, 0.3]),
        ("hard_tanh", [1.2, 2.0], [0.02, 0.3]),
        ("elu", [1.5, 1.9], [0.0, 0.2]),
        ("selu", [0.5, 0.9], [0.0, 0.01]),
    ],
)
def test_quadrature_branch_agrees_with_meanfield(monkeypatch, label, sw2, sb2):
    # an 8-term series certifies almost nothing: c* then comes from the vectorised
    # conditioning quadrature nearly everywhere
    monkeypatch.setattr(G, "N_MEHLER", (8,))
    res = T.grid(label, None, sw2, sb2)
    _, chaotic = check_against_meanfield(label, res, sw2, sb2)
    assert chaotic > 0


@pytest.mark.parametrize(
    ("label", "q"), [("relu", 1.0), ("hard_tanh", 1.7), ("selu", 0.002), ("elu", 30.0)]
)
def test_vectorised_conditioning_matches_gaussian_expect2(label, q):
    act, a = activations.parse(label)
    fa = meanfield._resolve(label)
    cs = np.array([0.2, 0.9, 0.999, 1 - 1e-7, 1 - 1e-12])
    pairs = ((fa.phi, fa.phi), (fa.dphi, fa.dphi))
    e, d = G._expect2_many(pairs, np.full(cs.size, math.sqrt(q)), cs, fa.kinks)
    for k, c in enumerate(cs):
        want_e = gaussian.expect2(fa.phi, fa.phi, q, q, c, fa.kinks, fa.kinks)
        want_d = gaussian.expect2(fa.dphi, fa.dphi, q, q, c, fa.kinks, fa.kinks)
        assert e[k] == pytest.approx(want_e, abs=1e-13 * q)
        assert d[k] == pytest.approx(want_d, abs=1e-13)


@pytest.mark.parametrize(
    ("label", "q"), [("tanh", 2.5), ("hard_tanh", 1.3), ("hard_tanh", 0.04), ("elu", 20.0)]
)
def test_mehler_series_matches_gaussian_expect2(label, q):
    fa = meanfield._resolve(label)
    r = np.array([math.sqrt(q), 0.7, 3.0])  # other points share the nodes
    A, B = G._hermite_coefficients(fa, r, 300)
    a2, b2 = A[0] ** 2, B[0] ** 2
    e_phi2 = gaussian.expect(lambda x: fa.phi(x) ** 2, q, fa.kinks)
    assert -1e-14 * q <= e_phi2 - a2.sum() <= 1e-4 * q  # the series' tail at c = 1
    for c in (0.0, 0.5, 0.9):
        want_e = gaussian.expect2(fa.phi, fa.phi, q, q, c, fa.kinks, fa.kinks)
        want_d = gaussian.expect2(fa.dphi, fa.dphi, q, q, c, fa.kinks, fa.kinks)
        got_e = np.polynomial.polynomial.polyval(c, a2)
        got_d = np.polynomial.polynomial.polyval(c, b2)
        assert got_e == pytest.approx(want_e, abs=1e-12 * q)
        assert got_d == pytest.approx(want_d, abs=1e-12)


# ------------------------------------------------------ shapes and NaN patterns


def test_shapes_keys_and_phases_tanh():
    sw2 = np.array([0.5, 1.0, 1.5, 2.5, 4.0])
    sb2 = np.array([0.0, 0.05, 0.3])
    res = T.grid("tanh", None, sw2, sb2)
    assert set(res) == KEYS
    for v in res.values():
        assert v.shape == (5, 3) and v.dtype == np.float64
    assert np.all(np.isfinite(res["q_star"]))
    ordered = res["chi1"] <= 1.0
    assert np.all(res["c_star"][ordered] == 1.0)
    assert np.array_equal(res["chi_c"][ordered], res["chi1"][ordered])
    chaotic = ~ordered & (res["q_star"] > 0)
    assert chaotic.sum() >= 6
    assert np.all((res["c_star"][chaotic] >= 0.0) & (res["c_star"][chaotic] < 1.0))
    assert np.all(res["chi_c"][chaotic] < 1.0)  # c* is the stable fixed point
    assert np.all(np.isfinite(res["xi_c"][chaotic]))
    # odd phi at sigma_b2 = 0: c* = 0; q* = 0 for sigma_w2 <= 1, where c* = 1
    assert np.all(res["c_star"][2:, 0] == pytest.approx(0.0, abs=1e-12))
    assert np.all(res["q_star"][:2, 0] == 0.0) and np.all(res["c_star"][:2, 0] == 1.0)
    assert res["xi_q"][1, 0] == math.inf and res["xi_c"][1, 0] == math.inf
    assert np.array_equal(res["log_chi1"], np.log(res["chi1"]))


def test_nan_pattern_relu_and_gelu():
    sw2 = np.array([0.5, 1.5, 2.0, 2.5, 3.0])
    sb2 = np.array([0.0, 0.1])
    res = T.grid("relu", None, sw2, sb2)
    finite = (sw2[:, None] < 2.0) | ((sw2[:, None] == 2.0) & (sb2[None, :] == 0.0))
    assert np.array_equal(np.isfinite(res["q_star"]), finite)
    for k in ("c_star", "chi_c", "xi_q", "xi_c"):
        assert np.array_equal(np.isnan(res[k]), ~finite), k
    # homogeneous: chi1 = sigma_w2 / 2 also where q* is infinite
    assert res["chi1"] == pytest.approx(np.broadcast_to(sw2[:, None] / 2, (5, 2)), rel=1e-13)
    assert np.all(np.isfinite(res["log_chi1"]))
    assert np.all(res["c_star"][finite] == 1.0)  # never chaotic with a finite q*

    res = T.grid("gelu", None, sw2, sb2)
    none = np.isnan(res["q_star"])
    assert none.any() and (~none).any()
    for k in ("chi1", "log_chi1", "c_star", "chi_c", "xi_q", "xi_c"):
        assert np.array_equal(np.isnan(res[k]), none), k


def test_axis_order_and_activation_forms():
    sw2 = np.array([3.0, 0.8, 2.2, 1.5, 2.2])  # unsorted, with a repeat
    sb2 = np.array([0.3, 0.0, 0.1])
    res = T.grid("gelu", None, sw2, sb2)
    i, j = np.argsort(sw2, kind="stable"), np.argsort(sb2)
    ref = T.grid("gelu", None, sw2[i], sb2[j])
    for k in KEYS:
        assert np.array_equal(res[k][np.ix_(i, j)], ref[k], equal_nan=True), k
    a = T.grid("leaky_relu(0.2)", None, [1.0, 3.0], [0.1])
    b = T.grid(activations.REGISTRY["leaky_relu"], 0.2, [1.0, 3.0], [0.1])
    for k in KEYS:
        assert np.array_equal(a[k], b[k], equal_nan=True), k
    assert a["chi1"][:, 0] == pytest.approx([1.04 / 2, 3 * 1.04 / 2], rel=1e-13)


def test_empty_axes_and_bad_input():
    res = T.grid("tanh", None, [], [0.0, 0.1])
    assert all(v.shape == (0, 2) for v in res.values())
    with pytest.raises(VxsimError):
        T.grid("tanh", None, [[1.0, 2.0]], [0.0])
    with pytest.raises(VxsimError):
        T.grid("tanh", None, [1.0], [-0.1])
    with pytest.raises(VxsimError):
        T.grid("tanh", None, [1.0, np.nan], [0.0])
    with pytest.raises(VxsimError):
        T.grid("nope", None, [1.0], [0.0])
    with pytest.raises(VxsimError):
        T.grid("tanh", None, [1.0], [0.0], q0=-1.0)


# --------------------------------------------------------------------- speed


@pytest.mark.slow
def test_speed_40x40_printed():
    """Times a 40 x 40 grid; printed (pytest -s), not asserted."""
    sw2 = np.linspace(1.0, 4.0, 40)
    sb2 = np.linspace(0.0, 0.3, 40)
    for label in ("tanh", "relu", "gelu"):
        start = time.perf_counter()
        res = T.grid(label, None, sw2, sb2)
        elapsed = time.perf_counter() - start
        print(f"grid 40 x 40 {label}: {elapsed:.2f} s")
        assert res["q_star"].shape == (40, 40)
        if not homogeneous(label):
            assert np.array_equal(np.isfinite(res["chi1"]), np.isfinite(res["q_star"]))
