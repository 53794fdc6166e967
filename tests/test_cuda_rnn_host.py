"""The RNNs' fused step kernels of the cuda engine (kernels/rnn.cu, cuda_rnn.py), on the CPU.

The kernels built with g++ (``cuda_host``, strict arrays that refuse host-device
mixing as CuPy does) drive the unchanged engine against the NumPy oracle, for
Elman, GRU and LSTM, every mode and both precisions, to the oracle cases'
tolerances (tests/oracle_cases.py), with one and several host threads a block;
and the edge cases of issue 14: divergence flags, float32 underflow to the
fixed point, zero input variance, forget_bias and update_bias far from 0, the
drive's blocks of steps, checkpoints and records of every spacing.
"""

import numpy as np
import pytest
from oracle_cases import ARCH_AXES, TOL, assert_same, make_config

from vxsim import rng
from vxsim.engines import cuda_gpu, cuda_host, cuda_paths, cuda_rnn, numpy_ref, schedule

RNNS = ("rnn", "gru", "lstm")


def rnn_config(arch, precision="float64", mode="both", depth=14, checkpoint=4, axis=None,
               record="{every = 1}", **kw):  # fmt: skip
    return make_config(
        f'network.architecture="{arch}"',
        'engine.path="gemm"',  # the step kernels (Elman's persistent one: test_cuda_persist_host)
        f"grid.{ARCH_AXES[arch]}={axis or '[0.5, 1.0]'}",
        f"engine.checkpoint={checkpoint}",
        f"measure.record={record}",
        precision=precision,
        mode=mode,
        depth=depth,
        **kw,
    )


def run(cfg, width, sample, backend):
    """The unit on the fused step kernels, checking that they (not engines.generic) ran."""
    del backend.launches[:]
    got = cuda_gpu.run_unit(cfg, width, sample, backend=backend)
    names = {name for name, *_ in backend.launches}
    assert names & {"vx_elman_forward", "vx_lstm_forward", "vx_gru_forward"}, names
    return got


@pytest.mark.parametrize("precision", ["float32", "float64"])
@pytest.mark.parametrize("mode", ["jvp", "vjp", "both"])
@pytest.mark.parametrize("arch", RNNS)
def test_matches_oracle(host, arch, mode, precision):
    cfg = rnn_config(arch, precision, mode)
    assert cuda_paths.choose_path(cfg, 12) == "steps"
    assert_same(run(cfg, 12, 1, host[precision]), numpy_ref.run_unit(cfg, 12, 1), TOL[precision])


# width, depth, checkpoint spacing, record: a sequence longer than the drive's block of 64
# steps (drive blocks recomputed going down), no checkpoint (one segment), a spacing of 1
# (every backward step computes its own pre-activations), width 1, depth 1 and 2.
SHAPES = [(9, 70, 9, "{log = 12}"), (7, 20, 0, "{every = 3}"), (5, 11, 1, "{every = 1}"),
          (1, 6, 2, "{every = 1}"), (4, 1, 0, "{every = 1}"), (6, 2, 0, "{every = 1}")]  # fmt: skip


@pytest.mark.parametrize("arch", RNNS)
def test_shapes_and_schedules_match_oracle(host, arch):
    for width, depth, checkpoint, record in SHAPES:
        cfg = rnn_config(arch, "float64", "both", depth, checkpoint, record=record)
        want = numpy_ref.run_unit(cfg, width, 0)
        assert_same(run(cfg, width, 0, host["float64"]), want, TOL["float64"], (width, depth))


@pytest.mark.parametrize("threads", [3, 32])
def test_matches_oracle_with_threads(threads):
    """Each block run by several host threads at real barriers: the partition of each
    point's elements, the reductions' contract, the per-point flags written by thread 0."""
    if cuda_host.compiler() is None:
        pytest.skip("no C++ compiler on PATH")
    for precision in ("float32", "float64"):
        be = cuda_host.HostBackend(precision, threads=threads, strict=True)
        for arch in RNNS:
            width = 40 if threads == 32 else 12  # several elements per thread, and idle threads
            cfg = rnn_config(arch, precision, "both", depth=12, checkpoint=5)
            want = numpy_ref.run_unit(cfg, width, 1)
            assert_same(run(cfg, width, 1, be), want, TOL[precision], (arch, precision))


@pytest.mark.parametrize("arch", RNNS)
def test_divergence_flags_match_oracle(host, arch):
    """sigma_w2 = 1e6 with elu and gelu: the Elman state overflows float32 within a few steps
    (flagged at the oracle's step); the gated RNNs stay bounded (|h| <= max|phi|), as in the
    oracle. Either way the same flags and NaN pattern."""
    cfg = make_config(f'network.architecture="{arch}"', 'engine.path="gemm"', sw2="[1.0, 1e6]",
                      acts='["elu", "gelu"]', depth=40)  # fmt: skip
    want = numpy_ref.run_unit(cfg, 10, 1)
    if arch == "rnn":
        assert np.all(want["diverged"][:, 1] > 0) and not np.any(want["diverged"][:, 0])
    assert_same(run(cfg, 10, 1, host["float32"]), want, TOL["float32"])


