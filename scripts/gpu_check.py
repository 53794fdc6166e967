"""The CUDA engine's device check: correctness and speed on one GPU, in a few minutes.

Run through scripts/gpu_check.sh (from the source tree, nothing installed).
Prints, each section on its own, timed, and a FAIL with its reason if it breaks
(a section that did not run says SKIPPED, and why), then a summary:

0. the versions of Python, NumPy, Numba, SciPy, h5py and CuPy, each imported
   on its own (a Numba that refuses the NumPy is reported: the cuda engine
   does not need it), and the cache folders;
1. the device, CuPy, CUDA and the NVRTC compile time of the kernels;
2. PASS/FAIL of every test in tests/test_cuda_gpu.py (bit-identical weights,
   agreement with the NumPy oracle, TF32 against float32), run without pytest;
3. the GEMM path at width 4096 with 4,096 columns (2,048 grid points x 2
   inputs, the forward pass of a VJP run): effective TFLOP/s (2 N^2 C per
   layer over the wall time of the whole layer loop: Philox fill, cuBLAS
   GEMM, fused epilogue) and its ratio to a plain cupy.matmul of the same
   shapes timed in the same run; float32 and TF32; per-layer time of each part;
4. the fused path at width 128 and depth 10,000: network-layers per second,
   GFLOP/s, and the GEMM path on the same work for comparison; then both paths'
   per-layer time at steady state by activation and phase;
4b. the path crossover: per-layer time of both paths at steady state (two
   depths' difference) on a grid of widths, grid sizes P and precisions, beside
   the cost model's estimates (cuda_paths.layer_seconds), and which path
   engine.path = "auto" picks against which was faster; the rows also go to
   $VXSIM_GPU_CHECK_OUT/crossover.csv when that folder is set (the model's fit:
   tests/measured/);
5. the residual (its fused epilogue, engines.cuda_residual), Elman, GRU and LSTM
   networks (their fused step kernels, engines.cuda_rnn): seconds per work unit and
   network-steps per second;
5b. the RNNs' fused steps (issue 14): agreement with the NumPy oracle for each
   of Elman, GRU, LSTM and the residual net's epilogue on the device (both
   precisions, jvp+vjp), the graph path against the uncaptured steps, the
   persistent kernels against the step kernels per step at steady state over
   widths and grid sizes (rows to $VXSIM_GPU_CHECK_OUT/persist_*.csv), with
   what "auto" picks (cuda_paths.step_seconds), then the wall time of Elman
   tanh, width 256, 1,000 grid points, 10,000 steps, JVP+VJP (target on an
   H200: under 10 s) and of
   LSTM, width 1024, 1,000 points, 1,000 steps (target under 10 s);
6. the wall time of the Schoenholz et al. (2017) tanh phase diagram
   (data/schoenholz2017_tanh.toml as written: width 1000, depth 1000, 40 x 40
   grid, 8 samples, JVP and VJP) and its boundary beside the theory's;
7. the machine's CPU cores (no device needed): the numba engine's row-split GEMM
   on Numba's threads against Python's (scripts/bench_gemm_split.py), since this
   machine's many cores are the only many-core CPU sessions get.

``--host`` runs the same script on the CPU (the kernels built with g++, tiny
sizes, no CuPy): a check of this script itself, not of a GPU. ``--only
tests,gemm`` runs some sections (the versions and the device always run).

A kernel fault leaves CUDA's context unusable, so every later section fails
too: the summary names the first failure, and offers the rerun of that section
alone with CUDA_LAUNCH_BLOCKING=1 (each launch waits, so the error is raised
at the launch that faulted).
"""

import argparse
import contextlib
import importlib.metadata
import importlib.util
import math
import os
import subprocess
import sys
import tempfile
import time
import traceback
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FULL = dict(
    gemm_width=4096, gemm_w2=32, gemm_b2=32, gemm_depth=30,
    fused_width=128, fused_depth=10_000, fused_w2=32, fused_b2=4,
    arch_width=1024, arch_depth=200,
    rnn_oracle=(32, 30), rnn_elman=(256, 10_000), rnn_lstm=(1024, 1_000), rnn_points=(40, 5, 5),
    schoenholz=[],
)  # fmt: skip
HOST = dict(
    gemm_width=64, gemm_w2=4, gemm_b2=4, gemm_depth=4,
    fused_width=16, fused_depth=300, fused_w2=4, fused_b2=2,
    arch_width=24, arch_depth=10,
    rnn_oracle=(8, 12), rnn_elman=(16, 70), rnn_lstm=(16, 20), rnn_points=(2, 2, 2),
    schoenholz=["network.width=[24]", "network.depth=20", "monte_carlo.samples=2",
                "grid.sigma_w2={start=1,stop=4,num=6}", "grid.sigma_b2={start=0,stop=0.3,num=3}"],
)  # fmt: skip
FULL["crossover"] = dict(
    widths=(32, 64, 128, 256, 512, 1024),
    grid=(4, 8, 16, 32, 64),
    widths64=(128, 512),
    grid64=(8, 32),
    depths=(128, 1152),
)
HOST["crossover"] = dict(widths=(16, 32), grid=(2, 4), widths64=(16,), grid64=(2,), depths=(3, 5))
FULL["spectrum"] = dict(oracle=(32, 24), widths=(128, 256, 512), points=4, depth=64)
HOST["spectrum"] = dict(oracle=(8, 6), widths=(8,), points=2, depth=4)
FULL["graph"] = dict(width=256, depth=1_000, points=(40, 5, 5))
HOST["graph"] = dict(width=16, depth=70, points=(2, 2, 2))
FULL["persist"] = dict(
    widths=(32, 64, 96, 112, 128, 160, 192, 224), grid=(40, 132, 500), depths=(200, 1224)
)
HOST["persist"] = dict(widths=(8, 16), grid=(2,), depths=(4, 6))
SKIP_ON_HOST = {"test_tf32_growth_rates_match_float32"}
_TITLES = {
    "tests": "GPU tests (tests/test_cuda_gpu.py)",
    "gemm": "GEMM path throughput",
    "fused": "fused path throughput",
    "crossover": "path crossover (cost model)",
    "architectures": "other architectures",
    "rnn": "RNNs (oracle, graph vs steps, persistent crossover, Elman and LSTM wall times)",
    "spectrum": "Jacobian spectrum and weight laws (oracle, orthogonality, cost)",
    "schoenholz": "Schoenholz et al. 2017 tanh phase diagram",
    "cpu": "the CPU cores: the numba engine's GEMM split (bench_gemm_split.py)",
}
SECTIONS = tuple(_TITLES)

