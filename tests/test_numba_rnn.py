"""The residual and recurrent nets' fused kernels (engines.numba_rnn) against the NumPy oracle.

Every architecture (residual MLP, Elman, GRU, LSTM), mode and precision, keeping every step or
recomputing segments from checkpoints, and the edge cases of the oracle's rules:
divergence flags, float32 underflow to the fixed point, zero input variance,
gate biases far from 0. Tolerances are oracle_cases.TOL (the same summation-order
argument holds: a step is GEMMs plus elementwise arithmetic in the run's dtype,
with float64 norms), except where a case says why.
"""

import numpy as np
import pytest
from oracle_cases import ARCH_AXES, TOL, assert_same, make_config

from vxsim.engines import numba_cpu, numba_rnn, numpy_ref, schedule, workspace

RNNS = ("rnn", "gru", "lstm")
ARCHS = ("residual", *RNNS)
PATHS = ("gemm", "fused")  # per step: BLAS GEMMs + epilogues; per pass: one call per lane
ACTS2 = '["tanh", "relu", "gelu"]'

CASES = [
    # precision, mode, width, depth, record, checkpoint, sample
    ("float32", "jvp", 16, 40, "{every = 1}", 0, 0),
    ("float32", "vjp", 24, 45, "{every = 7}", 0, 1),
    ("float32", "both", 20, 40, "{log = 12}", 6, 1),
    ("float64", "jvp", 12, 40, "{every = 3}", 0, 1),
    ("float64", "vjp", 16, 50, "{every = 1}", 5, 0),
    ("float64", "both", 33, 35, "{every = 4}", 0, 0),
    ("float64", "both", 8, 30, "{every = 1}", 1, 1),
]


def rnn_config(arch, *extra, axis_values="[0.3, 1.0]", **kw):
    return make_config(
        f'network.architecture="{arch}"', f"grid.{ARCH_AXES[arch]}={axis_values}", *extra, **kw
    )


# (architecture, path): each RNN on both paths, forced; the residual net has the GEMM path
ARCH_PATHS = [("residual", "gemm")] + [(arch, path) for arch in RNNS for path in PATHS]


@pytest.mark.parametrize("arch,path", ARCH_PATHS)
@pytest.mark.parametrize("precision,mode,width,depth,record,checkpoint,sample", CASES)
def test_matches_oracle(arch, path, precision, mode, width, depth, record, checkpoint, sample):
    cfg = rnn_config(
        arch,
        f"measure.record={record}",
        f"engine.checkpoint={checkpoint}",
        f'engine.path="{path}"',
        width=width,
        depth=depth,
        precision=precision,
        mode=mode,
        acts=ACTS2,
    )
    assert numba_rnn.choose_path(cfg, width) == path
    got = numba_cpu.run_unit(cfg, width, sample)
    want = numpy_ref.run_unit(cfg, width, sample)
    assert_same(got, want, _tolerance(precision, want), f"{arch} {path} {precision} {mode}")


@pytest.mark.parametrize("arch,path", ARCH_PATHS)
@pytest.mark.parametrize(
    "precision,mode,checkpoint", [("float32", "both", 0), ("float64", "vjp", 5)]
)
def test_a_reused_workspace_changes_no_bit(arch, path, precision, mode, checkpoint):
    """Consecutive units reuse one workspace, uninitialised (engines.workspace): a unit
    after a wider one, its buffers larger than it needs and holding NaN everywhere, gives
    the same bits as the same unit run first, in new memory."""

    def config(width):
        return rnn_config(
            arch, f"engine.checkpoint={checkpoint}", f'engine.path="{path}"',
            width=width, depth=30, precision=precision, mode=mode, acts=ACTS2,
        )  # fmt: skip

    workspace.release()
    first = numba_cpu.run_unit(config(12), 12, 1)
    numba_cpu.run_unit(config(24), 24, 1)
    (ws,) = workspace.idle()
    ws.poison()
    again = numba_cpu.run_unit(config(12), 12, 1)
    assert set(again) == set(first)
    for key, value in first.items():
        np.testing.assert_array_equal(again[key], value, err_msg=key)


