"""GRU and LSTM (models.gru, models.lstm) through the generic driver, against brute force.

The brute force below runs one network at a time with its gate matrices
materialised once (W_k, U_k, b_k: a single set for every time step, which is
what "tied" means), in float64, and takes the tangent and gradient norms from
products of **finite-difference Jacobians** of its own step map, so the
hand-written JVP and VJP of the models are checked against an independent
derivative.
"""

import numpy as np
import pytest
from conftest import run_cli, small_config

from vxsim import rng
from vxsim.analysis.growth import growth_rates
from vxsim.engines import base, generic
from vxsim.models import gates, gru, lstm

MODELS = {"gru": gru, "lstm": lstm}
AXIS = {"gru": "update_bias", "lstm": "forget_bias"}
N_GATES = {"gru": 3, "lstm": 4}
SHIFTED = {"gru": 1, "lstm": 1}  # the gate the bias axis shifts: z (r, z, n) and f (i, f, g, o)
FD_STEP = 1e-6


def sig(x):
    return 1.0 / (1.0 + np.exp(-x))


def gate_matrices(config, width, sample, arch, sw2, sb2, su2, shift):
    """W_k, U_k, b_k of every gate k, drawn once (the same for every step)."""
    n = N_GATES[arch]
    s = config.seed
    W = [
        np.sqrt(sw2 / width) * rng.normal_matrix(s, sample, 0, width, rng.STREAM_GATE + k)
        for k in range(n)
    ]
    U = [
        np.sqrt(su2 / width) * rng.normal_matrix(s, sample, 0, width, rng.STREAM_GATE_INPUT + k)
        for k in range(n)
    ]
    b = [np.sqrt(sb2) * rng.normals(s, sample, k, rng.STREAM_BIAS, width) for k in range(n)]
    b[SHIFTED[arch]] = b[SHIFTED[arch]] + shift
    return W, U, b


def step_map(arch, W, U, b, phi):
    """The textbook step as a function of the whole state vector s (h, or [h; c]) and x_t."""
    if arch == "gru":
        Wr, Wz, Wn = W
        Ur, Uz, Un = U
        br, bz, bn = b

        def step(s, x):
            r = sig(Wr @ s + Ur @ x + br)
            z = sig(Wz @ s + Uz @ x + bz)
            n = phi(Wn @ (r * s) + Un @ x + bn)
            return (1 - z) * n + z * s

    else:
        Wi, Wf, Wg, Wo = W
        Ui, Uf, Ug, Uo = U
        bi, bf, bg, bo = b

        def step(s, x):
            h, c = np.split(s, 2)
            i = sig(Wi @ h + Ui @ x + bi)
            f = sig(Wf @ h + Uf @ x + bf)
            g = phi(Wg @ h + Ug @ x + bg)
            o = sig(Wo @ h + Uo @ x + bo)
            c = f * c + i * g
            return np.concatenate([o * phi(c), c])

    return step


def fd_jacobian(step, s, x):
    """Central differences, one column per state entry."""
    J = np.empty((s.size, s.size))
    for k in range(s.size):
        e = np.zeros(s.size)
        e[k] = FD_STEP
        J[:, k] = (step(s + e, x) - step(s - e, x)) / (2 * FD_STEP)
    return J


def brute_force(config, width, sample, arch, act, param, sw2, sb2, su2, shift):
    """log q_t, c_t, log |J v0|^2/|v0|^2, log |g_t|^2/|g_T|^2 for t = 1..T, one network."""
    T = config.depth
    W, U, b = gate_matrices(config, width, sample, arch, sw2, sb2, su2, shift)
    step = step_map(arch, W, U, b, lambda u: act.phi(u, param))
    xs = [
        np.sqrt(config.input_variance)
        * rng.normals(config.seed, sample, t, rng.STREAM_SEQUENCE, width)
        for t in range(1, T + 1)
    ]
    x1, x2, v0 = base.inputs(config, width, sample)
    gamma = base.output_direction(config, width, sample)
    pad = np.zeros(width) if arch == "lstm" else np.zeros(0)
    s1, s2 = np.concatenate([x1, pad]), np.concatenate([x2, pad])
    v = np.concatenate([v0, pad])
    log_v0 = np.log(v @ v)
    out = {k: np.zeros(T) for k in ("log_q", "corr", "log_tangent_norm", "log_grad_norm")}
    jacobians = []
    for t in range(T):
        J = fd_jacobian(step, s1, xs[t])
        jacobians.append(J)
        s1, s2 = step(s1, xs[t]), step(s2, xs[t])
        v = J @ v
        h1, h2 = s1[:width], s2[:width]
        out["log_q"][t] = np.log(np.mean(h1 * h1))
        out["corr"][t] = h1 @ h2 / np.sqrt((h1 @ h1) * (h2 @ h2))
        out["log_tangent_norm"][t] = np.log(v @ v) - log_v0
    g = np.concatenate([gamma, pad])
    log_g0 = np.log(g @ g)
    for t in range(T - 1, 0, -1):  # g_t (index t-1) = J_{t+1}^T g_{t+1}
        g = jacobians[t].T @ g
        out["log_grad_norm"][t - 1] = np.log(g @ g) - log_g0
    return out