START = time.perf_counter()
RESULTS = []  # (section, status PASS/FAIL/SKIPPED, seconds, note)
STATE = {"first_failure": None, "cuda_error": None, "interrupted": False}
# What a sticky CUDA error (a kernel fault) looks like in CuPy's and cuBLAS's exceptions.
CUDA_FAULTS = ("cudaError", "CUDA_ERROR", "illegal memory access", "illegal address",
               "unspecified launch failure", "misaligned address", "illegal instruction",
               "CUBLAS_STATUS", "launch timed out")  # fmt: skip


def say(text=""):
    print(text, flush=True)


@contextlib.contextmanager
def section(title, budget, need, requires=None):
    """A section: SKIPPED (with the reason) when it cannot run, FAIL (with the reason)
    instead of stopping the script when it breaks, its time in every case."""
    say(f"\n== {title}")
    t0 = time.perf_counter()
    left = budget - (t0 - START)
    why = None
    if STATE["interrupted"]:
        why = "the time limit was reached"
    elif requires is not None and not requires():
        why = "needs the device section, which did not pass"
    elif left < need:
        why = f"{left:.0f} s left of the {budget:.0f} s budget, this needs ~{need:.0f} s"
    if why:
        say(f"SKIPPED: {why}")
        RESULTS.append((title, "SKIPPED", 0.0, why))
        yield False
        return
    status, note = "PASS", ""
    try:
        yield True
    except KeyboardInterrupt:  # gpu_check.sh's timeout sends SIGINT
        STATE["interrupted"] = True
        status, note = "FAIL", "interrupted by the time limit"
        say(f"FAIL: {note}")
    except Exception as err:
        status, note = "FAIL", f"{type(err).__name__}: {str(err).strip().splitlines()[0][:200]}"
        if STATE["cuda_error"]:
            say(f"(after the CUDA error in '{STATE['cuda_error']}': this may only echo it)")
        elif any(mark in f"{type(err).__name__}: {err}" for mark in CUDA_FAULTS):
            STATE["cuda_error"] = title
        say(f"FAIL: {type(err).__name__}: {err}")
        say("".join(traceback.format_exc().splitlines(keepends=True)[-8:]).rstrip())
    seconds = time.perf_counter() - t0
    if status == "FAIL" and STATE["first_failure"] is None:
        STATE["first_failure"] = title
    RESULTS.append((title, status, seconds, note))
    say(f"({seconds:.1f} s)")


def versions_section():
    """Every version, each package imported on its own (so one broken import is one line)."""
    found = {}
    for name in ("numpy", "numba", "scipy", "h5py", "click", "threadpoolctl", "cupy"):
        try:
            module = importlib.import_module(name)
        except Exception as err:  # missing, or refusing this NumPy: say so, go on
            found[name] = "MISSING" if isinstance(err, ModuleNotFoundError) else "BROKEN"
            if found[name] == "BROKEN" or name == "numpy":
                say(f"{name}: {type(err).__name__}: {err}")
            continue
        found[name] = _dist_version(name) or getattr(module, "__version__", "present")
    say(
        "python  " + sys.version.split()[0] + "  " + "  ".join(f"{k} {v}" for k, v in found.items())
    )
    if found["numba"] in ("MISSING", "BROKEN"):
        say("NOTE: numba unusable here: the cuda engine does not need it (--backend numba does)")
    if found["scipy"] == "MISSING":
        install_scipy_stand_in()
        say("NOTE: scipy missing: vxsim's three scipy calls (special.erf, optimize.brentq,")
        say("      optimize.minimize_scalar) run on a minimal stand-in from this script")
    for var in ("CUPY_CACHE_DIR", "VXSIM_CACHE_DIR"):
        say(f"{var}={os.environ.get(var, '(not set)')}")
    if found["numpy"] in ("MISSING", "BROKEN"):
        raise RuntimeError("numpy cannot be imported: nothing else can run")