def _tolerance(precision, want):
    """oracle_cases.TOL, and in float64 at least 1e-8 relative to the largest log-norm.

    In the chaotic phase (sigma_w2 = 4) a gated net with an unbounded phi (LSTM, relu)
    grows its tangent and gradient by e^33 in 35 steps, and the fused path's
    matrix-vector sums (another order than BLAS's) then move those log-norms by up to
    5.7e-8: 1.8e-9 of them, the float64 rounding amplified by the chaos, not a mistake
    (a wrong scale, bias or step moves these numbers by >= 1e-3, 1e-5 of them)."""
    tol = dict(TOL[precision])
    if precision == "float64":
        for key in ("log_tangent_norm", "log_grad_norm"):
            if key in want:
                peak = np.nanmax(np.abs(want[key]), initial=0.0)
                tol[key] = max(tol[key], 1e-8 * peak)
    return tol


@pytest.mark.parametrize("arch,path", ARCH_PATHS)
def test_keeping_every_step_equals_recomputing_segments(arch, path, monkeypatch):
    """The store (every step kept) and checkpoints (segments recomputed) give the same
    numbers: a recomputed step is the forward step's arithmetic on the same rows."""
    cfg = rnn_config(arch, f'engine.path="{path}"', width=16, depth=37, precision="float64",
                     acts=ACTS2)  # fmt: skip
    monkeypatch.setattr(numba_cpu, "STORE_BYTES", 2**40)
    unit = numba_rnn._Unit(cfg, 16, 0)
    assert unit.plan.keep_all and unit.b.S.shape[0] == 37 and unit.path == path
    kept = numba_cpu.run_unit(cfg, 16, 0)
    monkeypatch.setattr(numba_cpu, "STORE_BYTES", 0)
    unit = numba_rnn._Unit(cfg, 16, 0)
    every = cfg.checkpoint_every
    assert not unit.plan.keep_all and unit.plan.every == every
    assert unit.b.S.shape[0] == schedule.checkpoint_count(37, every) + every
    recomputed = numba_cpu.run_unit(cfg, 16, 0)
    for key, value in kept.items():
        np.testing.assert_array_equal(recomputed[key], value, err_msg=key)
    if arch == "residual":  # Z^l kept with every layer, or for a segment's backward steps
        for budget, slots in ((2**40, 37), (0, every)):
            monkeypatch.setattr(numba_cpu, "STORE_BYTES", budget)
            unit = numba_rnn._ResidualUnit(cfg, 16, 0)
            assert unit.b.Zs.shape[0] == slots, budget
            got = numba_rnn.run_unit(cfg, 16, 0)
            for key, value in kept.items():
                np.testing.assert_array_equal(got[key], value, err_msg=f"{budget} {key}")