def gate_config(arch, **keys):
    base_keys = dict(
        network__architecture=arch,
        network__width=12,
        network__depth=20,
        network__activation=["tanh", "gelu"],
        network__input_variance=0.7,
        grid__sigma_w2=[0.6, 2.5],
        grid__sigma_b2=[0.1],
        grid__sigma_u2=[0.8],
        measure__mode="both",
        measure__precision="float64",
        measure__record={"every": 1},
        monte_carlo__samples=2,
        monte_carlo__seed=11,
    )
    base_keys[f"grid__{AXIS[arch]}"] = [-0.5, 2.0]
    base_keys.update(keys)
    return small_config(**base_keys)


def compare_with_brute_force(config, arch, width, sample, result):
    """Worst |engine - brute force| per variable over every grid point."""
    worst = {}
    specs = config.activation_specs
    (su2,) = config.extra_axes["sigma_u2"]
    for a, (act, param) in enumerate(specs):
        for iw, sw2 in enumerate(config.sigma_w2):
            for ib, sb2 in enumerate(config.sigma_b2):
                for ig, shift in enumerate(config.extra_axes[AXIS[arch]]):
                    ref = brute_force(config, width, sample, arch, act, param, sw2, sb2, su2, shift)
                    for name, want in ref.items():
                        got = result[name][a, iw, ib, 0, ig]
                        err = np.max(np.abs(got - want))
                        worst[name] = max(worst.get(name, 0.0), err)
    return worst


@pytest.mark.parametrize("arch", ["gru", "lstm"])
def test_engine_matches_brute_force_with_finite_difference_jacobians(arch):
    """Both trajectories, JVP and VJP of every grid point (two activations, two sigma_w2,
    both gate-bias values) equal the one-network loop.

    Smooth activations only (tanh, and gelu for a phi that is not odd): central
    differences across a kink give the mean of the two one-sided slopes, not the
    registry's phi'. ReLU LSTMs sit exactly on the kink: with c_0 = 0, a cell
    whose candidate relu(a_g) was 0 has c_t = 0 exactly and relu(c_t) is taken
    at 0, where the model (like autograd) uses phi'(0) = 0 and the differences 1/2.

    Tolerances: the forward quantities are the same float64 arithmetic summed in
    another order, so they agree to ~1e-14; 1e-10 leaves room for 20 steps of
    growth. The tangent and gradient norms of the brute force come from central
    differences with step 1e-6: each Jacobian entry is off by rounding
    ~ eps_mach |s| / 1e-6 ~ 1e-10 plus truncation ~ 1e-12 |s'''|, i.e. a relative
    error ~ 1e-9 per step (entries are O(N^-1/2)); over 20 steps that is ~ 2e-8
    in a log norm. 1e-6 is 50 times that and far below any error in a formula
    (a dropped term changes the log norms by O(1)).
    """
    config = gate_config(arch)
    for sample in range(config.samples):
        result = generic.run_unit(config, 12, sample)
        assert not result["diverged"].any()
        worst = compare_with_brute_force(config, arch, 12, sample, result)
        assert worst["log_q"] < 1e-10 and worst["corr"] < 1e-10, worst
        assert worst["log_tangent_norm"] < 1e-6, worst
        assert worst["log_grad_norm"] < 1e-6, worst


@pytest.mark.parametrize("arch", ["gru", "lstm"])
def test_weights_are_tied_and_a_per_step_draw_would_fail(arch, monkeypatch):
    """One W for every step (the same array object), and an engine that drew the gate
    matrices afresh every step disagrees with the tied brute force."""
    model = MODELS[arch]
    config = gate_config(arch, network__activation=["tanh"], grid__sigma_w2=[1.5])
    unit = generic.Unit(config, 12, 0)
    assert model.weights(unit, 1) is model.weights(unit, 7)
    assert model.weights(unit, 1).shape == (N_GATES[arch] * 12, 12)

    def per_step(unit, layer):
        rows = [unit.matrix(layer, rng.STREAM_GATE + k) for k in range(N_GATES[arch])]
        return np.concatenate(rows)

    monkeypatch.setattr(model, "weights", per_step)
    worst = compare_with_brute_force(config, arch, 12, 0, generic.run_unit(config, 12, 0))
    assert worst["log_q"] > 1e-2 and worst["log_tangent_norm"] > 1e-1, worst


@pytest.mark.parametrize("arch", ["gru", "lstm"])
def test_input_drives_in_blocks_across_boundaries_and_evictions(arch, monkeypatch):
    """The drives Z_U x_t come from one GEMM per block of steps, of which only a few
    are kept: with blocks of 3 steps and one kept (every boundary crossed, every
    block recomputed when the VJP comes back down), the brute force still agrees,
    and the numbers equal those of 64-step blocks to rounding."""
    config = gate_config(arch, engine__checkpoint=4)
    whole = generic.run_unit(config, 12, 1)
    monkeypatch.setattr(gates, "DRIVE_BLOCK", 3)
    monkeypatch.setattr(gates, "DRIVE_BLOCKS_KEPT", 1)
    blocks = generic.run_unit(config, 12, 1)
    for name, value in whole.items():
        np.testing.assert_allclose(blocks[name], value, rtol=1e-12, atol=1e-12, err_msg=name)
    worst = compare_with_brute_force(config, arch, 12, 1, blocks)
    assert worst["log_q"] < 1e-10 and worst["log_grad_norm"] < 1e-6, worst