def _dist_version(name):
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:  # cupy-cuda13x and the like
        return None


def install_scipy_stand_in():
    """math.erf, bisection and golden-section search in place of the SciPy calls vxsim makes."""
    import numpy as np

    special = types.ModuleType("scipy.special")
    _erf = np.vectorize(math.erf, otypes=[float])
    special.erf = lambda x: _erf(x) if np.ndim(x) else math.erf(float(x))
    optimize = types.ModuleType("scipy.optimize")

    def brentq(f, a, b, xtol=1e-12, rtol=1e-15, maxiter=500):
        fa = f(a)
        for _ in range(2000):
            m = 0.5 * (a + b)
            fm = f(m)
            if fm == 0 or abs(b - a) <= xtol + rtol * abs(m):
                return m
            if (fm < 0) == (fa < 0):
                a, fa = m, fm
            else:
                b = m
        return 0.5 * (a + b)

    def minimize_scalar(f, bounds, method="bounded", options=None):
        a, b = bounds
        g = (math.sqrt(5) - 1) / 2
        c, d = b - g * (b - a), a + g * (b - a)
        for _ in range(300):
            if f(c) < f(d):
                b = d
            else:
                a = c
            c, d = b - g * (b - a), a + g * (b - a)
        return types.SimpleNamespace(x=0.5 * (a + b))

    optimize.brentq, optimize.minimize_scalar = brentq, minimize_scalar
    scipy = types.ModuleType("scipy")
    scipy.special, scipy.optimize = special, optimize
    sys.modules.update({"scipy": scipy, "scipy.special": special, "scipy.optimize": optimize})


def use_host_backend():
    """--host: the engine on cuda_host.HostBackend (g++ build), as if it were a GPU."""
    from vxsim.engines import cuda_gpu, cuda_host

    backends = {}

    def host_backend(precision):
        key = "float64" if precision == "float64" else "float32"
        if key not in backends:
            backends[key] = cuda_host.HostBackend(key, strict=True)
        return backends[key]

    cuda_gpu.gpu_backend = host_backend
    cuda_gpu.available = lambda: True


class Clock:
    """Wall time of device work: synchronise before reading the clock (CuPy), or not (host)."""

    def __init__(self, host):
        self.host = host
        if not host:
            import cupy

            self.cupy = cupy

    def sync(self):
        if not self.host:
            self.cupy.cuda.Device().synchronize()

    def time(self, fn, repeat=1):
        self.sync()
        t0 = time.perf_counter()
        for _ in range(repeat):
            fn()
        self.sync()
        return (time.perf_counter() - t0) / repeat


def device_section(host):
    if host:
        use_host_backend()
    from vxsim.engines import cuda_gpu

    if not cuda_gpu.available():
        raise RuntimeError(f"no usable GPU: {cuda_gpu.unavailable_reason()}")
    if host:
        say("device  CPU (--host: the kernels built with g++, one thread per block)")
    else:
        import cupy

        dev = cupy.cuda.Device()
        props = cupy.cuda.runtime.getDeviceProperties(dev.id)
        cc = f"{props['major']}.{props['minor']}"
        say(
            f"device  {props['name'].decode()}  compute capability {cc}"
            f"  {props['multiProcessorCount']} SMs  {props['totalGlobalMem'] / 2**30:.1f} GiB"
        )
        say(
            f"cupy {cupy.__version__}  CUDA runtime {cupy.cuda.runtime.runtimeGetVersion()}"
            f"  driver {cupy.cuda.runtime.driverGetVersion()}"
        )
    for precision in ("float32", "float64"):
        t0 = time.perf_counter()
        be = cuda_gpu.gpu_backend(precision)
        if not host:
            be.module.get_function("vx_forward")  # NVRTC compiles here (or loads CuPy's cache)
        say(f"kernels {precision}: compiled/loaded in {time.perf_counter() - t0:.1f} s")


def tests_section(host):
    sys.path.insert(0, str(ROOT / "tests"))
    import test_cuda_gpu as t

    passed = failed = 0
    for name in sorted(n for n in dir(t) if n.startswith("test_")):
        if host and name in SKIP_ON_HOST:
            say(f"SKIP  {name} (needs CuPy's TF32 switch)")
            continue
        t0 = time.perf_counter()
        try:
            getattr(t, name)()
        except Exception as err:
            failed += 1
            msg = str(err).strip().splitlines()
            say(f"FAIL  {name} ({time.perf_counter() - t0:.1f} s): {type(err).__name__}")
            for line in msg[:12]:
                say(f"      {line}")
        else:
            passed += 1
            say(f"PASS  {name} ({time.perf_counter() - t0:.1f} s)")
    say(f"gpu tests: {passed} passed, {failed} failed")
    if failed:
        raise AssertionError(f"{failed} GPU test(s) failed")


def _config(*overrides):
    from vxsim import config

    return config.load(overrides=list(overrides))


def gemm_section(sizes, clock, host):
    for precision in ("float32",) if host else ("float32", "tf32"):
        _gemm_one(sizes, clock, host, precision)


