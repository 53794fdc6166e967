"""The Numba CPU engine against the NumPy oracle (issue 4).

The engine compiles one kernel module for all registered activations, once
per precision (cached on disk afterwards): that JIT is most of this file's
time on a fresh machine.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import small_config
from oracle_cases import ACTS, CASES, TOL, assert_same, case_config, make_config

from vxsim import config, engines, rng
from vxsim.engines import (
    base,
    numba_cpu,
    numba_normals,
    numba_types,
    numpy_ref,
    schedule,
    workspace,
)

pytestmark = pytest.mark.skipif(not numba_cpu.available(), reason="numba not installed")


def act_index(cfg, name):
    """Position of an activation on the activation axis (labels carry parameters: 'elu(1)')."""
    return [label.split("(")[0] for label in cfg.activations].index(name)


# ---------------------------------------------------------------- random numbers


@pytest.mark.parametrize("precision", ["float32", "float64"])
def test_weights_bit_identical_to_oracle(precision):
    dtype = np.dtype(precision)
    cfg = make_config("monte_carlo.seed=1099511627781", precision=precision)
    for width in (1, 7, 33, 64):
        for sample, layer in ((0, 1), (1, 5), (3, 200)):
            Z, xi = numba_cpu.weights(cfg, width, sample, layer)
            ref = base.weights(cfg, width, sample, layer, dtype)
            assert Z.dtype == dtype
            np.testing.assert_array_equal(Z, ref)
            np.testing.assert_array_equal(xi, base.bias(cfg, width, sample, layer))


def test_unit_inputs_bit_identical_to_oracle():
    """The unit's inputs and output direction, drawn by the kernels' stream_normals, are
    base.inputs / base.output_direction's (rng.normals) bit for bit; counts around a
    chunk of 4 CHUNK normals and not multiples of 4."""
    cfg = make_config("monte_carlo.seed=1099511627781", mode="vjp")
    for width in (1, 7, 64, 4 * numba_normals.CHUNK + 3):
        unit = numba_cpu._Unit(cfg, width, 3, path="fused")
        for got, want in zip((unit.x1, unit.x2, unit.v0), base.inputs(cfg, width, 3), strict=True):
            np.testing.assert_array_equal(got, want)
        gamma = base.output_direction(cfg, width, 3, unit._normals)
        np.testing.assert_array_equal(gamma, base.output_direction(cfg, width, 3))


def test_box_muller_edge_words_bit_identical():
    """The vectorisable Box-Muller of the kernels against rng's, on the words
    where the exponent folding and the quadrant selection change."""
    edges = {0, 1, 2, 3, 2**32 - 1, 2**32 - 2, 0x3FFFFFFF, 0x40000000, 0x7FFFFFFF, 0x80000000}
    edges |= {2**e for e in range(32)} | {2**e - 1 for e in range(1, 33)}
    edges |= {int(2**e * 1.4142135623730951) + d for e in range(1, 31) for d in (-1, 0, 1)}
    words = np.array(sorted(w for w in edges if 0 <= w < 2**32), dtype=np.uint64)
    pairs = [(a, b) for a in words for b in words[::7]]
    ka = np.array([a for a, _ in pairs], dtype=np.uint64)
    kb = np.array([b for _, b in pairs], dtype=np.uint64)
    z0, z1 = rng.box_muller(ka, kb)
    got = np.array([numba_normals._box_muller(a, b) for a, b in zip(ka, kb, strict=True)])
    np.testing.assert_array_equal(got[:, 0], z0)
    np.testing.assert_array_equal(got[:, 1], z1)


# ---------------------------------------------------------------- fused path products


def _fma_chain_exact(x, m):
    """sum_k x[k] m[k] as a chain of float64 fmas, each step rounded once (exact rationals;
    int / int in Python rounds correctly)."""
    from fractions import Fraction

    acc = 0.0
    for a, b in zip(x.tolist(), m.tolist(), strict=True):
        acc = float(Fraction(a) * Fraction(b) + Fraction(acc))
    return acc


def test_fused_products_are_fma_chains_whatever_the_blocking():
    """numba_matvec.rows_times: Y[r, i] is the fma chain over k in order (float64, against
    exact rationals, bit for bit: widths 19 and 27 have wide strips (2 SIMD registers,
    numba_matvec.WIDE_BYTES each), narrow ones (2 AVX2 registers) where the wide ones
    leave enough, and a scalar tail), and a float32 row's bits do not depend on which
    rows share its block (of six, four or two rows, padded or not)."""
    from vxsim.engines import numba_matvec

    gen = np.random.default_rng(7)
    for n in (19, 27):
        X = gen.standard_normal((6, n))
        M = gen.standard_normal((n, n))
        Y = np.zeros((6, n))
        numba_matvec.rows_times(X, M, Y, np.array([5, 0, 3, 1, 2, 4]), 6)
        want = [[_fma_chain_exact(X[r], M[:, i]) for i in range(n)] for r in range(6)]
        np.testing.assert_array_equal(Y, np.array(want))

    n = 56  # float32 strips (of 32 and 16 with AVX-512, else 16) and a tail of 8
    X = gen.standard_normal((9, n)).astype(np.float32)
    M = gen.standard_normal((n, n)).astype(np.float32)
    Y1 = np.zeros((9, n), dtype=np.float32)
    numba_matvec.rows_times(X, M, Y1, np.arange(9), 9)
    Y2 = np.zeros_like(Y1)
    for rows in ([8, 2, 5], [0], [7, 6, 4, 3, 1]):  # other blocks, other padding
        numba_matvec.rows_times(X, M, Y2, np.array(rows), len(rows))
    np.testing.assert_array_equal(Y1, Y2)
    Y3 = np.zeros_like(Y1)
    for rows in ([1, 7], [0, 2, 3, 4, 5, 6, 8]):  # a pair; six and one padded to two
        numba_matvec.rows_times(X, M, Y3, np.array(rows), len(rows))
    np.testing.assert_array_equal(Y1, Y3)
    # float32 rounding of n products summed in order: |error| < n eps sum |x m|
    bound = n * np.finfo(np.float32).eps * (np.abs(X) @ np.abs(M))
    assert np.all(np.abs(Y1 - X.astype(np.float64) @ M.astype(np.float64)) <= bound)


_ROWS_TIMES = """
import sys, numpy as np
from vxsim.engines import numba_matvec
gen = np.random.default_rng(11)
out = {"wide": numba_matvec.WIDE_BYTES}
for n, dtype in ((56, np.float32), (27, np.float64), (100, np.float32)):
    X = gen.standard_normal((7, n)).astype(dtype)
    M = gen.standard_normal((n, n)).astype(dtype)
    Y = np.zeros((7, n), dtype)
    numba_matvec.rows_times(X, M, Y, np.arange(7), 7)
    out[f"{n}"] = Y