@pytest.mark.parametrize("arch", ["gru", "lstm"])
def test_float32_run_follows_float64(arch):
    """The run's precision is kept through the gates (float32 states, float64 norms)."""
    c64 = gate_config(arch, network__activation=["tanh"])
    c32 = gate_config(arch, network__activation=["tanh"], measure__precision="float32")
    unit = generic.Unit(c32, 12, 0)
    state = MODELS[arch].step(unit, 1, MODELS[arch].start(unit), MODELS[arch].weights(unit, 1))
    assert all(a.dtype == np.float32 for a in state.values())
    r64, r32 = generic.run_unit(c64, 12, 0), generic.run_unit(c32, 12, 0)
    for name in ("log_q", "log_tangent_norm", "log_grad_norm"):
        # float32 rounding (6e-8 relative) grown over 20 contracting steps
        np.testing.assert_allclose(r32[name], r64[name], atol=1e-4, rtol=0)


def measured_rates(arch, biases, samples=8):
    """Quenched VJP and JVP growth rates per gate-bias value, with standard errors."""
    config = small_config(
        network__architecture=arch,
        network__width=64,
        network__depth=100,
        network__activation=["tanh"],
        grid__sigma_w2=[1.0],
        grid__sigma_b2=[0.05],
        grid__sigma_u2=[1.0],
        measure__mode="both",
        measure__precision="float64",
        measure__record={"every": 1},
        monte_carlo__samples=samples,
        **{f"grid__{AXIS[arch]}": biases},
    )
    runs = [generic.run_unit(config, 64, s) for s in range(samples)]
    out = {}
    for mode, var in (("vjp", "log_grad_norm"), ("jvp", "log_tangent_norm")):
        y = np.stack([r[var] for r in runs], axis=-2)  # (..., S, R)
        rates = growth_rates(y, config.layers, config.depth, config.transient, mode)
        out[mode] = (rates["quenched"].ravel(), rates["quenched_se"].ravel())
    return out


@pytest.mark.parametrize("arch", ["lstm", "gru"])
def test_gate_bias_slows_gradient_decay(arch):
    """Raising forget_bias (LSTM) or update_bias (GRU) makes gradients vanish more slowly.

    The growth rate of log |dE/d state_t|^2 per step of backpropagation through
    time is negative here (tanh, sigma_w2 = 1: the vanishing side). A larger
    forget bias pushes f -> 1, so dc_t/dc_{t-1} = f + ... approaches the identity
    (the constant error carousel); a larger update bias pushes z -> 1, so
    dh_t/dh_{t-1} = z + ... approaches the identity. Either way the per-step
    decay factor approaches 1: the (negative) rate RISES toward 0. Measured
    (width 64, depth 100, 8 samples): LSTM about -0.83, -0.36, -0.01 and GRU
    about -0.79, -0.41, -0.08 at bias 0, 1, 3, standard errors 0.002-0.02; asserted
    as increases of at least 5 standard errors, rates below a small positive
    margin, and the forward (JVP) rates agreeing with the backward ones.
    """
    rates = measured_rates(arch, [0.0, 1.0, 3.0])
    vjp, se = rates["vjp"]
    assert np.all(vjp < 0.05), vjp
    for lo, hi in ((0, 1), (1, 2)):
        gap = vjp[hi] - vjp[lo]
        assert gap > 5 * np.hypot(se[lo], se[hi]), (vjp, se)
    jvp, jse = rates["jvp"]
    # the same per-step factor seen forward: equal within 4 combined standard errors
    assert np.all(np.abs(jvp - vjp) < 4 * np.hypot(se, jse) + 0.01), (jvp, vjp)


WRONG_AXIS = [
    ("gru", "forget_bias", "grid.forget_bias does not apply to architecture 'gru'"),
    ("mlp", "forget_bias", "grid.forget_bias does not apply to architecture 'mlp'"),
    ("lstm", "update_bias", "grid.update_bias does not apply to architecture 'lstm'"),
]


@pytest.mark.parametrize("arch,axis,message", WRONG_AXIS)
def test_gate_bias_on_the_wrong_architecture_is_one_line_exit_2(tmp_path, arch, axis, message):
    out = tmp_path / "never.h5"
    r = run_cli(
        "sweep",
        "--set",
        f'network.architecture="{arch}"',
        "--set",
        f"grid.{axis}=[1.0]",
        "-o",
        str(out),
        cwd=tmp_path,
    )
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vxsim: error: "), r.stderr
    assert message in lines[0]
    assert not out.exists()