def _gemm_one(sizes, clock, host, precision):
    import numpy as np

    from vxsim.engines import cuda_gpu, cuda_mlp

    W, D = sizes["gemm_width"], sizes["gemm_depth"]
    xp = np if host else clock.cupy
    cfg = _config(
        f"network.width=[{W}]", f"network.depth={D}", 'network.activation=["tanh", "relu"]',
        f"grid.sigma_w2={{start=0.5, stop=4.0, num={sizes['gemm_w2']}}}",
        f"grid.sigma_b2={{start=0.0, stop=0.3, num={sizes['gemm_b2']}}}",
        'measure.mode="vjp"', "measure.record={log = 16}", 'engine.path="gemm"',
        f'measure.precision="{precision}"',
    )  # fmt: skip
    unit = cuda_mlp.Unit(cfg, W, 0, cuda_gpu.gpu_backend(precision))
    cols = 2 * unit.P
    rnd = np.random.default_rng(0)
    A = xp.asarray(rnd.standard_normal((cols, W), dtype=np.float32))
    Z = xp.asarray(rnd.standard_normal((W, W), dtype=np.float32))
    H = xp.empty((cols, W), dtype=np.float32)

    def matmul():
        xp.matmul(A, Z.T, out=H)

    def fill():
        unit._fill(2, 1, transpose=0, bias=True)

    with unit.be.gemm_precision(unit.tf32):
        clock.time(fill)  # warm-up
        matmul()
        t_loop = clock.time(unit.forward)
        t_mm = clock.time(matmul, repeat=D)
        t_fill = clock.time(fill, repeat=D)
    flops = 2.0 * W * W * cols
    eng = flops * D / t_loop / 1e12
    ref = flops / t_mm / 1e12
    say(
        f"gemm  width {W}, {cols} columns ({unit.P} points x 2 inputs), {D} layers, "
        f"{precision}: engine {eng:.2f} TFLOP/s effective, cupy.matmul {ref:.2f} TFLOP/s, "
        f"ratio {eng / ref:.3f}"
    )
    say(
        f"      per layer: whole {1e3 * t_loop / D:.3f} ms = matmul {1e3 * t_mm:.3f} ms"
        f" + Philox fill {1e3 * t_fill:.3f} ms + epilogue and the rest "
        f"{1e3 * (t_loop / D - t_mm - t_fill):.3f} ms"
    )


def fused_section(sizes, clock):
    from vxsim.engines import cuda_gpu

    W, L = sizes["fused_width"], sizes["fused_depth"]
    rows = []
    for mode, path in (("jvp", "fused"), ("vjp", "fused"), ("jvp", "gemm")):
        cfg = _config(
            f"network.width=[{W}]", f"network.depth={L}", 'network.activation=["tanh", "relu"]',
            f"grid.sigma_w2={{start=0.5, stop=4.0, num={sizes['fused_w2']}}}",
            f"grid.sigma_b2={{start=0.0, stop=0.3, num={sizes['fused_b2']}}}",
            f'measure.mode="{mode}"', "measure.record={log = 64}", f'engine.path="{path}"',
        )  # fmt: skip
        P = int(cfg.grid_shape[0] * cfg.grid_shape[1] * cfg.grid_shape[2])
        cuda_gpu.run_unit(cfg, W, 0)  # warm at this depth: the pool's buffers, CuPy's kernels
        t = min(clock.time(lambda c=cfg: cuda_gpu.run_unit(c, W, 0)) for _ in range(2))
        vectors = 3 if mode == "jvp" else 2  # forward-pass vectors per point
        flops = 2.0 * W * W * vectors * P * L
        rows.append((mode, path, t))
        note = "; VJP also recomputes and backprops" if mode == "vjp" else ""
        say(
            f"{path:5s} width {W}, depth {L}, {P} points, {mode}: {t:.3f} s per unit, "
            f"{P * L / t / 1e6:.2f} M network-layers/s, {flops / t / 1e9:.1f} GFLOP/s "
            f"(forward products only{note})"
        )
    t_fused = next(t for m, p, t in rows if (m, p) == ("jvp", "fused"))
    t_gemm = next(t for m, p, t in rows if (m, p) == ("jvp", "gemm"))
    say(f"fused/gemm speedup at width {W}, jvp: {t_gemm / t_fused:.2f}")
    n = sizes["fused_w2"] * sizes["fused_b2"]  # the same points, by activation and law
    for acts, w2 in (('["tanh"]', 4.0), ('["relu"]', 4.0), ('["relu"]', 1.9), ('["tanh"]', 1.0)):
        grid = (f"grid.sigma_w2={{start=0.5, stop={w2}, num={n // 4}}}",
                "grid.sigma_b2={start=0.0, stop=0.3, num=4}")  # fmt: skip
        for path in ("fused", "gemm"):
            run = lambda d, a=acts, g=grid, p=path: cuda_gpu.run_unit(  # noqa: E731
                _config(f"network.width=[{W}]", f"network.activation={a}", *g, f"network.depth={d}",
                        'measure.mode="jvp"', f'engine.path="{p}"'), W, 0)  # fmt: skip
            t = per_layer(clock, run, (128, 1152))
            say(f"{path:5s} width {W}, {n} points, {acts} sigma_w2 0.5-{w2}, jvp: "
                f"{1e3 * t:.4f} ms per layer at steady state")  # fmt: skip