@pytest.mark.parametrize("arch,blocks", [("gru", 6), ("lstm", 10)])
def test_plan_keeps_the_gates(arch, blocks, monkeypatch):
    """A gated net's VJP keeps trajectory 1's gate values (the model's STEP_VALUES blocks
    of N per point): every step's where the plan keeps the step values, a segment's
    recomputed steps when checkpointed, none when even those do not fit; the backward
    steps then read them (qslot >= 0) except a segment's last, which recomputes."""
    from vxsim.models import gru, lstm

    assert blocks == {"gru": gru, "lstm": lstm}[arch].STEP_VALUES
    cfg = rnn_config(arch, width=16, depth=37, precision="float32", mode="vjp")
    monkeypatch.setattr(numba_cpu, "STORE_BYTES", 2**40)
    unit = numba_rnn._Unit(cfg, 16, 0, "gemm")
    assert unit.plan.keep_all and unit.plan.keep_steps and unit.gates_kept == "all"
    assert unit.b.QS.shape == (37, unit.P, blocks * 16)
    assert all(unit._qslot(op) == op.layer - 1 for op in unit.fwd_ops + unit.bwd_ops)
    # the state fits, the gates do not: nothing kept but states, gates recomputed
    state = 37 * unit.P * 16 * 4 * numba_rnn.RECURRENCES[arch].cells
    monkeypatch.setattr(numba_cpu, "STORE_BYTES", state)
    unit = numba_rnn._Unit(cfg, 16, 0, "gemm")
    assert unit.plan.keep_all and not unit.plan.keep_steps and unit.gates_kept is None
    assert all(unit._qslot(op) == -1 for op in unit.bwd_ops)
    monkeypatch.setattr(numba_cpu, "STORE_BYTES", 0)
    unit = numba_rnn._Unit(cfg, 16, 0, "gemm")
    every = unit.plan.every
    assert unit.gates_kept == "segment" and unit.b.QS.shape[0] == every - 1
    backs = [op for op in unit.bwd_ops if isinstance(op, schedule.Backward)]
    recomputed = {(op.start, op.layer) for op in unit.bwd_ops if isinstance(op, schedule.Recompute)}
    for op in backs:
        q = unit._qslot(op)
        assert (q >= 0) == ((op.start, op.layer) in recomputed), op
    monkeypatch.setattr(schedule, "ZSTORE_BYTES", 0)
    unit = numba_rnn._Unit(cfg, 16, 0, "gemm")
    assert unit.gates_kept is None and all(unit._qslot(op) == -1 for op in unit.bwd_ops)


@pytest.mark.parametrize("arch", ("gru", "lstm"))
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("precision,mode", [("float32", "vjp"), ("float32", "both"),
                                            ("float64", "vjp"), ("float64", "both")])  # fmt: skip
def test_gates_kept_or_recomputed_agree_with_the_oracle(arch, path, precision, mode, monkeypatch):
    """The four ways a backward step has its gates (kept by the forward pass; recomputed
    from every kept state; kept from a segment's recomputation; recomputed there) each
    agree with the oracle (the tolerances of test_matches_oracle) and give the same bits
    as each other (a gate value is the same arithmetic on the same state, whichever op
    computed it)."""
    cfg = rnn_config(arch, f'engine.path="{path}"', width=16, depth=37, precision=precision,
                     mode=mode, acts=ACTS2)  # fmt: skip
    want = numpy_ref.run_unit(cfg, 16, 0)
    P = numba_rnn._Unit(cfg, 16, 0, path).P
    state = 37 * P * 16 * 4 * numba_rnn.RECURRENCES[arch].cells
    got = {}
    for name, budget, zstore in (("all", 2**40, None), ("states", state, None),
                                 ("segment", 0, None), ("none", 0, 0)):  # fmt: skip
        monkeypatch.setattr(numba_cpu, "STORE_BYTES", budget)
        if zstore is not None:
            monkeypatch.setattr(schedule, "ZSTORE_BYTES", zstore)
        got[name] = numba_cpu.run_unit(cfg, 16, 0)
        assert_same(got[name], want, _tolerance(precision, want), f"{arch} {path} {name}")
    for name in ("states", "segment", "none"):
        for key, value in got["all"].items():
            np.testing.assert_array_equal(got[name][key], value, err_msg=f"{name} {key}")


