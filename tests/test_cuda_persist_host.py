"""The persistent small-width RNN kernels (kernels/persist.cu, persist_lstm.cu,
persist_gru.cu, engines/cuda_persist.py), on the CPU.

One block per grid point runs whole runs of steps with the tied (stacked) gate matrix in
shared memory: Elman's W, the LSTM's [Z_i; Z_f; Z_g; Z_o], the GRU's [Z_r; Z_z; Z_n].
Built with g++ (``cuda_host``, strict arrays), against the NumPy oracle: every mode and
both precisions, schedules (no checkpoint, a spacing of 1, forward launches cut into
runs), one and several host threads a block, the edge cases of issue 14 (divergence
flags, float32 underflow, zero input variance, gate biases far from 0), the step
kernels' numbers (bit for bit where the GEMM is exact), the path choice (the declared
crossover width, the shared-memory limit), and removed barriers shown to fail.
"""

import numpy as np
import pytest
from conftest import measured
from oracle_cases import ARCH_AXES, TOL, assert_same, make_config

from vxsim.engines import cuda_gpu, cuda_host, cuda_paths, cuda_persist, cuda_sources, numpy_ref
from vxsim.errors import VxsimError

RNNS = ("rnn", "gru", "lstm")
NAME = {"rnn": "elman", "gru": "gru", "lstm": "lstm"}  # the kernels' prefix (vx_<name>_...)


def rnn(arch="rnn", precision="float64", mode="both", depth=14, checkpoint=4,
        record="{every = 1}", *extra, axis="[0.5, 1.0]", **kw):  # fmt: skip
    return make_config(f'network.architecture="{arch}"', f"grid.{ARCH_AXES[arch]}={axis}",
                       f"engine.checkpoint={checkpoint}", f"measure.record={record}", *extra,
                       precision=precision, mode=mode, depth=depth, **kw)  # fmt: skip


def run(cfg, width, sample, backend):
    """The unit on the persistent kernels (not the step kernels), checked."""
    del backend.launches[:]
    got = cuda_gpu.run_unit(cfg, width, sample, backend=backend)
    names = {name for name, *_ in backend.launches}
    prefix = f"vx_{NAME[cfg.arch.name]}"
    assert f"{prefix}_persist_forward" in names and f"{prefix}_forward" not in names, names
    return got


@pytest.mark.parametrize("precision", ["float32", "float64"])
@pytest.mark.parametrize("mode", ["jvp", "vjp", "both"])
@pytest.mark.parametrize("arch", RNNS)
def test_matches_oracle(host, arch, mode, precision):
    cfg = rnn(arch, precision, mode)
    assert cuda_paths.choose_path(cfg, 12) == "persistent"
    assert_same(run(cfg, 12, 1, host[precision]), numpy_ref.run_unit(cfg, 12, 1), TOL[precision])


SHAPES = [(9, 70, 9, "{log = 12}"), (7, 20, 0, "{every = 3}"), (5, 11, 1, "{every = 1}"),
          (1, 6, 2, "{every = 1}"), (4, 1, 0, "{every = 1}"), (6, 2, 0, "{every = 1}")]  # fmt: skip


@pytest.mark.parametrize("arch", RNNS)
def test_shapes_and_schedules_match_oracle(host, monkeypatch, arch):
    """Sequences past the drive's 64-step blocks, forward launches of 16 steps (the runs
    of PERSIST_STEPS: state, log-scales and checkpoints carried across launches), one
    segment, a spacing of 1 (a gated unit's segments of one step: only the extra
    recomputation of the last step), width 1, depth 1 and 2."""
    monkeypatch.setattr(cuda_persist._Persistent, "PERSIST_STEPS", 16)
    for width, depth, checkpoint, record in SHAPES:
        cfg = rnn(arch, "float64", "both", depth, checkpoint, record)
        want = numpy_ref.run_unit(cfg, width, 0)
        assert_same(run(cfg, width, 0, host["float64"]), want, TOL["float64"], (width, depth))