def per_layer(clock, run, depths, repeat=3):
    """Seconds per layer at steady state: the difference of two depths' wall times (the
    best of ``repeat`` each) over the difference of the depths, so that a unit's fixed
    costs, the CUDA Graph capture among them, cancel. ``run(depth)`` runs one unit."""
    d1, d2 = depths
    run(d1)  # warm: CuPy's kernels for this shape, cuBLAS, the memory pool
    t1, t2 = (min(clock.time(lambda d=d: run(d)) for _ in range(repeat)) for d in depths)
    return (t2 - t1) / (d2 - d1)


def save_rows(name, header, rows):
    """Measured rows as CSV under $VXSIM_GPU_CHECK_OUT (when set), to fit the cost model."""
    folder = os.environ.get("VXSIM_GPU_CHECK_OUT")
    if folder:
        with open(os.path.join(folder, name), "w") as f:
            f.write(",".join(header) + "\n")
            f.writelines(",".join(str(x) for x in row) + "\n" for row in rows)


def crossover_section(sizes, clock):
    """Per-layer time of both MLP paths (steady state: two depths' difference) over
    widths, grid sizes and precisions, beside the cost model's estimates."""
    from vxsim.engines import cuda_gpu, cuda_paths

    spec = sizes["crossover"]
    agree = total = 0
    rows = []
    say(" width  points precision  fused ms/layer (model)   gemm ms/layer (model)   faster  auto")
    cases = [("float32", W, n) for W in spec["widths"] for n in spec["grid"]]
    cases += [("float64", W, n) for W in spec["widths64"] for n in spec["grid64"]]
    for precision, W, n in cases:
        base = (f"network.width=[{W}]", 'network.activation=["tanh"]', 'measure.mode="jvp"',
                "measure.record={log = 8}", f'measure.precision="{precision}"',
                f"grid.sigma_w2={{start=0.5, stop=4.0, num={n}}}",
                f"grid.sigma_b2={{start=0.0, stop=0.3, num={n}}}")  # fmt: skip
        cfg = _config(*base, f"network.depth={spec['depths'][-1]}")
        if not cuda_paths.fused_fits(cfg, W):
            continue
        times, model = {}, {}
        for path in ("fused", "gemm"):
            run = lambda d, p=path, b=base, w=W: cuda_gpu.run_unit(  # noqa: E731
                _config(*b, f"network.depth={d}", f'engine.path="{p}"'), w, 0
            )
            times[path] = per_layer(clock, run, spec["depths"])
            P = math.prod(cfg.grid_shape)
            model[path] = cuda_paths.layer_seconds(path, P, W, cfg.dtype.itemsize, 3)
        auto = cuda_paths.choose_path(cfg, W)
        faster = min(times, key=times.get)
        agree += auto == faster
        total += 1
        rows.append((precision, W, P, times["fused"], times["gemm"]))
        say(f"{W:6d} {P:7d} {precision:9s}  {1e3 * times['fused']:9.4f} "
            f"({1e3 * model['fused']:8.4f})    {1e3 * times['gemm']:9.4f} "
            f"({1e3 * model['gemm']:8.4f})    {faster:6s} {auto}")  # fmt: skip
    save_rows("crossover.csv", ("precision", "width", "points", "fused_s", "gemm_s"), rows)
    say(
        f"auto picked the faster path in {agree} of {total} cases (jvp; per layer at steady "
        f"state, depths {spec['depths']}; the model's rates: vxsim/engines/cuda_paths.py)"
    )


def architectures_section(sizes, clock):
    """Each non-MLP architecture, both modes, 32 grid points: time per work unit."""
    from vxsim.engines import cuda_gpu

    W, L = sizes["arch_width"], sizes["arch_depth"]
    from vxsim.config import EXTRA_AXES

    for arch, extra in EXTRA_AXES.items():
        if not extra:
            continue  # the MLP: sections above
        axis = list(extra)[-1]  # the architecture's own axis
        overrides = [
            f'network.architecture="{arch}"', f"network.width=[{W}]",
            'network.activation=["tanh", "relu"]', "grid.sigma_w2=[0.5, 1.0, 2.0, 4.0]",
            "grid.sigma_b2=[0.0, 0.1]", f"grid.{axis}=[0.5, 1.0]", 'measure.mode="both"',
        ]  # fmt: skip
        cfg = _config(*overrides, f"network.depth={L}")
        P = math.prod(cfg.grid_shape)
        cuda_gpu.run_unit(_config(*overrides, "network.depth=2"), W, 0)  # warm: CuPy's kernels
        t = clock.time(lambda c=cfg: cuda_gpu.run_unit(c, W, 0))
        say(f"{arch:8s} width {W}, depth {L}, {P} points, jvp+vjp: {t:.3f} s per unit, "
            f"{P * L / t / 1e3:.1f} k network-steps/s")  # fmt: skip


