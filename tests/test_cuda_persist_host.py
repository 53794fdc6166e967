"""The persistent small-width Elman kernels (kernels/persist.cu, cuda_rnn.PersistentElman),
on the CPU.

One block per grid point runs whole runs of steps with the tied W in shared memory. Built
with g++ (``cuda_host``, strict arrays), against the NumPy oracle: every mode and both
precisions, schedules (no checkpoint, a spacing of 1, forward launches cut into runs),
one and several host threads a block, the divergence and underflow edge cases, the path
choice (the declared crossover width, the shared-memory limit), and a removed barrier
shown to fail.
"""

import numpy as np
import pytest
from oracle_cases import TOL, assert_same, make_config

from vxsim.engines import cuda_gpu, cuda_host, cuda_paths, cuda_rnn, cuda_sources, numpy_ref
from vxsim.errors import VxsimError


def elman(precision="float64", mode="both", depth=14, checkpoint=4, record="{every = 1}", *extra,
          **kw):  # fmt: skip
    return make_config('network.architecture="rnn"', "grid.sigma_u2=[0.5, 1.0]",
                       f"engine.checkpoint={checkpoint}", f"measure.record={record}", *extra,
                       precision=precision, mode=mode, depth=depth, **kw)  # fmt: skip


def run(cfg, width, sample, backend):
    """The unit on the persistent kernels (not the step kernels), checked."""
    del backend.launches[:]
    got = cuda_gpu.run_unit(cfg, width, sample, backend=backend)
    names = {name for name, *_ in backend.launches}
    assert "vx_elman_persist_forward" in names and "vx_elman_forward" not in names, names
    return got


@pytest.mark.parametrize("precision", ["float32", "float64"])
@pytest.mark.parametrize("mode", ["jvp", "vjp", "both"])
def test_matches_oracle(host, mode, precision):
    cfg = elman(precision, mode)
    assert cuda_paths.choose_path(cfg, 12) == "persistent"
    assert_same(run(cfg, 12, 1, host[precision]), numpy_ref.run_unit(cfg, 12, 1), TOL[precision])


SHAPES = [(9, 70, 9, "{log = 12}"), (7, 20, 0, "{every = 3}"), (5, 11, 1, "{every = 1}"),
          (1, 6, 2, "{every = 1}"), (4, 1, 0, "{every = 1}"), (6, 2, 0, "{every = 1}")]  # fmt: skip


def test_shapes_and_schedules_match_oracle(host, monkeypatch):
    """Sequences past the drive's 64-step blocks, forward launches of 16 steps (the runs
    of PERSIST_STEPS: state, log-scales and checkpoints carried across launches), one
    segment, a spacing of 1, width 1, depth 1 and 2."""
    monkeypatch.setattr(cuda_rnn.PersistentElman, "PERSIST_STEPS", 16)
    for width, depth, checkpoint, record in SHAPES:
        cfg = elman("float64", "both", depth, checkpoint, record)
        want = numpy_ref.run_unit(cfg, width, 0)
        assert_same(run(cfg, width, 0, host["float64"]), want, TOL["float64"], (width, depth))


def test_agrees_with_the_step_kernels(host):
    """The persistent path and the step path (GEMM per step) give the same numbers."""
    cfg = elman("float64", "both", 30, 6)
    steps = elman("float64", "both", 30, 6, "{every = 1}", 'engine.path="gemm"')
    assert cuda_paths.choose_path(steps, 16) == "steps"
    got = run(cfg, 16, 0, host["float64"])
    want = cuda_gpu.run_unit(steps, 16, 0, backend=host["float64"])
    assert_same(got, want, TOL["float64"])


@pytest.mark.parametrize("threads", [3, 32])
def test_matches_oracle_with_threads(threads):
    """Several host threads a block at real barriers: W loaded by all of them, products
    reading the whole state, the epilogue's reductions and flags."""
    if cuda_host.compiler() is None:
        pytest.skip("no C++ compiler on PATH")
    for precision in ("float32", "float64"):
        be = cuda_host.HostBackend(precision, threads=threads, strict=True)
        width = 40 if threads == 32 else 12
        cfg = elman(precision, "both", depth=12, checkpoint=5)
        want = numpy_ref.run_unit(cfg, width, 1)
        assert_same(run(cfg, width, 1, be), want, TOL[precision], precision)