@pytest.mark.parametrize("arch", RNNS)
def test_float32_underflow_to_the_fixed_point(host, arch):
    """tanh and elu (not renormalised), sigma_w2 = 0.05 and 0.3, no bias nor input: the
    state decays to the fixed point h = 0 through float32's subnormals to exact zeros
    (log q = -inf). Same flags, same NaNs, same numbers where finite, over 300 steps."""
    cfg = make_config(f'network.architecture="{arch}"', 'engine.path="gemm"',
                      f"grid.{ARCH_AXES[arch]}=[0.0]",
                      "grid.sigma_b2=[0.0]", "network.input_variance=0.0", sw2="[0.05, 0.3]",
                      acts='["tanh", "elu"]', depth=300, precision="float32",
                      mode="both")  # fmt: skip
    want = numpy_ref.run_unit(cfg, 8, 0)
    got = run(cfg, 8, 0, host["float32"])
    np.testing.assert_array_equal(got["diverged"], want["diverged"])
    assert not np.any(want["diverged"])  # reaching h = 0 is not divergence
    # both reach q = 0 (log q = -inf) at the end where the oracle does, somewhere
    end = np.isneginf(want["log_q"][..., -1])
    assert np.any(end) and np.array_equal(np.isneginf(got["log_q"][..., -1]), end)
    # Above the float32 floor (log q > 2 ln FLT_MIN + 2 ln 2^10, docs/gpu.md, issue 17: below
    # it an entry of h is subnormal and carries fewer than 23 bits) the engine tolerance;
    # the tangents and gradients (renormalised every step) everywhere.
    normal = want["log_q"] > 2 * np.log(np.finfo(np.float32).tiny) + 20 * np.log(2)
    for key in ("log_q", "corr"):
        np.testing.assert_allclose(got[key][normal], want[key][normal], rtol=0,
                                   atol=TOL["float32"][key], err_msg=key)  # fmt: skip
    for key in ("log_tangent_norm", "log_grad_norm"):
        np.testing.assert_allclose(got[key], want[key], rtol=0, atol=TOL["float32"][key],
                                   err_msg=key)  # fmt: skip


@pytest.mark.parametrize("arch", RNNS)
def test_zero_input_variance(host, arch):
    """q_x = 0: no drive (U x_t = 0), only the tied bias."""
    cfg = make_config(f'network.architecture="{arch}"', 'engine.path="gemm"',
                      "network.input_variance=0.0",
                      depth=12, precision="float64")  # fmt: skip
    assert cfg.input_variance == 0.0
    assert_same(run(cfg, 10, 1, host["float64"]), numpy_ref.run_unit(cfg, 10, 1), TOL["float64"])


@pytest.mark.parametrize("arch", ["gru", "lstm"])
def test_gate_bias_far_from_zero(host, arch):
    """forget_bias / update_bias of -30, -5, 5, 30: gates saturated at 0 or 1 (the sigmoid's
    tails, 1 - sigma in both), memory kept or lost; both precisions."""
    for precision in ("float32", "float64"):
        cfg = rnn_config(arch, precision, "both", depth=25, axis="[-30.0, -5.0, 5.0, 30.0]")
        want = numpy_ref.run_unit(cfg, 10, 0)
        assert_same(run(cfg, 10, 0, host[precision]), want, TOL[precision], precision)


def test_tied_draws_are_made_on_the_device(host):
    """The tied Z_g, Z_U, xi_g and the inputs x_t come from the device generator (no host
    draw copied), bit-identical to rng.normals."""
    cfg = rnn_config("lstm", "float32", "vjp", depth=5)
    unit = cuda_rnn.LstmUnit(cfg, 6, 1, host["float32"])
    N, to_host = 6, host["float32"].to_host
    for g in range(4):
        want = rng.normal_matrix(cfg.seed, 1, 0, N, stream=rng.STREAM_GATE + g)
        np.testing.assert_array_equal(to_host(unit.W)[g * N : (g + 1) * N], want.astype(np.float32))
        want = rng.normal_matrix(cfg.seed, 1, 0, N, stream=rng.STREAM_GATE_INPUT + g)
        np.testing.assert_array_equal(to_host(unit.ZU)[g * N : (g + 1) * N], want)
    xi = np.concatenate([rng.normals(cfg.seed, 1, g, rng.STREAM_BIAS, N) for g in range(4)])
    np.testing.assert_array_equal(to_host(unit.xi), xi)
    x = np.stack([rng.normals(cfg.seed, 1, t, rng.STREAM_SEQUENCE, N) for t in range(1, 6)])
    want = x @ to_host(unit.ZU).T * np.sqrt(cfg.input_variance) / np.sqrt(N)
    np.testing.assert_allclose(to_host(unit.drive(3)), want[2], rtol=1e-14, atol=1e-14)