@pytest.mark.parametrize("arch", RNNS)
def test_agrees_with_the_step_kernels(host, arch):
    """The persistent path and the step path (GEMMs per step) give the same numbers: to
    the oracle's tolerance where the products' summation orders differ (the kernel's fma
    chain against BLAS), and bit for bit at width 1 wherever each product is then one
    rounding on both paths: every forward product (W h, N terms) and Elman's backward one
    (W^T g), so that everything around them (gates, drives, tangent, norms,
    renormalisation, records, checkpoints, Elman's cotangent) is shown to be the step
    kernels' arithmetic in the step kernels' order. A gated unit's backward products sum
    G N terms (GA W: 4, GRZ [Z_r; Z_z]: 2), rounded in BLAS's order or the fma chain's,
    so its gradients are compared to the tolerance."""
    for width, precision in ((16, "float64"), (1, "float64"), (1, "float32")):
        cfg = rnn(arch, precision, "both", 30, 6)
        steps = rnn(arch, precision, "both", 30, 6, "{every = 1}", 'engine.path="gemm"')
        assert cuda_paths.choose_path(steps, width) == "steps"
        got = run(cfg, width, 0, host[precision])
        want = cuda_gpu.run_unit(steps, width, 0, backend=host[precision])
        if width > 1:
            assert_same(got, want, TOL[precision])
            continue
        assert set(got) == set(want)
        for key in want:
            if key == "log_grad_norm" and arch != "rnn":
                np.testing.assert_allclose(got[key], want[key], rtol=0,
                                           atol=TOL[precision][key])  # fmt: skip
            else:
                np.testing.assert_array_equal(got[key], want[key], err_msg=(arch, precision, key))


@pytest.mark.parametrize("threads", [3, 32])
def test_matches_oracle_with_threads(threads):
    """Several host threads a block at real barriers: W loaded by all of them, products
    reading the whole state, the epilogue's reductions and flags."""
    if cuda_host.compiler() is None:
        pytest.skip("no C++ compiler on PATH")
    for precision in ("float32", "float64"):
        be = cuda_host.HostBackend(precision, threads=threads, strict=True)
        width = 40 if threads == 32 else 12  # several elements per thread, and idle threads
        for arch in RNNS:
            cfg = rnn(arch, precision, "both", depth=12, checkpoint=5)
            want = numpy_ref.run_unit(cfg, width, 1)
            assert_same(run(cfg, width, 1, be), want, TOL[precision], (arch, precision))


# (architecture, the barrier's line, which occurrence, mode, the result it breaks)
BARRIERS = [
    # Elman backward: u = W^T g (every thread reads all of g) before g is overwritten
    ("rnn", "            blk.sync();  // all of g is read (u = W^T g) before any thread "
     "overwrites it\n", 0, "vjp", "log_grad_norm"),
    # LSTM backward: GA written by every thread before GA W reads all of it
    ("lstm", "            blk.sync();  // all of GA (and g_c) is written before the product "
     "reads it\n", 0, "vjp", "log_grad_norm"),
    # GRU forward: M = r h written by every thread before Z_n M reads all of it
    ("gru", "            blk.sync();  // all of M is written before the candidate's product "
     "reads it\n", 0, "jvp", "log_q"),
]  # fmt: skip


@pytest.mark.parametrize("arch, barrier, which, mode, key", BARRIERS)
def test_a_missing_barrier_is_caught(arch, barrier, which, mode, key):
    """Without a barrier between a product that reads a whole shared vector and the
    writes of that vector by every thread, several threads give wrong numbers and one
    thread does not: the threaded tests above can fail."""
    if cuda_host.compiler() is None:
        pytest.skip("no C++ compiler on PATH")
    text = cuda_sources.program("float64")
    at = [i for i in range(len(text)) if text.startswith(barrier, i)]
    assert len(at) >= which + 1, barrier
    broken = text[: at[which]] + text[at[which] + len(barrier) :]
    # the gated nets at sigma_w2 <= 2: at 3 and 4 (chaotic) the LSTM's gradients over 35
    # steps leave the oracle's float64 tolerance on the step path too (3e-7 seen)
    sw2 = None if arch == "rnn" else "[0.5, 1.0, 1.5, 2.0]"
    cfg = rnn(arch, "float64", mode, depth=35, checkpoint=6, sw2=sw2)
    want = numpy_ref.run_unit(cfg, 64, 1)
    one = cuda_host.HostBackend("float64", text=broken)
    assert_same(run(cfg, 64, 1, one), want, TOL["float64"])
    three = cuda_host.HostBackend("float64", threads=3, text=broken)
    with pytest.raises(AssertionError, match=key):
        assert_same(run(cfg, 64, 1, three), want, TOL["float64"])


@pytest.mark.parametrize("arch", RNNS)
def test_divergence_flags_match_oracle(host, arch):
    """sigma_w2 = 1e6 with elu and gelu: the Elman state overflows float32 within a few
    steps (flagged at the oracle's step); the gated RNNs stay bounded (|h| <= max|phi|),
    as in the oracle. Either way the same flags and NaN pattern."""
    cfg = make_config(f'network.architecture="{arch}"', sw2="[1.0, 1e6]",
                      acts='["elu", "gelu"]', depth=40)  # fmt: skip
    want = numpy_ref.run_unit(cfg, 10, 1)
    if arch == "rnn":
        assert np.all(want["diverged"][:, 1] > 0) and not np.any(want["diverged"][:, 0])
    assert_same(run(cfg, 10, 1, host["float32"]), want, TOL["float32"])