def test_a_missing_barrier_is_caught():
    """Without the barrier between the backward product u = W^T g (every thread reads all
    of g) and the step that overwrites g, several threads give wrong gradients and one
    thread does not: the threaded tests above can fail."""
    if cuda_host.compiler() is None:
        pytest.skip("no C++ compiler on PATH")
    barrier = (
        "            blk.sync();  // all of g is read (u = W^T g) before any thread overwrites it\n"
    )
    text = cuda_sources.program("float64")
    assert text.count(barrier) == 1
    broken = text.replace(barrier, "")
    cfg = elman("float64", "vjp", depth=35, checkpoint=6)
    want = numpy_ref.run_unit(cfg, 64, 1)
    one = cuda_host.HostBackend("float64", text=broken)
    assert_same(run(cfg, 64, 1, one), want, TOL["float64"])
    three = cuda_host.HostBackend("float64", threads=3, text=broken)
    with pytest.raises(AssertionError, match="log_grad_norm"):
        assert_same(run(cfg, 64, 1, three), want, TOL["float64"])


def test_divergence_flags_match_oracle(host):
    cfg = make_config('network.architecture="rnn"', sw2="[1.0, 1e6]", acts='["elu", "gelu"]',
                      depth=40)  # fmt: skip
    want = numpy_ref.run_unit(cfg, 10, 1)
    assert np.all(want["diverged"][:, 1] > 0) and not np.any(want["diverged"][:, 0])
    assert_same(run(cfg, 10, 1, host["float32"]), want, TOL["float32"])


def test_float32_underflow_and_zero_input_variance(host):
    """No bias nor input, sigma_w2 = 0.05 and 0.3: the state decays to h = 0 through
    float32's subnormals; the same flags and -inf where the oracle has them."""
    cfg = make_config('network.architecture="rnn"', "grid.sigma_u2=[0.0]", "grid.sigma_b2=[0.0]",
                      "network.input_variance=0.0", sw2="[0.05, 0.3]", acts='["tanh", "elu"]',
                      depth=300, precision="float32", mode="both")  # fmt: skip
    want = numpy_ref.run_unit(cfg, 8, 0)
    got = run(cfg, 8, 0, host["float32"])
    np.testing.assert_array_equal(got["diverged"], want["diverged"])
    end = np.isneginf(want["log_q"][..., -1])
    assert np.any(end) and np.array_equal(np.isneginf(got["log_q"][..., -1]), end)


def test_path_choice_and_limits():
    """auto: persistent up to the declared crossover width, steps beyond; 'gemm' forces the
    steps, 'fused' the persistent kernel where W and 6 vectors fit in PERSIST_SMEM_BYTES
    (a one-line error beyond); GRU and LSTM take the steps."""
    W = cuda_paths.PERSIST_CROSSOVER_WIDTH
    cfg = elman("float32", "both")
    assert cuda_paths.choose_path(cfg, W) == "persistent"
    assert cuda_paths.choose_path(cfg, W + 1) == "steps"
    fused = elman("float32", "both", 14, 4, "{every = 1}", 'engine.path="fused"')
    widest = {"float32": 236, "float64": 166}
    for precision, w in widest.items():
        c = elman(precision, "both", 14, 4, "{every = 1}", 'engine.path="fused"')
        assert cuda_paths.persist_smem(w, c.dtype.itemsize, 6) <= cuda_paths.PERSIST_SMEM_BYTES
        assert cuda_paths.choose_path(c, w) == "persistent"
        assert cuda_paths.choose_path(c, w + 1) == "steps"
        with pytest.raises(VxsimError, match=f"widths up to {w} in {precision}"):
            cuda_paths.check_unit(c, w + 1, cuda_paths.choose_path(c, w + 1))
    assert cuda_paths.choose_path(fused, 200) == "persistent"
    for arch in ("gru", "lstm"):
        c = make_config(f'network.architecture="{arch}"', precision="float32")
        assert cuda_paths.choose_path(c, 16) == "steps"


def test_launches_and_shared_memory(host):
    """The forward pass is ceil(L / PERSIST_STEPS) launches; the backward one per run of
    like operations; each block asks for W and its vectors in shared memory."""
    be = host["float32"]
    cfg = elman("float32", "both", depth=30, checkpoint=6)
    del be.launches[:]
    cuda_gpu.run_unit(cfg, 16, 0, backend=be)
    P = int(np.prod(cfg.grid_shape))
    shapes = {}
    for name, grid, block, smem in be.launches:
        shapes.setdefault(name, set()).add((grid, block, smem))
    assert shapes["vx_elman_persist_forward"] == {(P, 32, (16 * 16 + 6 * 16) * 4)}
    assert shapes["vx_elman_persist_backward"] == {(P, 32, (16 * 16 + 2 * 16) * 4)}
    assert shapes["vx_elman_persist_recompute"] == {(P, 32, (16 * 16 + 2 * 16) * 4)}
    count = sum(name == "vx_elman_persist_forward" for name, *_ in be.launches)
    assert count == 1