def test_each_step_is_its_gemms_and_one_epilogue(host):
    """A forward step is one GEMM and one epilogue (Elman, LSTM), two of each (GRU); the
    backward lowers schedule.backward_ops: per segment a restart, its recomputed steps,
    one pre-activation step more, and its backward steps."""
    for arch, per_step in (("rnn", 1), ("lstm", 1), ("gru", 2)):
        be = host["float64"]
        cfg = rnn_config(arch, "float64", "jvp", depth=9)
        del be.launches[:]
        cuda_gpu.run_unit(cfg, 5, 0, backend=be)
        epilogues = [n for n, *_ in be.launches if not n.startswith("vx_fill")]
        assert len(epilogues) == per_step * cfg.depth, (arch, epilogues)
    be = host["float64"]
    cfg = rnn_config("lstm", "float64", "vjp", depth=9, checkpoint=4)
    plan = cuda_rnn.vjp_plan(cfg)
    ops = schedule.backward_ops(cfg.depth, plan, np.arange(cfg.depth + 1))
    segments = sum(isinstance(op, schedule.Restart) for op in ops)
    recomputed = sum(isinstance(op, schedule.Recompute) for op in ops)
    steps = sum(isinstance(op, schedule.Backward) for op in ops)
    del be.launches[:]
    cuda_gpu.run_unit(cfg, 5, 0, backend=be)
    count = {}
    for name, *_ in be.launches:
        count[name] = count.get(name, 0) + 1
    assert count["vx_lstm_recompute"] == recomputed + segments
    assert count["vx_lstm_cot_gates"] == count["vx_rnn_cot_finish"] == steps


def test_other_laws_and_generic_path_stay_generic(host):
    """A weight law other than the Gaussian (and path='generic') runs engines.generic."""
    be = host["float64"]
    cfg = make_config('network.architecture="gru"', 'network.init=["orthogonal"]', depth=6,
                      precision="float64")  # fmt: skip
    del be.launches[:]
    got = cuda_gpu.run_unit(cfg, 8, 0, backend=be)
    assert not any(n.startswith("vx_gru") for n, *_ in be.launches)
    want = numpy_ref.run_unit(cfg, 8, 0)
    for key in want:
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)


def test_device_memory_estimate_covers_the_buffers(host):
    for arch in RNNS:
        cfg = rnn_config(arch, "float32", "both", depth=30, checkpoint=5)
        unit = cuda_rnn.UNITS[arch](cfg, 16, 0, host["float32"])
        unit.run()  # the drive's blocks too
        owned = {k: v for k, v in vars(unit).items() if k not in ("W_rz", "W_n")}  # views of W
        held = sum(v.nbytes for v in owned.values() if hasattr(v, "nbytes"))
        held += sum(a.nbytes for v in owned.values() if isinstance(v, list)
                    for a in v if hasattr(a, "nbytes"))  # fmt: skip
        held += sum(d.nbytes for d in unit.drives.values())
        assert held <= cuda_rnn.device_bytes(cfg, 16), arch


def test_sweep_of_an_lstm_on_the_cuda_engine(tmp_path, monkeypatch, host):
    """``vxsim sweep --backend cuda`` of an LSTM (fused step kernels), with the host stand-in
    as the GPU: the file's measurements are the numpy sweep's, to the oracle tolerance."""
    import h5py

    from vxsim.sweep import run_sweep

    monkeypatch.setattr(cuda_gpu, "available", lambda: True)
    monkeypatch.setattr(cuda_gpu, "gpu_backend", lambda precision: host["float64"])
    cfg = rnn_config("lstm", "float64", "both", depth=10)
    files = {b: run_sweep(cfg, str(tmp_path / f"{b}.h5"), backend=b) for b in ("cuda", "numpy")}
    with h5py.File(files["cuda"], "r") as a, h5py.File(files["numpy"], "r") as b:
        assert a.attrs["backend"] == "cuda"
        np.testing.assert_array_equal(a["diverged"][...], b["diverged"][...])
        for name in ("log_q", "corr", "log_tangent_norm", "log_grad_norm"):
            np.testing.assert_allclose(a[name][...], b[name][...], rtol=0,
                                       atol=TOL["float64"][name], err_msg=name)  # fmt: skip