def test_gated_divergence_is_flagged_mid_run(host):
    """An LSTM and a GRU whose states overflow: relu (unbounded) with sigma_w2 = 1e100 and
    1e150 in float64, the state beyond the divergence limit after a few steps: the point
    is flagged at the oracle's step, past the first, inside a persistent launch (the
    block leaves its run of steps); its later steps skipped, its results NaN, as the
    oracle's."""
    for arch in ("lstm", "gru"):
        cfg = rnn(arch, "float64", "both", 40, 6, sw2="[1.0, 1e100, 1e150]", acts='["relu"]')
        want = numpy_ref.run_unit(cfg, 10, 1)
        flags = want["diverged"]
        assert np.all(flags[:, 0] == 0) and np.all(flags[:, 1:] > 1), (arch, flags)
        assert_same(run(cfg, 10, 1, host["float64"]), want, TOL["float64"], arch)


@pytest.mark.parametrize("arch", RNNS)
def test_float32_underflow_to_the_fixed_point(host, arch):
    """tanh and elu, sigma_w2 = 0.05 and 0.3, no bias nor input: the state decays to the
    fixed point h = 0 through float32's subnormals (log q = -inf); the same flags and -inf
    where the oracle has them; the engine tolerance above the float32 floor (as the step
    kernels' test, tests/test_cuda_rnn_host.py), the renormalised tangents and gradients
    everywhere."""
    cfg = make_config(f'network.architecture="{arch}"', f"grid.{ARCH_AXES[arch]}=[0.0]",
                      "grid.sigma_b2=[0.0]", "network.input_variance=0.0", sw2="[0.05, 0.3]",
                      acts='["tanh", "elu"]', depth=300, precision="float32",
                      mode="both")  # fmt: skip
    want = numpy_ref.run_unit(cfg, 8, 0)
    got = run(cfg, 8, 0, host["float32"])
    np.testing.assert_array_equal(got["diverged"], want["diverged"])
    end = np.isneginf(want["log_q"][..., -1])
    assert np.any(end) and np.array_equal(np.isneginf(got["log_q"][..., -1]), end)
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
    cfg = make_config(f'network.architecture="{arch}"', "network.input_variance=0.0", depth=12,
                      precision="float64")  # fmt: skip
    assert cfg.input_variance == 0.0
    assert_same(run(cfg, 10, 1, host["float64"]), numpy_ref.run_unit(cfg, 10, 1), TOL["float64"])


@pytest.mark.parametrize("arch", ["gru", "lstm"])
def test_gate_bias_far_from_zero(host, arch):
    """forget_bias / update_bias of -30, -5, 5, 30: gates saturated at 0 or 1 (the sigmoid's
    tails, 1 - sigma in both), memory kept or lost; both precisions."""
    for precision in ("float32", "float64"):
        cfg = rnn(arch, precision, "both", depth=25, axis="[-30.0, -5.0, 5.0, 30.0]")
        want = numpy_ref.run_unit(cfg, 10, 0)
        assert_same(run(cfg, 10, 0, host[precision]), want, TOL[precision], precision)


# The widest persistent width of each architecture in float32 / float64: G N^2 + v N reals
# within PERSIST_SMEM_BYTES (G gates, v the forward kernel's vectors: 6, 12, 9).
WIDEST = {"rnn": (236, 166), "gru": (136, 95), "lstm": (118, 83)}


@pytest.mark.parametrize("arch", RNNS)
def test_path_choice_and_limits(arch):
    """auto: persistent for few points at small widths, steps where the persistent kernels
    do not fit; 'gemm' forces the steps, 'fused' the persistent kernels where W and their
    vectors fit in PERSIST_SMEM_BYTES (a one-line error beyond)."""
    for precision, widest in zip(("float32", "float64"), WIDEST[arch], strict=True):
        c = rnn(arch, precision)
        assert cuda_paths.persist_widest(c) == widest
        assert cuda_paths.choose_path(c, 32) == "persistent"
        assert cuda_paths.choose_path(c, widest + 1) == "steps"
        gemm = rnn(arch, precision, "both", 14, 4, "{every = 1}", 'engine.path="gemm"')
        assert cuda_paths.choose_path(gemm, 8) == "steps"
        fused = rnn(arch, precision, "both", 14, 4, "{every = 1}", 'engine.path="fused"')
        vectors = max(cuda_paths.PERSIST_KERNEL_VECTORS[arch].values())
        smem = cuda_paths.persist_smem(widest, fused.dtype.itemsize, vectors, fused.arch.gates)
        assert smem <= cuda_paths.PERSIST_SMEM_BYTES
        assert cuda_paths.choose_path(fused, widest) == "persistent"
        assert cuda_paths.choose_path(fused, widest + 1) == "steps"
        with pytest.raises(VxsimError, match=f"{arch} widths up to {widest} in {precision}"):
            cuda_paths.check_unit(fused, widest + 1, cuda_paths.choose_path(fused, widest + 1))