def test_vjp_plan_at_depth_10000_stays_within_the_budget(monkeypatch):
    """The issue's 10,000-step VJP (width 512, 32 points): trajectory 1's state per step
    would take 10,000 x 32 x (512 x 4 + 8) B = 658 MB (h and its float64 log-scale);
    within a smaller budget the plan checkpoints every ~sqrt(L) steps and the store
    holds the checkpoints and one segment."""
    from vxsim import config as config_mod

    cfg = config_mod.load(
        overrides=[
            'network.architecture="rnn"',
            "network.width=[512]",
            "network.depth=10000",
            'network.activation=["tanh"]',
            "grid.sigma_w2=[0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0]",
            "grid.sigma_b2=[0.0, 0.1]",
            "grid.sigma_u2=[0.5, 1.0]",
            'measure.mode="vjp"',
        ]
    )
    state = 32 * (512 * 4 + 8)
    for budget, keep_all in ((10000 * state, True), (10000 * state - 1, False)):
        monkeypatch.setattr(numba_cpu, "STORE_BYTES", budget)
        unit = numba_rnn._Unit.__new__(numba_rnn._Unit)
        unit.config, unit.N, unit.sample = cfg, 512, 0
        from vxsim.engines import generic

        unit.gu = generic.Unit(cfg, 512, 0, generic.HostArrays(None, numba_cpu.store_budget))
        plan = unit._plan()
        assert plan.keep_all == keep_all
        if not keep_all:
            slots = schedule.checkpoint_count(10000, plan.every) + plan.every
            assert plan.every == cfg.checkpoint_every and slots * state < 20 * 2**20


@pytest.mark.parametrize("arch,path", ARCH_PATHS)
def test_divergence_flags_match_oracle(arch, path):
    """Unbounded activations (ELU, GELU) at large sigma_w2 overflow float32: the same
    (point, step) flags as the oracle, NaN from that step on in those points only. (The
    GRU's h_t is a convex mix of n_t and h_{t-1}, so it needs a larger sigma_w2.)"""
    sw2 = "[1.0, 1e4]" if arch == "gru" else "[1.0, 50.0]"
    cfg = rnn_config(
        arch, f'engine.path="{path}"', width=16, depth=60, sw2=sw2, precision="float32",
        acts='["tanh", "elu", "gelu"]', axis_values="[1.0]",
    )  # fmt: skip
    got, want = numba_cpu.run_unit(cfg, 16, 0), numpy_ref.run_unit(cfg, 16, 0)
    div = got["diverged"]
    np.testing.assert_array_equal(div, want["diverged"])
    assert np.any(div > 0)  # something does diverge
    for key in ("log_q", "corr", "log_tangent_norm", "log_grad_norm"):
        np.testing.assert_array_equal(np.isnan(got[key]), np.isnan(want[key]), err_msg=key)
        assert np.all(np.isfinite(got[key][div == 0])), key
    tol = TOL["float32"]  # sigma_w2 = 1 is not chaotic: the usual agreement
    for key in ("log_q", "corr", "log_tangent_norm", "log_grad_norm"):
        np.testing.assert_allclose(got[key][:, 0], want[key][:, 0], rtol=0, atol=tol[key])


