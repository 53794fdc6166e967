"""The residual MLP's fused epilogue on the cuda engine (kernels/residual.cu, cuda_residual.py),
on the CPU.

The kernels built with g++ (``cuda_host``, strict arrays) drive the unchanged engine
against the NumPy oracle, every mode and both precisions, to the oracle cases'
tolerances (tests/oracle_cases.py), with one and several host threads a block; the
schedules (no checkpoint, a spacing of 1, segments keeping their Z^l or drawing them
again), divergence flags, float32 underflow to the fixed point, alpha far from 1/sqrt(L),
the draws made on the device, the launches per layer and the memory estimate.
"""

import numpy as np
import pytest
from oracle_cases import TOL, assert_same, make_config

from vxsim.engines import (
    cuda_gpu,
    cuda_host,
    cuda_paths,
    cuda_residual,
    numpy_ref,
    schedule,
    strict_arrays,
)


def res_config(precision="float64", mode="both", depth=14, checkpoint=4, alpha="[0.5, 1.0]",
               record="{every = 1}", **kw):  # fmt: skip
    return make_config(
        'network.architecture="residual"',
        f"grid.alpha={alpha}",
        f"engine.checkpoint={checkpoint}",
        f"measure.record={record}",
        precision=precision,
        mode=mode,
        depth=depth,
        **kw,
    )


def run(cfg, width, sample, backend):
    """The unit on the fused epilogue, checking that it (not engines.generic) ran."""
    del backend.launches[:]
    got = cuda_gpu.run_unit(cfg, width, sample, backend=backend)
    assert "vx_residual_forward" in {name for name, *_ in backend.launches}
    return got


@pytest.mark.parametrize("precision", ["float32", "float64"])
@pytest.mark.parametrize("mode", ["jvp", "vjp", "both"])
def test_matches_oracle(host, mode, precision):
    cfg = res_config(precision, mode)
    assert cuda_paths.choose_path(cfg, 12) == "skip"
    assert_same(run(cfg, 12, 1, host[precision]), numpy_ref.run_unit(cfg, 12, 1), TOL[precision])


# width, depth, checkpoint spacing, record: segments of 9, no checkpoint (one segment), a
# spacing of 1, width 1, depth 1 and 2.
SHAPES = [(9, 40, 9, "{log = 12}"), (7, 20, 0, "{every = 3}"), (5, 11, 1, "{every = 1}"),
          (1, 6, 2, "{every = 1}"), (4, 1, 0, "{every = 1}"), (6, 2, 0, "{every = 1}")]  # fmt: skip


def test_shapes_and_schedules_match_oracle(host):
    for width, depth, checkpoint, record in SHAPES:
        cfg = res_config("float64", "both", depth, checkpoint, record=record)
        want = numpy_ref.run_unit(cfg, width, 0)
        assert_same(run(cfg, width, 0, host["float64"]), want, TOL["float64"], (width, depth))


def test_segments_that_draw_their_weights_again(host, monkeypatch):
    """With no room to keep a segment's Z^l (schedule.ZSTORE_BYTES = 0) the backward steps
    draw Z^l again from the counter: the same numbers."""
    monkeypatch.setattr(schedule, "ZSTORE_BYTES", 0)
    cfg = res_config("float64", "vjp", depth=13, checkpoint=4)
    assert not cuda_paths.vjp_plan(cfg, 10, "gemm").keep_weights
    assert_same(run(cfg, 10, 1, host["float64"]), numpy_ref.run_unit(cfg, 10, 1), TOL["float64"])


@pytest.mark.parametrize("threads", [3, 32])
def test_matches_oracle_with_threads(threads):
    """Each block run by several host threads at real barriers: the partition of each
    point's elements, the reductions' contract, the per-point flags written by thread 0."""
    if cuda_host.compiler() is None:
        pytest.skip("no C++ compiler on PATH")
    for precision in ("float32", "float64"):
        be = cuda_host.HostBackend(precision, threads=threads, strict=True)
        width = 40 if threads == 32 else 12  # several elements per thread, and idle threads
        cfg = res_config(precision, "both", depth=12, checkpoint=5)
        want = numpy_ref.run_unit(cfg, width, 1)
        assert_same(run(cfg, width, 1, be), want, TOL[precision], precision)


def test_divergence_flags_match_oracle(host):
    """sigma_w2 = 1e6 with elu and gelu (not renormalised) overflows float32 within a few
    layers: flagged at the oracle's layer, the same NaN pattern."""
    cfg = make_config('network.architecture="residual"', sw2="[1.0, 1e6]",
                      acts='["elu", "gelu"]', depth=40)  # fmt: skip
    want = numpy_ref.run_unit(cfg, 10, 1)
    assert np.all(want["diverged"][:, 1] > 0) and not np.any(want["diverged"][:, 0])
    assert_same(run(cfg, 10, 1, host["float32"]), want, TOL["float32"])


