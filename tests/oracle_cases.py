"""The engine-against-oracle cases, configs and tolerances that the numba and cuda tests share."""

import numpy as np

from vxsim import config

ACTS = '["tanh", "relu", "leaky_relu(0.2)", "gelu", "elu"]'

# Tolerances against the oracle, per precision.
#
# float64: the two engines differ only in summation order (BLAS blocking and
# FMA versus the oracle's GEMM shapes, vectorised float64 reductions versus
# einsum), ~1e-16 relative per layer; over 60 layers, even at sigma_w2 = 4
# (chaotic), the differences seen are below 1e-10. 1e-8 leaves a wide margin
# and still catches any real difference (a missed bias term, a wrong scale,
# an off-by-one layer all move these numbers by >= 1e-3).
#
# float32: the states are float32, so the GEMM's summation order alone
# changes each pre-activation by ~1e-7 relative, and the log-norm
# accumulators add up such per-layer errors over the depth, amplified by the
# per-layer growth (chi1 <= ~1.5 for sigma_w2 <= 2). Observed over widths
# 8-64 and depth 60: log_q < 4e-5, corr < 2e-5, log-norms < 4e-4. The
# tolerances below are ~5x that. (In the chaotic phase the float32 networks
# of the two engines decorrelate after a few dozen layers, as any two float32
# implementations would, so float32 is compared for sigma_w2 <= 2 only;
# float64 covers the chaotic side.)
TOL = {
    "float64": {"log_q": 1e-8, "corr": 1e-8, "log_tangent_norm": 1e-8, "log_grad_norm": 1e-8},
    "float32": {"log_q": 2e-4, "corr": 1e-4, "log_tangent_norm": 2e-3, "log_grad_norm": 2e-3},
}
SIGMA_W2 = {"float64": "[0.5, 1.0, 2.0, 3.0, 4.0]", "float32": "[0.5, 1.0, 1.5, 2.0]"}
# The architectures beside the MLP, each with its own grid axis (its last one).
ARCH_AXES = {arch: list(axes)[-1] for arch, axes in config.EXTRA_AXES.items() if axes}


def make_config(*extra, width=16, depth=20, precision="float32", mode="both", sw2=None, acts=ACTS):
    return config.load(
        overrides=[
            f"network.width=[{width}]",
            f"network.depth={depth}",
            f"network.activation={acts}",
            f"grid.sigma_w2={sw2 or SIGMA_W2[precision]}",
            "grid.sigma_b2=[0.0, 0.05]",
            "monte_carlo.samples=2",
            f'measure.mode="{mode}"',
            f'measure.precision="{precision}"',
            *extra,
        ]
    )


def case_config(precision, mode, path, width, depth, record, checkpoint, sample, acts=ACTS):
    """The config of one row of CASES (``sample`` is the row's unit to run, not a config key)."""
    return make_config(
        f"measure.record={record}",
        f"engine.checkpoint={checkpoint}",
        f'engine.path="{path}"',
        width=width,
        depth=depth,
        precision=precision,
        mode=mode,
        acts=acts,
    )


def assert_same(got, want, tol, what=""):
    """Same arrays, same NaN pattern, same divergence flags; values within ``tol[key]``."""
    assert set(got) == set(want), what
    np.testing.assert_array_equal(got["diverged"], want["diverged"], err_msg=what)
    for key, ref in want.items():
        if key == "diverged":
            continue
        assert got[key].shape == ref.shape, (what, key)
        np.testing.assert_array_equal(np.isnan(got[key]), np.isnan(ref), err_msg=f"{what} {key}")
        np.testing.assert_allclose(got[key], ref, rtol=0, atol=tol[key], err_msg=f"{what} {key}")


CASES = [
    # precision, mode, path, width, depth, record, checkpoint, sample
    ("float32", "jvp", "gemm", 16, 40, "{every = 1}", 0, 0),
    ("float32", "jvp", "fused", 33, 60, "{log = 10}", 0, 1),
    ("float32", "vjp", "gemm", 64, 60, "{every = 7}", 0, 0),
    ("float32", "vjp", "fused", 8, 50, "{every = 1}", 7, 1),
    ("float32", "both", "gemm", 24, 45, "{log = 12}", 1, 1),
    ("float32", "both", "fused", 48, 60, "{every = 5}", 0, 0),
    ("float64", "jvp", "fused", 16, 60, "{every = 3}", 0, 0),
    ("float64", "jvp", "gemm", 40, 30, "{every = 1}", 0, 1),
    ("float64", "vjp", "fused", 32, 60, "{log = 9}", 0, 1),
    ("float64", "vjp", "gemm", 8, 60, "{every = 1}", 11, 0),
    ("float64", "both", "fused", 64, 35, "{every = 4}", 5, 1),
    ("float64", "both", "gemm", 12, 60, "{log = 20}", 0, 0),
]