@pytest.mark.parametrize("arch", RNNS)
@pytest.mark.parametrize("path", PATHS)
def test_underflow_to_the_fixed_point_with_zero_input_variance(arch, path):
    """No input (input_variance = 0), no bias, ordered tanh: the float32 state underflows
    to the fixed point h = 0. Not a divergence: nothing is flagged, log q reads -inf at
    the end, and the tangent and gradient (whose norms are renormalised) go on as the
    oracle's. Tolerance: the oracle's float32 one (oracle_cases.TOL), as in the
    MLP's version of this test; for log q and the correlation, once the state is
    subnormal (|h| below 2^-126, log q below ~-175), plus 8 units of its float32
    spacing: there one rounding moves h by 2^-149, so log q = log mean h^2 (and the
    correlation of the two states) by up to 2 * 2^-149 / |h|, and the engines sum the
    products in other orders (which also differ with the CPU's vector width: this
    failed on AVX-512 with the float32 tolerance alone)."""
    cfg = rnn_config(
        arch, "network.input_variance=0.0", "grid.sigma_b2=[0.0]", f'engine.path="{path}"',
        width=8, depth=300, sw2="[0.3]", precision="float32", acts='["tanh"]',
        axis_values="[0.0]" if arch != "rnn" else "[1.0]",
    )  # fmt: skip
    got, want = numba_cpu.run_unit(cfg, 8, 0), numpy_ref.run_unit(cfg, 8, 0)
    assert got["diverged"].max() == 0 and want["diverged"].max() == 0
    assert np.isneginf(got["log_q"][..., -1]).all()
    tol = TOL["float32"]
    assert_same({**got, "log_q": want["log_q"], "corr": want["corr"]}, want, tol, arch)
    ref_q = want["log_q"]
    np.testing.assert_array_equal(np.isneginf(got["log_q"]), np.isneginf(ref_q))
    with np.errstate(divide="ignore"):  # inf where h underflowed to 0 (log q = -inf)
        spacing = 2.0 * 2.0**-149 / np.sqrt(np.exp(ref_q))  # 2 ulp(h) / |h|, as above
    assert spacing[np.isfinite(ref_q)].max() > tol["log_q"]  # subnormal layers reached
    for key in ("log_q", "corr"):
        both = np.isfinite(ref_q) & np.isfinite(want[key])
        np.testing.assert_array_equal(np.isnan(got[key]), np.isnan(want[key]), err_msg=key)
        err = np.abs(got[key][both] - want[key][both])
        assert np.all(err <= tol[key] + 8 * spacing[both]), key


@pytest.mark.parametrize("arch", ("gru", "lstm"))
@pytest.mark.parametrize("precision", ("float32", "float64"))
@pytest.mark.parametrize("path", PATHS)
def test_gate_bias_far_from_zero(arch, precision, path):
    """update_bias / forget_bias = -30 and +30: the gates saturate (1 - sigma ~ 1e-13),
    which the two-tailed sigmoid keeps accurate in both engines. In float32, f = 1
    exactly at forget_bias = 30, so the LSTM cell integrates i g without decay and an
    unbounded phi carries its rounding (the GEMM's summation order) forward undamped
    (5e-4 in log q after 30 steps with relu, beyond TOL's decaying-error budget):
    float32 takes tanh only, float64 every activation."""
    acts = ACTS2 if precision == "float64" else '["tanh"]'
    cfg = rnn_config(
        arch, f'engine.path="{path}"', width=16, depth=40, precision=precision, mode="both",
        acts=acts,
        axis_values="[-30.0, 0.0, 30.0]",
    )  # fmt: skip
    got, want = numba_cpu.run_unit(cfg, 16, 1), numpy_ref.run_unit(cfg, 16, 1)
    assert_same(got, want, TOL[precision], f"{arch} {precision}")


def test_other_weight_laws_stay_on_the_generic_driver(monkeypatch):
    """Only the Gaussian law runs the fused kernels (as for the MLP)."""
    cfg = rnn_config("gru", 'network.init=["orthogonal"]', width=8, depth=5, acts='["tanh"]')
    monkeypatch.setattr(numba_rnn, "run_unit", lambda *a: pytest.fail("fused path used"))
    numba_cpu.run_unit(cfg, 8, 0)


def test_path_choice():
    """auto: the fused path up to the measured crossover; the residual net: GEMMs."""
    for arch in RNNS:
        cfg = rnn_config(arch, width=8, depth=5)
        w = numba_rnn.RECURRENCES[arch].fused_max_width
        assert numba_rnn.choose_path(cfg, w) == "fused"
        assert numba_rnn.choose_path(cfg, w + 1) == "gemm"
    assert numba_rnn.choose_path(rnn_config("residual", 'engine.path="fused"'), 8) == "gemm"


def test_generated_module_has_one_block_per_activation():
    src = numba_rnn.generate_source(("tanh", "relu"))
    assert "def _rows_ACT1(" in src and "elif code == 1:" in src
    assert '_REGISTRY["relu"]' not in src and "_REGISTRY['relu']" in src
