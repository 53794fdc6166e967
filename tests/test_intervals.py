"""Honest intervals: none from one sample, open where the edge leaves the grid, and every
crossing flagged by where it lies in the grid (never extrapolated)."""

import json

import numpy as np
from conftest import run_cli, small_config

import vxsim
from vxsim import fits
from vxsim.store.summary import boundary_rows

S = [1.0, 2.0, 3.0, 4.0]


def test_crossing_flags():
    rates = np.array(
        [
            [-2.0, -1.0, 1.0, 2.0],  # inside
            [-1.0, 1.0, 2.0, 3.0],  # first interval
            [-3.0, -2.0, -1.0, 1.0],  # last interval
            [-3.0, -2.0, -1.0, -0.5],  # ordered everywhere: edge above the grid
            [0.0, 1.0, 2.0, 3.0],  # chaotic everywhere: edge below
            [np.nan, 1.0, -1.0, 2.0],  # the NaN is skipped: a crossing in the last interval
            [1.0, -1.0, 1.0, np.nan],  # a crossing at i = 1 despite the NaN at the end
            [np.nan, np.nan, np.nan, np.nan],
        ]
    )
    assert fits.crossing_flag(S, rates).tolist() == [0, 1, 2, 3, 4, 2, 0, 5]
    # the same rates with sigma_w2 given in another order: the same flags
    order = [2, 0, 3, 1]
    assert fits.crossing_flag(np.array(S)[order], rates[:, order]).tolist() == [
        0, 1, 2, 3, 4, 2, 0, 5
    ]  # fmt: skip
    x = fits.zero_crossing(S, rates)
    assert np.isnan(x[3:5]).all() and np.isnan(x[7])  # never extrapolated
    assert fits.crossing_flag([1.0], np.array([[-1.0], [1.0]])).tolist() == [3, 4]


def _sweep(tmp_path, samples, sigma_w2):
    cfg = small_config(
        network__width=32,
        network__depth=60,
        network__activation=["tanh"],
        grid__sigma_w2=sigma_w2,
        grid__sigma_b2=[0.05],
        monte_carlo__samples=samples,
        engine__backend="numpy",
    )
    out = str(tmp_path / f"s{samples}.h5")
    vxsim.run_sweep(cfg, out)
    return out


def test_one_sample_gives_no_interval(tmp_path):
    out = _sweep(tmp_path, 1, [1.0, 1.5, 2.0, 2.5, 3.0])
    r = run_cli("boundary", out, "--json")
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert rows and all(row["ci_low"] is None and row["ci_high"] is None for row in rows)
    assert all(row["note"] == "no interval: fewer than 2 Monte Carlo samples" for row in rows)
    assert any(row["critical_sigma_w2"] is not None for row in rows)
    ds = vxsim.open_results(out, group="analysis")
    assert np.isnan(ds["growth_rate_quenched_ci_low"].values).all()
    assert "fewer than 2" in ds.attrs["interval_note"]
    text = run_cli("boundary", out).stdout
    assert "(no interval: fewer than 2 Monte Carlo samples)" in text


def test_an_edge_beyond_the_grid_is_flagged_not_extrapolated(tmp_path):
    """tanh at sigma_b2 = 0.05 has its edge at sigma_w2 = 1.76: a grid below it has none."""
    rows = boundary_rows(_sweep(tmp_path, 4, [0.5, 0.8, 1.1, 1.3]))
    for row in rows:
        assert row["critical_sigma_w2"] is None and row["ci_low"] is None
        assert row["flag"].startswith("none: the rate is negative over the whole grid")
    inside = boundary_rows(_sweep(tmp_path, 3, [0.5, 1.0, 1.5, 2.0, 2.5, 3.0]))
    for row in inside:
        assert row["flag"] == "inside the grid" and 1.5 < row["critical_sigma_w2"] < 3.0
        assert row["ci_low"] <= row["critical_sigma_w2"] <= row["ci_high"] and row["note"] is None
