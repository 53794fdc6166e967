"""A new architecture added by this file alone, through the registry (issue 13).

The toy network, with its own grid axis ``a`` (default [0.5]):

    h^0 = x,   h^l = a h^{l-1} + sqrt(sw2/N) Z^l phi(h^{l-1}) + sqrt(sb2) xi^l

(Z^l, xi^l fresh for every layer, from the MLP's streams), and its exact derivatives

    t^l = a t^{l-1} + sqrt(sw2/N) Z^l (phi'(h^{l-1}) * t^{l-1}),          t^0 = v0,
    g^{l-1} = a g^l + phi'(h^{l-1}) * sqrt(sw2/N) (Z^l)^T g^l,             g^L = gamma.

Its step functions are written below in NumPy; registered, it sweeps on the numpy
and numba engines and on the cuda engine's host build (the kernels compiled with
g++, strict stand-in arrays), and its files store, show, analyse, plot and merge,
with no file of vxsim changed. One point is checked against a brute-force loop.
"""

import importlib.util
import sys

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

import vxsim
from vxsim import models, rng
from vxsim.cli import main
from vxsim.engines import cuda_gpu, cuda_host, numba_cpu, numpy_ref
from vxsim.models import inputs
from vxsim.models.mlp import (  # noqa: F401  (the MLP's: t^0 = v0, g^L = gamma, fresh Z^l)
    cotangent_start,
    tangent_start,
    weights,
)

HAVE_MPL = importlib.util.find_spec("matplotlib") is not None
NAME = "toy"
DEPTH = 12
WIDTH = 16
SAMPLES = 4
MEASURED = ("log_q", "corr", "log_tangent_norm", "log_grad_norm")

# ---------------------------------------------------------------- the step functions

LOG_SCALE = False  # h is the true pre-activation: nothing is renormalised
TIED_WEIGHTS = False  # a fresh Z^l for every layer
STEP_VALUES = 0  # nothing beside the state is kept per layer by a VJP


def _per_point(unit, key, values, copies=1):
    """A (P * copies,) per-column constant in the run's precision, made once per unit."""
    return unit.tied((key, copies), lambda: unit.per_point(values, copies).astype(unit.dtype))


def _scale(unit, copies=1):
    """sqrt(sigma_w2 / N) per column."""
    return _per_point(unit, "toy_scale", np.sqrt(unit.grid.sigma_w2 / unit.width), copies)


def _a(unit, copies=1):
    return _per_point(unit, "toy_a", unit.grid.extra["a"], copies)


def arrays(state):
    return (state["h"],)


def observe(state):
    """(h, zeros): log q^l and c^l come from h^l itself (no log-scale)."""
    return state["h"], np.zeros_like(state["h"][0], dtype=np.float64)


def start(unit):
    """h^0: the two inputs x1 | x2, each repeated for the P grid points."""
    P = unit.P
    h = np.concatenate([np.repeat(unit.x1[:, None], P, 1), np.repeat(unit.x2[:, None], P, 1)], 1)
    return {"h": h.astype(unit.dtype)}


def step(unit, layer, state, Z):
    """h^l = a h + s Z phi(h) + sqrt(sb2) xi^l, both trajectories (or trajectory 1 alone)."""
    h = state["h"]
    copies = h.shape[1] // unit.P
    xi = unit.asarray(inputs.bias(unit.config, unit.width, unit.sample, layer))
    sb = unit.tied("toy_sqrt_sigma_b2", lambda: unit.per_point(np.sqrt(unit.grid.sigma_b2)))
    bias = (xi[:, None] * sb[None, :])[:, : h.shape[1]]
    branch = _scale(unit, copies) * (Z @ unit.activate("phi", h))
    return {"h": _a(unit, copies) * h + branch + bias.astype(h.dtype)}


def tangent(unit, layer, prev, Z, t):
    d = unit.activate("dphi", prev["h"][:, : unit.P])
    return _a(unit) * t + _scale(unit) * (Z @ (d * t))


def cotangent(unit, layer, prev, Z, g):
    d = unit.activate("dphi", prev["h"][:, : unit.P])
    return _a(unit) * g + d * (_scale(unit) * (Z.T @ g))


TOY = models.Architecture(
    name=NAME,
    steps=sys.modules[__name__],
    axes={"a": [0.5]},
    streams=(rng.STREAM_INPUT, rng.STREAM_OUTPUT_GRAD, rng.STREAM_WEIGHT, rng.STREAM_BIAS),
    growth_law="exponential",
    mean_field=None,
)