def rnn_section(sizes, clock):
    """The RNNs' fused step kernels: oracle agreement per architecture, then the issue-14
    wall times (Elman width 256 x 10,000 steps, LSTM width 1024 x 1,000 steps, 1,000
    points, JVP+VJP) against their 10 s targets."""
    sys.path.insert(0, str(ROOT / "tests"))
    from oracle_cases import ARCH_AXES, TOL, assert_same, make_config

    from vxsim.engines import cuda_gpu, numpy_ref

    W, L = sizes["rnn_oracle"]
    for arch in ("rnn", "gru", "lstm", "residual"):
        for precision in ("float32", "float64"):
            cfg = make_config(f'network.architecture="{arch}"',
                              f"grid.{ARCH_AXES[arch]}=[0.5, 1.0]", "engine.checkpoint=7",
                              width=W, depth=L, precision=precision)  # fmt: skip
            got = cuda_gpu.run_unit(cfg, W, 1)
            assert_same(got, numpy_ref.run_unit(cfg, W, 1), TOL[precision], f"{arch} {precision}")
        say(f"{arch:8s} width {W}, {L} steps, float32 and float64, jvp+vjp: the oracle's numbers")
    graph_vs_steps(sizes, clock)
    for arch in ("rnn", "gru", "lstm"):
        persistent_crossover(sizes, clock, _config, arch)
    nw, nb, nx = sizes["rnn_points"]
    grid = [f"grid.sigma_w2={{start=0.5,stop=3,num={nw}}}",
            f"grid.sigma_b2={{start=0,stop=0.2,num={nb}}}"]  # fmt: skip
    for arch, (W, L), axis in (("rnn", sizes["rnn_elman"], "sigma_u2"),
                               ("lstm", sizes["rnn_lstm"], "forget_bias")):  # fmt: skip
        overrides = [f'network.architecture="{arch}"', f"network.width=[{W}]",
                     'network.activation=["tanh"]', *grid,
                     f"grid.{axis}={{start=0.5,stop=2,num={nx}}}", 'measure.mode="both"',
                     'measure.precision="float32"']  # fmt: skip
        cuda_gpu.run_unit(_config(*overrides, "network.depth=3"), W, 0)  # warm
        cfg = _config(*overrides, f"network.depth={L}")
        P = math.prod(cfg.grid_shape)
        t = clock.time(lambda c=cfg, w=W: cuda_gpu.run_unit(c, w, 0))
        verdict = "met" if t < 10 else "MISSED"
        say(f"{arch:5s} tanh width {W}, {P} points, {L} steps, jvp+vjp float32: {t:.2f} s "
            f"(target < 10 s: {verdict}); {P * L / t / 1e6:.2f} M network-steps/s")  # fmt: skip


def graph_vs_steps(sizes, clock):
    """The forward step loop as one captured CUDA Graph replayed (engine.cuda_graphs, issue
    14) against the same steps launched one by one: Elman tanh, jvp+vjp float32, the same
    bits, and the two wall times side by side."""
    import numpy as np

    from vxsim.engines import cuda_gpu

    spec = sizes["graph"]
    W, L, (nw, nb, nx) = spec["width"], spec["depth"], spec["points"]
    base = ['network.architecture="rnn"', f"network.width=[{W}]", 'network.activation=["tanh"]',
            f"grid.sigma_w2={{start=0.5,stop=3,num={nw}}}",
            f"grid.sigma_b2={{start=0,stop=0.2,num={nb}}}",
            f"grid.sigma_u2={{start=0.5,stop=2,num={nx}}}", 'measure.mode="both"',
            'measure.precision="float32"', f"network.depth={L}"]  # fmt: skip
    got, times = {}, {}
    for graphs in ("on", "off"):
        cfg = _config(*base, f'engine.cuda_graphs="{graphs}"')
        cuda_gpu.run_unit(cfg, W, 0)  # warm: kernels, cuBLAS, the capture itself
        times[graphs] = clock.time(
            lambda c=cfg: got.__setitem__(c.cuda_graphs, cuda_gpu.run_unit(c, W, 0))
        )
    for key in got["off"]:
        np.testing.assert_array_equal(got["on"][key], got["off"][key], err_msg=key)
    P = math.prod(cfg.grid_shape)
    say(
        f"Elman tanh width {W}, {P} points, {L} steps, jvp+vjp float32: graph {times['on']:.3f} s, "
        f"steps {times['off']:.3f} s ({times['off'] / times['on']:.2f}x); the same bits"
    )