def test_step_cost_model_against_the_paths_measured_on_an_h200():
    """cuda_paths.step_seconds against the per-step times gpu_check measured on an H200
    (tests/measured/h200_rnn_paths.csv: Elman, GRU and LSTM at every width where the
    persistent kernels fit, 80, 264 and 1,000 points, 51 cases): each estimate within a
    factor 2 (rms 12 %); "auto" picks the faster path in all but 1, and no pick is 5 %
    slower."""
    slower = []
    for row in measured("h200_rnn_paths.csv"):
        arch = rnn(row["arch"], "float32").arch
        N, P = int(row["width"]), int(row["points"])
        took = {path: float(row[f"{path}_s"]) for path in ("persistent", "steps")}
        guess = {path: cuda_paths.step_seconds(path, arch, P, N, 4) for path in took}
        for path in took:
            assert 0.5 < guess[path] / took[path] < 2, (row, path, guess[path])
        slower.append(took[min(guess, key=guess.get)] / min(took.values()))
    assert len(slower) == 51
    assert sum(x > 1 for x in slower) <= 1 and max(slower) < 1.05, slower


def test_a_smaller_opt_in_limit(monkeypatch):
    """On a device that grants a block less shared memory (an A100's opt-in, 163 KiB) the
    widest persistent width shrinks so that the dynamic part and the reductions' static
    scratch (1,328 bytes, ptxas -v for sm_90) fit within the opt-in together."""
    from vxsim.engines import cuda_backend

    optin = 163 * 1024
    monkeypatch.setattr(cuda_backend, "shared_memory_optin", lambda: optin)
    for arch in RNNS:
        for k, precision in enumerate(("float32", "float64")):
            c = rnn(arch, precision)
            widest = cuda_paths.persist_widest(c)
            vectors = max(cuda_paths.PERSIST_KERNEL_VECTORS[arch].values())
            need = [cuda_paths.persist_smem(w, c.dtype.itemsize, vectors, c.arch.gates)
                    for w in (widest, widest + 1)]  # fmt: skip
            assert need[0] + 1328 <= optin < need[1] + cuda_paths.PERSIST_STATIC_BYTES
            assert 0 < widest < WIDEST[arch][k]


@pytest.mark.parametrize("arch", RNNS)
def test_launches_and_shared_memory(host, arch):
    """The forward pass is ceil(L / PERSIST_STEPS) launches; the backward one per run of
    like operations (a gated unit: one more recomputation per segment, of its last step);
    each block asks for the stacked W and its vectors in shared memory."""
    be = host["float32"]
    cfg = rnn(arch, "float32", "both", depth=30, checkpoint=6)
    del be.launches[:]
    cuda_gpu.run_unit(cfg, 16, 0, backend=be)
    P = int(np.prod(cfg.grid_shape))
    G = cfg.arch.gates
    vectors = cuda_paths.PERSIST_KERNEL_VECTORS[arch]
    shapes, count = {}, {}
    for name, grid, block, smem in be.launches:
        shapes.setdefault(name, set()).add((grid, block, smem))
        count[name] = count.get(name, 0) + 1
    prefix = f"vx_{NAME[arch]}_persist_"
    for kernel in ("forward", "recompute", "backward"):
        smem = (G * 16 * 16 + vectors[kernel] * 16) * 4
        assert shapes[prefix + kernel] == {(P, 32, smem)}, kernel
    segments = -(-cfg.depth // 6)  # 30 steps, checkpoints every 6: 5 segments
    assert count[prefix + "forward"] == 1
    assert count[prefix + "backward"] == segments
    # a gated unit also recomputes each segment's last step (its pre-activations) before
    # the segment's backward steps
    assert count[prefix + "recompute"] == (segments if arch == "rnn" else 2 * segments)
    assert not {n for n in count if n.startswith(f"vx_{NAME[arch]}_") and "persist" not in n}