def test_alpha_far_from_one_over_sqrt_depth(host):
    """alpha = 0 (the identity: |t| = |g| = 1 at every layer), 0.05 and 3 (the branch
    dominates, relu renormalised, tanh saturated), in both precisions."""
    for precision in ("float32", "float64"):
        cfg = res_config(precision, "both", depth=20, alpha="[0.0, 0.05, 3.0]",
                         sw2="[0.5, 1.5]")  # fmt: skip
        want = numpy_ref.run_unit(cfg, 10, 0)
        got = run(cfg, 10, 0, host[precision])
        assert_same(got, want, TOL[precision], precision)
        # alpha = 0 (the grid's last axis): the skip alone, log |t^l|^2 = log |g^l|^2 = 0 up
        # to the rounding of a unit vector's norm (~1e-16 a layer in float64, 1e-8 in float32)
        assert cfg.grid_dims[-1] == "alpha"
        for key in ("log_tangent_norm", "log_grad_norm"):
            identity = got[key][..., 0, :]
            np.testing.assert_allclose(identity, 0.0, atol=20 * np.finfo(cfg.dtype).eps)


def test_float32_underflow_to_the_fixed_point(host):
    """tanh and elu (not renormalised), no bias, alpha = 1 and sigma_w2 far below the edge
    cannot reach 0 through the skip (h^l = h^{l-1} + ...): no flags where the oracle has
    none, and the same numbers over 200 layers."""
    cfg = res_config("float32", "both", depth=200, alpha="[1.0]", sw2="[0.05, 0.3]",
                     acts='["tanh", "elu"]')  # fmt: skip
    want = numpy_ref.run_unit(cfg, 8, 0)
    got = run(cfg, 8, 0, host["float32"])
    np.testing.assert_array_equal(got["diverged"], want["diverged"])
    assert_same(got, want, TOL["float32"])


def test_weights_are_drawn_on_the_device_once_per_use(host):
    """Z^l comes from vx_fill_weights (one launch per forward layer, per recomputed layer,
    and per backward step that does not keep it); each layer is one GEMM and one epilogue."""
    be = host["float64"]
    cfg = res_config("float64", "jvp", depth=9)
    del be.launches[:]
    cuda_gpu.run_unit(cfg, 5, 0, backend=be)
    count = {}
    for name, *_ in be.launches:
        count[name] = count.get(name, 0) + 1
    assert count["vx_fill_weights"] == count["vx_residual_forward"] == cfg.depth
    cfg = res_config("float64", "vjp", depth=9, checkpoint=4)
    plan = cuda_paths.vjp_plan(cfg, 5, "gemm")
    ops = schedule.backward_ops(cfg.depth, plan, np.arange(cfg.depth + 1))
    del be.launches[:]
    cuda_gpu.run_unit(cfg, 5, 0, backend=be)
    count = {}
    for name, *_ in be.launches:
        count[name] = count.get(name, 0) + 1
    recomputed = sum(isinstance(op, schedule.Recompute) for op in ops)
    steps = sum(isinstance(op, schedule.Backward) for op in ops)
    drawn = sum(isinstance(op, schedule.Backward) and op.draw for op in ops)
    assert count["vx_residual_recompute"] == recomputed
    assert count["vx_residual_backward"] == steps
    assert count["vx_fill_weights"] == cfg.depth + recomputed + drawn


def test_other_laws_and_generic_path_stay_generic(host):
    """A weight law other than the Gaussian (and path='generic') runs engines.generic."""
    be = host["float64"]
    cfg = make_config('network.architecture="residual"', 'network.init=["orthogonal"]',
                      depth=6, precision="float64")  # fmt: skip
    del be.launches[:]
    got = cuda_gpu.run_unit(cfg, 8, 0, backend=be)
    assert not any(n.startswith("vx_residual") for n, *_ in be.launches)
    want = numpy_ref.run_unit(cfg, 8, 0)
    for key in want:
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)


def test_device_memory_estimate_covers_the_buffers(host):
    cfg = res_config("float32", "both", depth=30, checkpoint=5)
    unit = cuda_residual.ResidualUnit(cfg, 16, 0, host["float32"])
    unit.run()
    arrays = [v for v in vars(unit).values() if isinstance(v, strict_arrays.DeviceArray)]
    held = sum(a.nbytes for a in arrays)
    estimate = cuda_residual.device_bytes(cfg, 16)
    assert held <= estimate <= 1.5 * held + 2**16, (held, estimate)


def test_sweep_of_a_residual_net_on_the_cuda_engine(tmp_path, monkeypatch, host):
    """``vxsim sweep --backend cuda`` of a residual net (fused epilogue), the host stand-in
    as the GPU: the file's measurements are the numpy sweep's, to the oracle tolerance."""
    import h5py

    from vxsim.sweep import run_sweep

    monkeypatch.setattr(cuda_gpu, "available", lambda: True)
    monkeypatch.setattr(cuda_gpu, "gpu_backend", lambda precision: host["float64"])
    cfg = res_config("float64", "both", depth=10)
    files = {b: run_sweep(cfg, str(tmp_path / f"{b}.h5"), backend=b) for b in ("cuda", "numpy")}
    with h5py.File(files["cuda"], "r") as a, h5py.File(files["numpy"], "r") as b:
        assert a.attrs["backend"] == "cuda"
        np.testing.assert_array_equal(a["diverged"][...], b["diverged"][...])
        for name in ("log_q", "corr", "log_tangent_norm", "log_grad_norm"):
            np.testing.assert_allclose(a[name][...], b[name][...], rtol=0,
                                       atol=TOL["float64"][name], err_msg=name)  # fmt: skip
