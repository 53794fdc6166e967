"""Growth-rate fits, bootstrap intervals, zero crossings, depth scales: data with known answers."""

import numpy as np
import pytest

from vxsim.analysis import boundary, depth, growth


def test_slopes_recover_a_line_and_mode_direction():
    layers = np.arange(1, 101)
    y = 0.3 * layers + 5.0
    assert growth.slopes(layers, y) == pytest.approx(0.3, abs=1e-12)
    jvp = growth.growth_rates(np.stack([y, y])[None], layers, 100, 10, "jvp")
    vjp = growth.growth_rates(np.stack([y, y])[None], layers, 100, 10, "vjp")
    assert jvp["quenched"][0] == pytest.approx(0.3) and vjp["quenched"][0] == pytest.approx(-0.3)
    assert jvp["annealed"][0] == pytest.approx(0.3)


def test_fit_window_skips_the_transient_from_where_the_signal_enters():
    layers = np.arange(1, 51)
    assert growth.fit_window(layers, 50, 10, "jvp").nonzero()[0][0] == 10
    assert growth.fit_window(layers, 50, 10, "vjp").nonzero()[0][-1] == 39
    assert growth.fit_window(np.array([1, 2]), 2, 10, "jvp").all()  # too shallow: all layers


def test_quenched_and_annealed_differ_as_theory_says():
    """y_s(l) = a l + sqrt(l) sigma xi_s (a random walk with drift a).

    Quenched: E[slope] = a. Annealed: log E exp(y) = a l + sigma^2 l / 2, slope a + sigma^2/2.
    """
    gen = np.random.default_rng(1)
    a, sigma, S, L = -0.05, 0.2, 4000, 60
    layers = np.arange(1, L + 1)
    steps = a + sigma * gen.standard_normal((S, L))
    y = np.cumsum(steps, axis=1)
    r = growth.growth_rates(y, layers, L, 0, "jvp")
    assert r["quenched"] == pytest.approx(a, abs=4 * r["quenched_se"])
    assert r["annealed"] == pytest.approx(a + sigma**2 / 2, abs=0.01)
    assert 0 < r["quenched_se"] < 0.01 and np.isfinite(r["annealed_se"])


def test_diverged_samples_are_left_out():
    layers = np.arange(1, 21)
    y = np.stack([0.1 * layers, 0.1 * layers, np.full(20, np.nan)])
    r = growth.growth_rates(y, layers, 20, 0, "jvp")
    assert r["quenched"] == pytest.approx(0.1) and r["samples_used"] == 2
    all_bad = growth.growth_rates(np.full((2, 20), np.nan), layers, 20, 0, "jvp")
    assert np.isnan(all_bad["quenched"]) and np.isnan(all_bad["annealed"])


def test_zero_crossing_is_exact_for_a_linear_rate():
    s = np.linspace(0.5, 4.0, 15)
    assert boundary.zero_crossing(s, 0.7 * (s - 1.37)) == pytest.approx(1.37, abs=1e-12)
    assert np.isnan(boundary.zero_crossing(s, s + 1))  # no crossing in the grid
    many = boundary.zero_crossing(s, np.stack([s - 1.0, s - 2.0, -s]))
    np.testing.assert_allclose(many[:2], [1.0, 2.0])
    assert np.isnan(many[2])
    # unsorted grids and a NaN point far from the crossing
    order = np.random.default_rng(0).permutation(15)
    rate = (s - 2.2)[order].copy()
    rate[order.tolist().index(14)] = np.nan
    assert boundary.zero_crossing(s[order], rate) == pytest.approx(2.2)


def test_bootstrap_interval_covers_the_truth():
    """Synthetic sweeps with critical point 2.0: the 95% interval covers it ~95% of the time."""
    gen = np.random.default_rng(7)
    s = np.linspace(1.5, 2.5, 11)
    layers = np.arange(1, 41)
    hits, trials = 0, 60
    counts = boundary.resample_counts(8, n_boot=300, seed=3)
    for _ in range(trials):
        slope_per_sample = np.log(s / 2.0)[:, None] + 0.05 * gen.standard_normal((11, 8))
        y = slope_per_sample[..., None] * layers  # (Sw, S, R)
        q, _ = boundary.bootstrap_rates(y, layers, 40, 0, "jvp", counts)
        lo, hi = boundary.interval(boundary.zero_crossing(s, q))
        hits += lo <= 2.0 <= hi
    assert hits >= 0.8 * trials  # binomial(60, 0.95): P(hits < 48) ~ 1e-3


def test_bootstrap_replicates_agree_with_the_plain_estimate():
    gen = np.random.default_rng(2)
    layers = np.arange(1, 31)
    y = np.cumsum(-0.1 + 0.3 * gen.standard_normal((5, 6, 30)), axis=-1)  # (points, S, R)
    counts = np.ones((1, 6))  # the identity replicate
    q, a = boundary.bootstrap_rates(y, layers, 30, 3, "jvp", counts)
    plain = growth.growth_rates(y, layers, 30, 3, "jvp")
    np.testing.assert_allclose(q[0], plain["quenched"], rtol=1e-12)
    np.testing.assert_allclose(a[0], plain["annealed"], rtol=1e-12)


def test_resample_counts_are_deterministic_multinomials():
    c1 = boundary.resample_counts(8, n_boot=50, seed=5)
    c2 = boundary.resample_counts(8, n_boot=50, seed=5)
    assert np.array_equal(c1, c2) and np.all(c1.sum(axis=1) == 8)
    assert not np.array_equal(c1, boundary.resample_counts(8, n_boot=50, seed=6))


def test_depth_scale_recovers_an_exponential_approach():
    layers = np.arange(1, 201)
    xi, c_star = 7.5, 0.4
    corr = c_star + 0.5 * np.exp(-layers / xi)
    gen = np.random.default_rng(0)
    noisy = corr + 1e-7 * gen.standard_normal((4, 200))
    out = depth.correlation_depth_scale(noisy[None], layers, transient=1)
    assert out[0] == pytest.approx(xi, rel=0.02)
    flat = depth.correlation_depth_scale(np.full((1, 4, 200), 0.3), layers, transient=1)
    assert np.isnan(flat[0])


def test_annealed_jackknife_equals_explicit_leave_one_out():
    gen = np.random.default_rng(4)
    layers = np.arange(1, 26)
    y = np.cumsum(0.05 + 0.4 * gen.standard_normal((7, 25)), axis=-1)
    y[:, :] += np.array([0, 0, 0, 0, 0, 0, 30.0])[:, None]  # one sample dominates the mean
    r = growth.growth_rates(y, layers, 25, 2, "jvp")
    loo = np.array(
        [
            growth.growth_rates(np.delete(y, s, axis=0), layers, 25, 2, "jvp")["annealed"]
            for s in range(7)
        ]
    )
    se = np.sqrt(6 / 7 * np.sum((loo - loo.mean()) ** 2))
    assert r["annealed_se"] == pytest.approx(se, rel=1e-9)


def test_zero_crossing_with_one_sigma_w2_is_nan():
    from vxsim.analysis.boundary import zero_crossing

    assert np.isnan(zero_crossing([1.0], [0.3]))
    assert np.all(np.isnan(zero_crossing([1.0], np.zeros((2, 3, 1)))))
    assert zero_crossing([1.0], np.zeros((2, 3, 1))).shape == (2, 3)