np.savez(sys.argv[1], **out)
"""


def test_fused_products_do_not_depend_on_the_vector_width(tmp_path):
    """rows_times in two processes: one compiled for this CPU (AVX-512's wide strips),
    one for Haswell (NUMBA_CPU_NAME: AVX2 strips only). The same fma chains, so the
    same bits: files do not depend on which of the two a machine has."""
    from vxsim.engines import numba_matvec

    if numba_matvec.WIDE_BYTES == numba_matvec.NARROW_BYTES:
        pytest.skip("this CPU has no AVX-512F: the fused products have one vector width")
    runs = {}
    for name, extra in (("host", {}), ("haswell", {"NUMBA_CPU_NAME": "haswell"})):
        env = {k: v for k, v in os.environ.items() if not k.startswith("NUMBA_CPU")}
        env.update(extra, NUMBA_CACHE_DIR=str(tmp_path / name))
        path = tmp_path / f"{name}.npz"
        proc = subprocess.run([sys.executable, "-c", _ROWS_TIMES, str(path)], env=env,
                              capture_output=True, text=True, timeout=300)  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        runs[name] = dict(np.load(path))
    assert runs["haswell"]["wide"] == 32  # the narrow kernel alone there
    for key in ("56", "27", "100"):
        np.testing.assert_array_equal(runs["host"][key], runs["haswell"][key], err_msg=key)


# ---------------------------------------------------------------- same numbers as the oracle


@pytest.mark.parametrize("precision,mode,path,width,depth,record,checkpoint,sample", CASES)
def test_matches_oracle(precision, mode, path, width, depth, record, checkpoint, sample):
    cfg = case_config(precision, mode, path, width, depth, record, checkpoint, sample)
    assert numba_cpu.choose_path(cfg, width) == path
    got = numba_cpu.run_unit(cfg, width, sample)
    want = numpy_ref.run_unit(cfg, width, sample)
    assert_same(got, want, TOL[precision])


@pytest.mark.parametrize("precision,mode,path,width,depth,record,checkpoint,sample", CASES)
def test_a_reused_workspace_changes_no_bit(
    precision, mode, path, width, depth, record, checkpoint, sample
):
    """Consecutive units reuse one workspace (engines.workspace), uninitialised: a unit
    whose buffers are larger than it needs and hold NaN everywhere (poisoned after a
    wider unit) gives the same bits as the same unit run first, in new memory."""
    cfg = case_config(precision, mode, path, width, depth, record, checkpoint, sample)
    wider = case_config(precision, mode, path, 2 * width, depth, record, checkpoint, sample)
    workspace.release()
    first = numba_cpu.run_unit(cfg, width, sample)
    numba_cpu.run_unit(wider, 2 * width, sample)
    (ws,) = workspace.idle()
    ws.poison()
    again = numba_cpu.run_unit(cfg, width, sample)
    assert workspace.idle() == [ws]  # the same workspace, lent again
    assert set(again) == set(first)
    for key, value in first.items():
        np.testing.assert_array_equal(again[key], value, err_msg=key)


@pytest.mark.parametrize("path", ["gemm", "fused"])
def test_tiny_networks_match_oracle(path):
    """Edge shapes: width 1 (N^2 < one Philox block), depth 1 (no backward step),
    a checkpoint spacing longer than the network."""
    for width, depth, checkpoint in ((1, 5, 0), (2, 1, 0), (3, 2, 0), (5, 7, 3), (6, 10, 20)):
        cfg = make_config(
            f"engine.checkpoint={checkpoint}", width=width, depth=depth, precision="float64"
        )
        got = numba_cpu.run_unit(cfg, width, 0, path=path)
        assert_same(got, numpy_ref.run_unit(cfg, width, 0), TOL["float64"])


@pytest.mark.parametrize("precision", ["float32", "float64"])
@pytest.mark.parametrize("path", ["gemm", "fused"])
def test_vjp_keeping_every_layer_matches_checkpointed_vjp(path, precision, monkeypatch):
    """Within the memory budget VJP keeps phi'(h1) of every layer (and every Z^l)
    from the forward pass and recomputes nothing; below it, only the phi', and
    the Z^l are regenerated (the same numbers bit for bit); with no budget, the
    checkpointed recomputation. All three against the oracle, and the
    checkpointed one against the others to the oracle's tolerance (a
    recomputation's GEMM over the h1 columns alone may sum in another order
    than the forward pass's over h1 and h2)."""
    width, depth, sample = 24, 40, 1
    cfg = make_config(width=width, depth=depth, precision=precision, mode="both")
    want = numpy_ref.run_unit(cfg, width, sample)
    item = cfg.dtype.itemsize
    points = base.grid(cfg).points
    got, plans = {}, {}
    for label, budget in (
        ("all", depth * points * width * item + 64 * depth * width * width * item),
        ("phi'", depth * points * width * item),
        ("checkpoints", 0),
    ):
        monkeypatch.setattr(numba_cpu, "STORE_BYTES", budget)
        unit = numba_cpu._Unit(cfg, width, sample, path=path)
        ring = numba_cpu.ring_slots(width, cfg.dtype) if path == "fused" else 0  # shared draws
        plans[label] = (
            unit.every,
            unit.full,
            unit.zstore,
            unit.D.shape[0],
            unit.Zs.shape[1] - ring,
        )
        got[label] = numba_cpu.run_unit(cfg, width, sample, path=path)
        assert_same(got[label], want, TOL[precision])
    k = cfg.checkpoint_every
    assert plans == {
        "all": (depth, True, True, depth, depth),
        "phi'": (depth, True, False, depth, 1),
        "checkpoints": (k, False, True, k, k),
    }
    for key, value in got["all"].items():
        np.testing.assert_array_equal(got["phi'"][key], value, err_msg=key)
    assert_same(got["checkpoints"], got["all"], TOL[precision])


@pytest.mark.parametrize("ring", [2, 3, 32])
def test_shared_draws_leave_each_step_its_own_layers_weights(ring):
    """The fused path's runs (numba_cpu._shared_draws), replayed on a model of the slots:
    before each run its PREFETCH rows draw, then every step of it must find Z^layer
    (and xi^layer) in its slot; whatever the plan (every layer kept with or without
    its Z^l, checkpointed with or without), depth and number of ring slots."""
    for depth in (1, 2, 7, 20):
        for every, keep_all, keep_weights in ((depth, 1, 1), (depth, 1, 0), (3, 0, 1), (4, 0, 0)):
            plan = schedule.Plan(every, bool(keep_all), bool(keep_weights), False)
            record = np.zeros(depth + 1, dtype=np.int64)
            passes = [
                numba_cpu._steps(schedule.forward_ops(depth, plan, record), 1, 2, True),
                numba_cpu._steps(schedule.backward_ops(depth, plan, record), 0, 0, True),
            ]
            slots = plan.every if plan.keep_weights else 1
            holds, draws_seen = {}, 0
            for runs, steps in numba_cpu._shared_passes(passes, slots, ring):
                for draws, first, last in runs:
                    assert len(draws) <= ring
                    for row in draws:
                        assert (
                            row["op"] == numba_types.OP_PREFETCH
                            and row["nxt_xi"] == row["nxt_slot"]
                        )
                        assert 0 <= row["nxt_slot"] < slots + ring
                        holds[row["nxt_slot"]] = row["nxt"]
                    draws_seen += len(draws)
                    for s in steps[first:last]:
                        if s["op"] != numba_types.OP_RESTART:
                            assert s["draw"] == 0 and holds[s["slot"]] == s["layer"], (plan, s)
            # one draw per layer forward, one per layer recomputed or redrawn backward
            assert draws_seen == sum(int(s["draw"]) for steps in passes for s in steps)


def test_the_fused_path_keeps_one_copy_of_each_z_whatever_the_lanes(monkeypatch):
    """The lanes share the fused path's Z^l (numba_cpu._shared_draws): on 16 lanes a
    VJP keeps every Z^l within the same budget as on one (it used to need a copy per
    lane, 16x the memory) and the unit holds one weight buffer."""
    width, depth = 64, 100
    cfg = make_config(width=width, depth=depth, mode="vjp")
    points, item = base.grid(cfg).points, cfg.dtype.itemsize
    monkeypatch.setattr(numba_cpu, "STORE_BYTES", depth * (points + width) * width * item)
    for lanes in (1, 16):
        monkeypatch.setattr(numba_cpu, "_lanes", lambda n=lanes: n)
        assert numba_cpu.vjp_plan(cfg, width, points, "fused") == schedule.Plan(
            depth, True, True, False
        )
        unit = numba_cpu._Unit(cfg, width, 0, path="fused")
        assert unit.lanes == lanes and unit.zstore
        assert unit.Zs.shape == (1, depth + numba_cpu.ring_slots(width, cfg.dtype), width, width)


def test_vjp_plan_within_budget_and_checkpointed_at_depth_10000():
    """What a unit keeps never exceeds the budget; at depth 10,000, width 1024
    and the benchmark's 342 grid points (14 GiB of phi'), VJP checkpoints even
    with the largest default budget, so its memory stays O(sqrt(L) N P)."""
    for depth, width, points in ((10, 64, 40), (500, 256, 342), (2000, 1024, 100)):
        cfg = make_config(width=width, depth=depth, mode="vjp")
        item = cfg.dtype.itemsize
        every, full, zstore, keep_steps = numba_cpu.vjp_plan(cfg, width, points, "gemm")
        assert not keep_steps  # the MLP has no per-step values
        kept = 0
        if full:
            assert every == depth
            kept = depth * points * width * item + zstore * depth * width * width * item
        else:
            assert every == cfg.checkpoint_every
        assert kept <= numba_cpu.store_budget()
    assert numba_cpu.store_budget() <= numba_cpu.STORE_BYTES_MAX
    cfg = make_config(width=1024, depth=10_000, mode="vjp")
    assert numba_cpu.vjp_plan(cfg, 1024, 342, "gemm") == schedule.Plan(100, False, False, False)
    # engine.checkpoint set: always checkpoints, at that spacing
    cfg = make_config("engine.checkpoint=7", width=16, depth=50, mode="vjp")
    assert numba_cpu.vjp_plan(cfg, 16, 40, "gemm") == schedule.Plan(7, False, True, False)


def test_gemm_rows_split_over_threads_change_nothing(monkeypatch):
    """The GEMM path splits each GEMM's rows over the lanes (BLAS on one thread)
    at verified cuts: the same bits as one single-threaded GEMM."""
    cfg = make_config(
        "grid.sigma_w2=[0.5, 0.8, 1.0, 1.2, 1.5, 2.0, 2.5, 3.0]",
        'engine.path="gemm"',
        width=256,  # 240 x 256 x 256: over gemm.MIN_FLOPS
        depth=12,
        mode="both",
    )
    unit = numba_cpu._Unit(cfg, 256, 0)
    if unit.lanes < 2:
        pytest.skip("Numba runs one thread here: the GEMMs are never split")
    assert unit.P == 80
    with numba_cpu.gemm.one_blas_thread():
        assert len(numba_cpu.gemm.cuts(unit.A, unit.Zs[0, 0].T, unit.lanes)) > 2
    split = numba_cpu.run_unit(cfg, 256, 0)
    monkeypatch.setattr(numba_cpu.gemm, "MIN_ROWS", 10**9)
    with numba_cpu.gemm.one_blas_thread():
        assert numba_cpu.gemm.cuts(unit.A, unit.Zs[0, 0].T, unit.lanes) == (0, 240)
    whole = numba_cpu.run_unit(cfg, 256, 0)
    for key, value in whole.items():
        np.testing.assert_array_equal(split[key], value, err_msg=key)
    assert_same(split, numpy_ref.run_unit(cfg, 256, 0), TOL["float32"])


@pytest.mark.parametrize("path", ["gemm", "fused"])
def test_vjp_regenerating_weights_matches_oracle(path, monkeypatch):
    """Over its memory budget, VJP regenerates each Z^l for the backward step
    instead of keeping the recomputation's: the same numbers either way."""
    cfg = make_config("engine.checkpoint=6", width=24, depth=40, precision="float64", mode="vjp")
    assert not numba_cpu._Unit(cfg, 24, 1, path=path).full  # checkpointed: spacing given
    kept = numba_cpu.run_unit(cfg, 24, 1, path=path)
    monkeypatch.setattr(schedule, "ZSTORE_BYTES", 0)
    assert not numba_cpu._Unit(cfg, 24, 1, path=path).zstore
    regenerated = numba_cpu.run_unit(cfg, 24, 1, path=path)
    for key, value in kept.items():
        np.testing.assert_array_equal(regenerated[key], value, err_msg=key)
    assert_same(regenerated, numpy_ref.run_unit(cfg, 24, 1), TOL["float64"])


@pytest.mark.parametrize("path", ["gemm", "fused"])
def test_divergence_flags_match_oracle(path):
    """ELU and GELU at sigma_w2 = 50 overflow float32 after ~20 layers: the
    same (point, layer) flags as the oracle, NaN only in those points from
    that layer on, every other point untouched."""
    cfg = make_config(width=16, depth=60, sw2="[1.0, 50.0]", precision="float32")
    got = numba_cpu.run_unit(cfg, 16, 0, path=path)
    want = numpy_ref.run_unit(cfg, 16, 0)
    div = got["diverged"]
    np.testing.assert_array_equal(div, want["diverged"])
    assert np.all(div[act_index(cfg, "elu"), 1] > 0)  # it does diverge
    assert np.all(div[act_index(cfg, "gelu"), 1] > 0)
    assert not np.any(div[:, 0])  # sigma_w2 = 1: nothing does
    for key in ("log_q", "corr", "log_tangent_norm", "log_grad_norm"):
        np.testing.assert_array_equal(np.isnan(got[key]), np.isnan(want[key]), err_msg=key)
        alive = got[key][div == 0]
        assert np.all(np.isfinite(alive)), key
    layers = cfg.layers
    for idx in zip(*np.nonzero(div), strict=True):
        d = div[idx]
        assert np.all(np.isfinite(got["log_q"][idx][layers < d]))
        assert np.all(np.isnan(got["log_q"][idx][layers >= d]))
    # Where the dynamics are not chaotic, the values agree as in test_matches_oracle.
    tol = TOL["float32"]
    for key in ("log_q", "corr", "log_tangent_norm", "log_grad_norm"):
        np.testing.assert_allclose(got[key][:, 0], want[key][:, 0], rtol=0, atol=tol[key])


@pytest.mark.parametrize("path", ["gemm", "fused"])
def test_depth_2000_finite_in_both_phases(path):
    # sigma_b2 > 0 keeps tanh's q away from 0 (with sigma_b2 = 0 and sigma_w2 < 1
    # its pre-activations underflow after ~300 layers: the oracle flags that too).
    cfg = make_config(
        "measure.record={log = 30}",
        "grid.sigma_b2=[0.05, 0.2]",
        width=16,
        depth=2000,
        sw2="[0.5, 1.0, 4.0]",
        precision="float32",
    )
    out = numba_cpu.run_unit(cfg, 16, 0, path=path)
    div = out["diverged"]
    # Bounded (tanh) and renormalised (relu, leaky) activations never diverge;
    # ELU and GELU at sigma_w2 = 4 grow like 2^(l/2) and are flagged, cleanly.
    for name in ("tanh", "relu", "leaky_relu"):
        assert not np.any(div[act_index(cfg, name)]), name
    assert not np.any(div[:, :2])
    for key in ("log_q", "corr", "log_tangent_norm", "log_grad_norm"):
        assert np.all(np.isfinite(out[key][div == 0])), key
        assert np.all(np.isnan(out[key][div > 0][:, -1])), key
    tanh = act_index(cfg, "tanh")
    tangent = out["log_tangent_norm"][tanh, :, 0, -1]  # sigma_b2 = 0.05, at the last layer
    grad = out["log_grad_norm"][tanh, :, 0, 0]  # at the first layer
    assert tangent[0] < -100 and grad[0] < -100  # sigma_w2 = 0.5: vanishing
    assert tangent[2] > 100 and grad[2] > 100  # sigma_w2 = 4: exploding, far past float range


# ---------------------------------------------------------------- structure


def test_registry_and_path_choice():
    assert engines.get("numba") is numba_cpu
    assert engines.available()["numba"]
    w = numba_cpu.FUSED_MAX_WIDTH
    cfg = make_config()
    assert numba_cpu.choose_path(cfg, w) == "fused"
    assert numba_cpu.choose_path(cfg, w + 1) == "gemm"
    assert numba_cpu.choose_path(make_config('engine.path="gemm"'), 8) == "gemm"
    assert numba_cpu.choose_path(make_config('engine.path="fused"'), 4096) == "fused"


def test_memory_is_sqrt_depth_in_vjp_and_flat_in_jvp(monkeypatch):
    """The buffers of a 10,000-layer unit (nothing is run): VJP beyond its
    budget keeps (L-1)//k checkpoints and k layers of phi', k = ceil(sqrt(L));
    JVP nothing that grows with depth."""
    monkeypatch.setattr(numba_cpu, "STORE_BYTES", 2**20)
    depth, width = 10_000, 32
    for mode in ("vjp", "jvp"):
        cfg = make_config("measure.record={log = 16}", width=width, depth=depth, mode=mode)
        unit = numba_cpu._Unit(cfg, width, 0, path="gemm")
        P, k = unit.P, cfg.checkpoint_every
        state = [unit.A, unit.H, unit.Zs, unit.G, unit.U, unit.D, unit.cp]
        total = sum(a.size for a in state)
        if mode == "vjp":
            assert k == 100 and unit.cp.shape == ((depth - 1) // k, P, width)
            assert unit.D.shape == (k, P, width)
            assert total < 3 * 2 * k * P * width
            # At width 1024 the segment's 100 weight matrices (400 MiB) would
            # exceed the budget: they are regenerated instead of kept.
            big = make_config("measure.record={log = 16}", width=1024, depth=depth, mode=mode)
            assert not numba_cpu._Unit(big, 1024, 0, path="gemm").zstore
        else:
            assert total < 10 * P * width + 2 * width * width


def test_generated_module_is_cached_between_processes():
    """The kernels compile once: a second process loads them from the cache dir."""
    cfg_args = [
        "network.width=[8]",
        "network.depth=5",
        f"network.activation={ACTS}",
        'measure.mode="both"',
    ]
    cfg = config.load(overrides=cfg_args)
    numba_cpu.run_unit(cfg, 8, 0, path="gemm")  # compiled and saved (if not already)
    numba_cpu.run_unit(cfg, 8, 0, path="fused")
    module = numba_cpu.kernels(numba_cpu._activation_codes(base.grid(cfg))[0])
    code = (
        "import json, sys; from vxsim import config; from vxsim.engines import numba_cpu, base;"
        "cfg = config.load(overrides=json.loads(sys.argv[1]));"
        "numba_cpu.run_unit(cfg, 8, 0, path='gemm'); numba_cpu.run_unit(cfg, 8, 0, path='fused');"
        "k = numba_cpu.kernels(numba_cpu._activation_codes(base.grid(cfg))[0]);"
        "print(json.dumps([sum(k.run.stats.cache_hits.values()),"
        " sum(k.run.stats.cache_misses.values()), k.__file__]))"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    out = subprocess.run(
        [sys.executable, "-c", code, json.dumps(cfg_args)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    hits, misses, path = json.loads(out.stdout.strip().splitlines()[-1])
    assert hits > 0 and misses == 0
    assert path == module.__file__
    src = numba_cpu.generate_source(("tanh", "relu"))
    assert "_REGISTRY['tanh']" in src and "_REGISTRY['relu']" in src
    assert "def _act_rows_ACT1(" in src and "elif code == 1:" in src


@pytest.mark.parametrize("path", ["fused", "gemm"])
def test_underflow_to_the_fixed_point_is_not_divergence(path):
    """tanh, sigma_b2 = 0, ordered: float32 h underflows to 0 near layer 160.

    That is the fixed point q* = 0, not a divergence (the oracle's rule): nothing is
    flagged, log q reads -inf, and the gradients go on, as in the NumPy engine.
    """
    config = small_config(
        network__width=[8],
        network__depth=300,
        network__activation="tanh",
        grid__sigma_w2=[0.3],
        grid__sigma_b2=[0.0],
        measure__precision="float32",
        measure__mode="both",
    )
    a, b = numba_cpu.run_unit(config, 8, 0, path=path), numpy_ref.run_unit(config, 8, 0)
    assert a["diverged"].max() == 0 and b["diverged"].max() == 0
    assert np.isneginf(a["log_q"][..., -1]).all()
    for key in ("log_tangent_norm", "log_grad_norm"):
        np.testing.assert_allclose(a[key], b[key], rtol=1e-4, atol=2e-4, err_msg=key)