@pytest.fixture(scope="module")
def toy():
    """The toy registered for this module's tests, and gone afterwards."""
    models.register(TOY)
    yield TOY
    models.unregister(NAME)


def toy_config(**keys):
    items = [
        f'network.architecture="{NAME}"',
        f"network.width=[{WIDTH}]",
        f"network.depth={DEPTH}",
        'network.activation=["tanh"]',
        "grid.sigma_w2=[0.5, 1.5, 2.5]",
        "grid.sigma_b2=[0.0, 0.05]",
        "grid.a=[0.5, 0.9]",
        f"monte_carlo.samples={SAMPLES}",
        'measure.mode="both"',
        'measure.precision="float64"',
        "measure.transient=2",
        "engine.checkpoint=4",
    ]
    items += [f"{k.replace('__', '.')}={v}" for k, v in keys.items()]
    return vxsim.load_config(overrides=items)


# ---------------------------------------------------------------- brute force


def brute_force(config, width, sample, sigma_w2, sigma_b2, a):
    """One network, materialised W^l and b^l, float64, one vector at a time."""
    act, param = config.activation_specs[0]
    L = config.depth
    Ws = [
        np.sqrt(sigma_w2 / width) * inputs.weights(config, width, sample, l, np.float64)
        for l in range(1, L + 1)
    ]
    bs = [np.sqrt(sigma_b2) * inputs.bias(config, width, sample, l) for l in range(1, L + 1)]
    x1, x2, v0 = inputs.inputs(config, width, sample)
    h1s, h2s, log_t = [x1], [x2], []
    t = v0
    for l in range(L):
        h1, h2 = h1s[-1], h2s[-1]
        t = a * t + Ws[l] @ (act.dphi(h1, param) * t)
        h1s.append(a * h1 + Ws[l] @ act.phi(h1, param) + bs[l])
        h2s.append(a * h2 + Ws[l] @ act.phi(h2, param) + bs[l])
        log_t.append(np.log(t @ t) - np.log(v0 @ v0))
    g = inputs.output_direction(config, width, sample)
    g0 = np.log(g @ g)
    log_g = np.zeros(L)
    for l in range(L, 1, -1):  # g^{l-1} from g^l
        g = a * g + act.dphi(h1s[l - 1], param) * (Ws[l - 1].T @ g)
        log_g[l - 2] = np.log(g @ g) - g0
    return {
        "log_q": np.array([np.log(np.mean(h * h)) for h in h1s[1:]]),
        "corr": np.array(
            [(p @ q) / np.sqrt((p @ p) * (q @ q)) for p, q in zip(h1s, h2s, strict=True)][1:]
        ),
        "log_tangent_norm": np.array(log_t),
        "log_grad_norm": log_g,
    }


# Float64 throughout: the engines and the loop differ only in the order of the sums
# (GEMM over all columns vs one matrix-vector product, segments recomputed from
# checkpoints): relative differences of a few ulp per layer, ~1e-14 after 12 layers
# of width 16; 1e-9 is the oracle's own float64 tolerance in this suite, and a wrong
# sign, factor a or transposition changes the numbers by O(1).
RTOL = ATOL = 1e-9


def _point(config, results, i_sw, i_sb, i_a):
    """The (layer,) series of one grid point of a unit's results (activation 0)."""
    return {k: results[k][0, i_sw, i_sb, i_a] for k in MEASURED}


def test_the_registry_and_config_accept_the_toy(toy):
    assert NAME in models.names() and models.get(NAME) is toy
    config = toy_config()
    assert config.arch is toy and config.grid_dims[-1] == "a"
    np.testing.assert_array_equal(config.extra_axes["a"], [0.5, 0.9])
    assert list(
        vxsim.load_config(overrides=[f'network.architecture="{NAME}"']).extra_axes["a"]
    ) == [0.5]
    with pytest.raises(vxsim.ConfigError, match="it is an axis of toy"):
        vxsim.load_config(overrides=["grid.a=[0.5]"])  # the default architecture has no a


@pytest.mark.parametrize("i_sw,i_sb,i_a", [(1, 1, 0), (2, 0, 1)])
def test_numpy_engine_matches_brute_force(toy, i_sw, i_sb, i_a):
    config = toy_config()
    got = _point(config, numpy_ref.run_unit(config, WIDTH, 1), i_sw, i_sb, i_a)
    want = brute_force(
        config,
        WIDTH,
        1,
        config.sigma_w2[i_sw],
        config.sigma_b2[i_sb],
        config.extra_axes["a"][i_a],
    )
    for key in MEASURED:
        np.testing.assert_allclose(got[key], want[key], rtol=RTOL, atol=ATOL, err_msg=key)