def persistent_crossover(sizes, clock, make, arch):
    """Elman, GRU or LSTM tanh float32 jvp+vjp per step at steady state (two depths'
    difference): the persistent kernels (the tied gate matrices in shared memory) and
    the step kernels (GEMMs and an epilogue per step, replayed as CUDA Graphs), over
    the widths where the persistent kernels fit and several grid sizes, their numbers the
    same (20 steps); ``cuda_paths.recurrent_path`` is what "auto" picks."""
    from oracle_cases import TOL, assert_same

    from vxsim.engines import cuda_gpu, cuda_paths

    spec = sizes["persist"]
    say(f"{arch:5s} width  points   persistent ms/step   steps ms/step   faster      auto")
    arch_cfg = make(f'network.architecture="{arch}"', 'measure.precision="float32"')
    fits = [W for W in spec["widths"] if cuda_paths.persist_fits(arch_cfg, W)]
    agree = total = 0
    rows = []
    for W in fits:
        for n in spec["grid"]:
            base = [f'network.architecture="{arch}"', f"network.width=[{W}]",
                    'network.activation=["tanh"]', f"grid.sigma_w2={{start=0.5,stop=3,num={n}}}",
                    'measure.mode="both"', 'measure.precision="float32"']  # fmt: skip
            times = {}
            for path in ("persistent", "steps"):
                run = lambda d, p=path, b=base, w=W: cuda_gpu.run_unit(  # noqa: E731
                    make(*b, f"network.depth={d}"), w, 0, path=p
                )
                times[path] = per_layer(clock, run, spec["depths"])
            cfg = make(*base, f"network.depth={spec['depths'][-1]}")
            P = math.prod(cfg.grid_shape)
            faster = min(times, key=times.get)
            auto = cuda_paths.recurrent_path(cfg, W)
            agree += auto == faster
            total += 1
            rows.append((arch, W, P, times["persistent"], times["steps"]))
            say(f"{arch:5s} {W:5d} {P:7d}   {1e3 * times['persistent']:14.4f}   "
                f"{1e3 * times['steps']:12.4f}   {faster:10s}  {auto}")  # fmt: skip
        same = [make(*base[:3], "grid.sigma_w2=[0.5, 2.0]", *base[4:], "network.depth=20")]
        same = [cuda_gpu.run_unit(same[0], W, 0, path=p) for p in ("persistent", "steps")]
        assert_same(*same, TOL["float32"], (arch, W))  # sigma_w2 <= 2: oracle_cases.TOL
    save_rows(f"persist_{arch}.csv", ("arch", "width", "points", "persistent_s", "steps_s"), rows)
    say(f"{arch}: auto picked the faster path in {agree} of {total} cases "
        f"(cuda_paths.recurrent_path; the steps path replays its captured CUDA Graph)")  # fmt: skip