def test_numba_and_cuda_host_engines_match_numpy(toy):
    config = toy_config()
    want = numpy_ref.run_unit(config, WIDTH, 2)
    runs = {"numba": numba_cpu.run_unit(config, WIDTH, 2)}
    if cuda_host.compiler() is not None:
        backend = cuda_host.HostBackend("float64", strict=True)
        runs["cuda"] = cuda_gpu.run_unit(config, WIDTH, 2, backend=backend)
    for engine, got in runs.items():
        assert set(got) == set(want)
        for key in MEASURED:
            np.testing.assert_allclose(
                got[key], want[key], rtol=RTOL, atol=ATOL, err_msg=f"{engine} {key}"
            )
        np.testing.assert_array_equal(got["diverged"], want["diverged"])


@pytest.fixture(scope="module")
def swept(toy, tmp_path_factory):
    """{engine: path} of one sweep per engine (cuda: the host build as the GPU)."""
    folder = tmp_path_factory.mktemp("toy")
    config = toy_config()
    out = {}
    for engine in ("numpy", "numba"):
        out[engine] = vxsim.run_sweep(config, str(folder / f"{engine}.h5"), backend=engine)
    if cuda_host.compiler() is not None:
        with pytest.MonkeyPatch.context() as mp:
            backend = cuda_host.HostBackend("float64", strict=True)
            mp.setattr(cuda_gpu, "available", lambda: True)
            mp.setattr(cuda_gpu, "gpu_backend", lambda precision: backend)
            out["cuda"] = vxsim.run_sweep(config, str(folder / "cuda.h5"), backend="cuda")
    return out


def test_sweeps_store_the_brute_force_numbers(swept):
    config = toy_config()
    want = brute_force(config, WIDTH, 3, config.sigma_w2[2], config.sigma_b2[1], 0.9)
    for engine, path in swept.items():
        with h5py.File(path, "r") as f:
            assert f.attrs["backend"] == engine
            assert "analysis" in f and "a" in f
            np.testing.assert_array_equal(f["a"][...], [0.5, 0.9])
            for key in MEASURED:
                # (width, activation, sigma_w2, sigma_b2, a, sample, layer)
                got = f[key][0, 0, 2, 1, 1, 3]
                np.testing.assert_allclose(
                    got, want[key], rtol=RTOL, atol=ATOL, err_msg=f"{engine} {key}"
                )


def test_show_and_analysis(swept):
    result = CliRunner().invoke(main, ["show", swept["numpy"]])
    assert result.exit_code == 0, result.output
    assert f"network     {NAME}" in result.output and "  a [0.5, 0.9]" in result.output
    ds = vxsim.open_results(swept["numpy"])
    an = vxsim.open_results(swept["numpy"], group="analysis")
    assert ds.growth_rate_annealed.dims[-1] == "a"
    assert np.isfinite(ds.growth_rate_annealed.values).all()
    assert an.attrs["architecture"] == NAME and an.attrs["growth_law"] == "exponential"
    assert np.isnan(an.theory_log_chi1.values).all()  # no mean-field hook: measured only
    assert "critical_sigma_w2_annealed" in an


@pytest.mark.skipif(not HAVE_MPL, reason="matplotlib is not installed (the test extra has it)")
def test_plots(swept, tmp_path):
    import vxsim.plot as vp

    path = swept["numpy"]
    figures = {
        "phase": vp.phase(path, sel={"a": 0.9}),
        "depth": vp.depth(path, sel={"mode": "vjp"}),
        "boundary": vp.boundary([path], sel={"a": 0.5}),
    }
    for name, fig in figures.items():
        assert fig.axes, name
        vp.save(fig, str(tmp_path / f"{name}.png"))
        assert (tmp_path / f"{name}.png").stat().st_size > 0


def test_two_shards_merge_to_the_single_run(toy, swept, tmp_path):
    config = toy_config()
    parts = [str(tmp_path / f"part-{i}.h5") for i in (1, 2)]
    for i, part in enumerate(parts, 1):
        vxsim.run_sweep(config, part, backend="numpy", shard=(i, 2))
    merged = vxsim.merge(parts, str(tmp_path / "merged.h5"))
    with h5py.File(merged, "r") as a, h5py.File(swept["numpy"], "r") as b:
        for key in (*MEASURED, "diverged"):
            np.testing.assert_array_equal(a[key][...], b[key][...], err_msg=key)
        for key in b["analysis"]:
            np.testing.assert_array_equal(
                a["analysis"][key][...], b["analysis"][key][...], err_msg=key
            )