def spectrum_section(sizes, clock):
    """The spectrum pass on the device (CuPy's QR, the graded SVD on the host): the oracle's
    log singular values for an orthogonal and a Gaussian tanh MLP and an orthogonal Elman
    RNN; the device's orthogonal Q; then the pass's time against the same unit's JVP."""
    import numpy as np

    from vxsim import engines
    from vxsim.engines import cuda_gpu, numpy_ref, spectrum

    sz = sizes["spectrum"]
    W, L = sz["oracle"]
    far = []
    for arch in ("mlp", "rnn"):
        layers = [1, L // 2, L]
        cfg = _config(
            f'network.architecture="{arch}"', f"network.width=[{W}]", f"network.depth={L}",
            'network.activation=["tanh"]', 'network.init=["gaussian", "orthogonal"]',
            "grid.sigma_w2=[0.9, 1.5]", "grid.sigma_b2=[0.01]",
            f"measure.spectrum={{layers={layers}}}",
        )  # fmt: skip
        got = engines.run(cuda_gpu, cfg, W, 0)["log_singular_value"]
        want = engines.run(numpy_ref, cfg, W, 0)["log_singular_value"]
        err = np.abs(got - want)
        ratio = float(np.max(err / spectrum.rounding_bound(want, layers, cfg.spectrum_qr_every)))
        say(f"{arch}: max |log s (device) - log s (numpy)| = {np.max(err):.2e}, at most "
            f"{ratio:.3f} of spectrum.rounding_bound (cuSOLVER vs LAPACK; log s from "
            f"{np.min(want):.0f} to {np.max(want):.1f})")  # fmt: skip
        if not ratio <= 1:
            far.append(arch)
    if far:
        raise AssertionError(f"{far}: the device's spectrum is beyond rounding from the oracle")
    cfg = _config(f"network.width=[{W}]", 'network.init=["orthogonal"]')
    unit = spectrum.generic.Unit(cfg, W, 0, cuda_gpu.spectrum_arrays(cfg))
    Z = unit.arrays.to_host(unit.matrix(1, dtype=np.float64))
    off = float(np.abs(Z @ Z.T / W - np.eye(W)).max())
    bound = 10 * W * np.finfo(np.float64).eps
    say(f"orthogonal Z Z^T / N - I on the device: max {off:.2e} (bound 10 N eps = {bound:.1e})")
    if not off <= bound:
        raise AssertionError(f"the device's orthogonal Z is {off:.2e} from orthogonal")
    for N in sz["widths"]:
        w2 = np.linspace(0.8, 2.0, sz["points"]).tolist()
        base = [
            f"network.width=[{N}]", f"network.depth={sz['depth']}",
            'network.activation=["tanh"]', f"grid.sigma_w2={w2}", "grid.sigma_b2=[0.01]",
        ]  # fmt: skip
        plain = _config(*base)
        spec = _config(*base, f"measure.spectrum={{layers=[{sz['depth']}]}}")
        for warm in (plain, spec):  # CuPy's kernels, cuSOLVER, the graded SVD's Numba compile
            engines.run(cuda_gpu, warm, N, 0)
        t_jvp = clock.time(lambda c=plain, n=N: engines.run(cuda_gpu, c, n, 0))
        t_spec = clock.time(lambda c=spec, n=N: engines.run(cuda_gpu, c, n, 0))
        say(
            f"width {N}, {sz['points']} points, depth {sz['depth']}: jvp {t_jvp:.3f} s, "
            f"with the spectrum {t_spec:.3f} s ({t_spec / t_jvp:.1f}x; N = {N})"
        )


def schoenholz_section(sizes):
    from vxsim import config
    from vxsim.sweep import run_sweep

    cfg = config.load(ROOT / "data" / "schoenholz2017_tanh.toml", overrides=sizes["schoenholz"])
    stamps = []
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "schoenholz.h5")
        t0 = time.perf_counter()
        run_sweep(
            cfg, out, backend="cuda", progress=lambda d, n: stamps.append(time.perf_counter())
        )
        total = time.perf_counter() - t0
        units = stamps[-1] - stamps[0] if len(stamps) > 1 else float("nan")
        say(
            f"schoenholz2017_tanh: width {cfg.widths[0]}, depth {cfg.depth}, "
            f"{len(cfg.sigma_w2)} x {len(cfg.sigma_b2)} grid, {cfg.samples} samples, "
            f"mode {cfg.mode}: wall time {total:.1f} s ({units:.1f} s in the "
            f"{len(stamps) - 1} work units, the rest setup, analysis and compression)"
        )
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        proc = subprocess.run([sys.executable, "-m", "vxsim", "boundary", out],
                              env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
        lines = (proc.stdout or proc.stderr).strip().splitlines()
        for line in lines[:20]:
            say("  " + line)
        if len(lines) > 20:
            say(f"  ... ({len(lines) - 20} more lines)")


def cpu_section(host):
    """bench_gemm_split.py on every core, in its own process (Numba's thread count is
    fixed when its threads start)."""
    args = ["--widths", "256"] if host else ["--widths", "256,512,1024", "--repeat", "3"]
    threads = sorted({2, os.cpu_count() or 2})
    cmd = [sys.executable, str(ROOT / "scripts" / "bench_gemm_split.py"), *args,
           "--threads", ",".join(map(str, threads))]  # fmt: skip
    env = dict(os.environ, PYTHONPATH=str(ROOT), NUMBA_NUM_THREADS=str(max(threads)))
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    for line in (proc.stdout + proc.stderr).strip().splitlines():
        say("  " + line)
    if proc.returncode:
        raise RuntimeError(f"bench_gemm_split.py exited with {proc.returncode}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", action="store_true", help="CPU dry run of this script")
    parser.add_argument("--budget", type=float, default=285.0, help="seconds for the whole check")
    parser.add_argument("--only", default=",".join(SECTIONS),
                        help=f"comma-separated sections among {', '.join(SECTIONS)}")  # fmt: skip
    args = parser.parse_args()
    only = {name.strip() for name in args.only.split(",") if name.strip()}
    if only - set(SECTIONS):
        parser.error(f"unknown sections {sorted(only - set(SECTIONS))}; known: {SECTIONS}")
    sizes = HOST if args.host else FULL
    say(f"vxsim gpu_check  {time.strftime('%Y-%m-%d %H:%M:%S %Z')}  source {ROOT}")
    clock = None
    with section("versions", args.budget, 0) as go:
        if go:
            versions_section()
    with section("device", args.budget, 0) as go:
        if go:
            device_section(args.host)
            clock = Clock(args.host)
    ready = lambda: clock is not None  # noqa: E731
    plan = [
        ("tests", 30, lambda: tests_section(args.host)),
        ("gemm", 20, lambda: gemm_section(sizes, clock, args.host)),
        ("fused", 20, lambda: fused_section(sizes, clock)),
        ("crossover", 20, lambda: crossover_section(sizes, clock)),
        ("architectures", 20, lambda: architectures_section(sizes, clock)),
        ("rnn", 40, lambda: rnn_section(sizes, clock)),
        ("spectrum", 30, lambda: spectrum_section(sizes, clock)),
        ("schoenholz", 40, lambda: schoenholz_section(sizes)),
        ("cpu", 15, lambda: cpu_section(args.host)),
    ]
    for key, need, run in plan:
        if key not in only:
            continue
        requires = None if key == "cpu" else ready
        with section(_TITLES[key], args.budget, need, requires=requires) as go:
            if go:
                run()
    return summary(args)


def summary(args):
    say("\n== summary")
    for title, status, seconds, note in RESULTS:
        say(f"{status:8s} {seconds:6.1f} s  {title}" + (f"  ({note})" if note else ""))
    say(f"total {time.perf_counter() - START:.1f} s")
    first = STATE["first_failure"]
    if first:
        say(f"first failure: {first}")
    if STATE["cuda_error"]:
        key = next((k for k, t in _TITLES.items() if t == STATE["cuda_error"]), None)
        again = f" --only {key}" if key else ""
        host = " --host" if args.host else ""
        say(f"a CUDA error in '{STATE['cuda_error']}' leaves the context unusable: later "
            f"failures may only echo it. To find the launch that faulted, rerun\n"
            f"  CUDA_LAUNCH_BLOCKING=1 bash scripts/gpu_check.sh{host}{again}")  # fmt: skip
    return 0 if all(status == "PASS" for _, status, _, _ in RESULTS) else 1


if __name__ == "__main__":
    sys.exit(main())
