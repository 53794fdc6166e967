"""The CUDA engine without a GPU (issue 5): its kernels compiled, its math and orchestration run.

* nvcc: every kernel file compiles for the GPU (PTX for sm_80 and sm_90),
  with the options the engine gives NVRTC; with --fmad=false no fused
  multiply-add is left in the random-number code (and without it there is:
  the option matters). Skipped with the reason where nvcc is missing.
* g++: the same sources built for the CPU (``cuda_host``: one thread per
  block) give the NumPy generator's Philox words and normals bit for bit,
  the activations to 1e-12, and, driving the unchanged ``cuda_gpu`` engine
  (both paths, every mode, both precisions), the oracle's numbers to the
  same tolerances as the Numba engine.

What needs a GPU (the parallel partition of each block, the warp-shuffle
reductions, NVRTC/CuPy, cuBLAS and TF32, the device's libm) is in
tests/test_cuda_gpu.py and scripts/gpu_check.sh.
"""

import ctypes
import os
import re
import shutil
import subprocess
import sys

import cuda_probes
import numpy as np
import pytest
from conftest import measured
from oracle_cases import ARCH_AXES, CASES, TOL, assert_same, case_config, make_config

from vxsim import activations, config, engines, rng
from vxsim.engines import (
    base,
    cuda_generic,
    cuda_gpu,
    cuda_host,
    cuda_mlp,
    cuda_paths,
    cuda_sources,
    numpy_ref,
    schedule,
    strict_arrays,
)
from vxsim.errors import VxsimError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NVCC = shutil.which("nvcc") or (
    "/usr/local/cuda/bin/nvcc" if os.path.exists("/usr/local/cuda/bin/nvcc") else None
)
needs_nvcc = pytest.mark.skipif(NVCC is None, reason="no CUDA compiler (nvcc) on PATH")
needs_cxx = pytest.mark.skipif(
    cuda_host.compiler() is None, reason="no C++ compiler (g++, c++, clang++ or $CXX) on PATH"
)


# ---------------------------------------------------------------- sources


def test_sources_are_found_and_assembled():
    names = cuda_sources.kernel_names()
    on_disk = sorted(
        f for f in os.listdir(os.path.join(ROOT, "kernels")) if f.endswith((".cu", ".cuh"))
    )
    assert names == on_disk
    assert set(cuda_sources.UNITS) <= set(names)
    text = cuda_sources.program("float32")
    for name in names:  # every file is part of the program, each exactly once
        assert text.count(f"// ---- begin {name}\n") + text.count(f"// ==== {name}\n") == 1, name
    assert '#include "' not in text and "#pragma once" not in text
    assert text.startswith("#define VX_REAL float\n")
    assert cuda_sources.program("float64").startswith("#define VX_REAL double\n")
    assert cuda_sources.program("tf32") == text


def test_generated_header_states_rng_and_registry_values():
    head = cuda_sources.generated_header()
    assert f"// (generator {rng.GENERATOR})\n" in head
    assert len(rng.TRANSFORM_CONSTANTS) == 23
    for name in rng.TRANSFORM_CONSTANTS:
        value = float(re.search(rf"#define VX_{name} \((\S+)\)\n", head).group(1))
        assert value == getattr(rng, name)  # exactly: repr round-trips
    for code, name in enumerate(activations.names()):
        expr = activations.REGISTRY[name].c["dphi"]
        assert f"case {code}: return ({expr});  // {name}\n" in head


def test_every_kernel_launch_is_type_checked():
    text = cuda_sources.program("float32")
    sig = cuda_sources.kernel_signatures(text)
    assert set(sig) >= {"vx_forward", "vx_fused_forward", "vx_fill_weights", "vx_backward"}
    a32 = np.zeros((2, 3), dtype=np.float32)
    good = (a32, np.int32(3), np.int32(1), np.int32(1), np.int32(0), np.uint32(0),
            np.uint32(0), np.uint32(0))  # fmt: skip
    cuda_sources.check_args("vx_fill_weights", sig["vx_fill_weights"], good, np.float32)
    bad = [
        (a32.astype(np.float64), *good[1:]),  # float64 array for a float*
        (a32[:, ::2], *good[1:]),  # not contiguous
        (a32, 3, *good[2:]),  # a Python int for an int
        (a32, np.int64(3), *good[2:]),  # 64 bits for 32
        good[:-1],  # one argument missing
    ]
    for args in bad:
        with pytest.raises(TypeError):
            cuda_sources.check_args("vx_fill_weights", sig["vx_fill_weights"], args, np.float32)


# ---------------------------------------------------------------- nvcc


def _nvcc(tmp_path, text, name, *options, arch="sm_90"):
    src = tmp_path / f"{name}.cu"
    src.write_text(text)
    out = tmp_path / f"{name}.ptx"
    cmd = [
        NVCC,
        "--ptx",
        f"-arch={arch}",
        *options,
        "-Werror",
        "all-warnings",
        str(src),
        "-o",
        str(out),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, f"nvcc {' '.join(options)} {name}:\n{proc.stderr}"
    return out.read_text()


@needs_nvcc
@pytest.mark.parametrize("precision", ["float32", "float64"])
def test_whole_program_compiles_with_nvcc(tmp_path, precision):
    """The program exactly as the engine hands it to NVRTC, for Hopper (sm_90); every
    kernel carries the launch bound (.maxntid), so its registers fit a full block."""
    ptx = _nvcc(tmp_path, cuda_sources.program(precision), precision, *cuda_sources.NVRTC_OPTIONS)
    bound = cuda_sources.MAX_BLOCK_THREADS
    for name in cuda_sources.kernel_signatures(cuda_sources.program(precision)):
        assert re.search(rf"\.entry {name}\(", ptx), name  # extern "C": unmangled entry points
        entry = re.search(rf"\.entry {name}\([^)]*\)\s*(\.maxntid [^\n]*)", ptx)
        assert entry and entry.group(1) == f".maxntid {bound}, 1, 1", name


@needs_nvcc
def test_each_kernel_file_compiles_alone_for_ampere(tmp_path):
    """Each .cu file with its own includes (nothing borrowed from another), sm_80."""
    for unit in cuda_sources.UNITS:
        text = cuda_sources.precision_prefix("float32") + cuda_sources.assemble(unit)
        _nvcc(tmp_path, text, unit[:-3], *cuda_sources.NVRTC_OPTIONS, arch="sm_80")


@needs_nvcc
def test_no_fma_contraction_in_the_random_numbers(tmp_path):
    """generate.cu has no explicit fma(): with --fmad=false its PTX has no fma
    instruction, so the Box-Muller roundings are the CPU's. Without the option
    nvcc does contract (so this test can tell)."""
    text = cuda_sources.precision_prefix("float64") + cuda_sources.assemble("generate.cu")
    strict = _nvcc(tmp_path, text, "strict", *cuda_sources.NVRTC_OPTIONS)
    loose = _nvcc(tmp_path, text, "loose", "--fmad=true")
    assert "fma." not in strict
    assert "fma.rn.f64" in loose


# ---------------------------------------------------------------- NVRTC (what CuPy compiles with)


def _nvrtc_library():
    """libnvrtc: $VXSIM_NVRTC, the CUDA toolkit, or a pip-installed nvidia-cuda-nvrtc."""
    import ctypes.util
    import glob
    import importlib.util

    paths = [os.environ.get("VXSIM_NVRTC", "")]
    paths += sorted(glob.glob("/usr/local/cuda*/lib64/libnvrtc.so*"))
    spec = importlib.util.find_spec("nvidia")
    for root in list(spec.submodule_search_locations or []) if spec else []:
        paths += sorted(glob.glob(os.path.join(root, "*", "lib", "libnvrtc.so*")))
    paths.append(ctypes.util.find_library("nvrtc") or "")
    for path in paths:
        if path and "builtins" not in path:
            try:
                return ctypes.CDLL(path)
            except OSError:
                continue
    return None


NVRTC = _nvrtc_library()


def _nvrtc_compile(text, options):
    """(ok, log, ptx) of NVRTC compiling ``text`` with ``options``."""
    c = ctypes
    prog = c.c_void_p()
    NVRTC.nvrtcCreateProgram(c.byref(prog), text.encode(), b"vxsim.cu", 0, None, None)
    opts = (c.c_char_p * len(options))(*[o.encode() for o in options])
    status = NVRTC.nvrtcCompileProgram(prog, len(options), opts)
    size = c.c_size_t()
    NVRTC.nvrtcGetProgramLogSize(prog, c.byref(size))
    log = c.create_string_buffer(size.value)
    NVRTC.nvrtcGetProgramLog(prog, log)
    ptx = b""
    if status == 0:
        NVRTC.nvrtcGetPTXSize(prog, c.byref(size))
        buf = c.create_string_buffer(size.value)
        NVRTC.nvrtcGetPTX(prog, buf)
        ptx = buf.value
    NVRTC.nvrtcDestroyProgram(c.byref(prog))
    return status == 0, log.value.decode(errors="replace"), ptx.decode(errors="replace")


@pytest.mark.skipif(NVRTC is None, reason="no NVRTC library (libnvrtc) found; set VXSIM_NVRTC")
@pytest.mark.parametrize("precision", ["float32", "float64"])
def test_program_compiles_with_nvrtc(precision):
    """The runtime compiler CuPy uses (no system headers, no nvcc driver), with the
    engine's options, for Ampere and Hopper; no FMA contraction in the generator."""
    text = cuda_sources.program(precision)
    for arch in ("compute_80", "compute_90"):
        ok, log, ptx = _nvrtc_compile(text, [*cuda_sources.NVRTC_OPTIONS, f"-arch={arch}"])
        assert ok, log
        assert "warning" not in log.lower(), log
        for name in cuda_sources.kernel_signatures(text):
            assert re.search(rf"\.entry {name}\(", ptx), name
    gen = cuda_sources.precision_prefix(precision) + cuda_sources.assemble("generate.cu")
    ok, log, ptx = _nvrtc_compile(gen, [*cuda_sources.NVRTC_OPTIONS, "-arch=compute_90"])
    assert ok and "fma." not in ptx, log


# ---------------------------------------------------------------- device math on the CPU

KAT = [  # Random123 kat_vectors, philox4x32 10 rounds: (counter, key, words)
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    (
        (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344),
        (0xA4093822, 0x299F31D0),
        (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1),
    ),
]


def test_philox_known_answers_and_rng(host):
    be = host["float32"]
    for (c0, c1, c2, c3), (k0, k1), words in KAT:
        seed = k0 + (k1 << 32)
        got = cuda_probes.probe_philox(be, c0, 1, c1, c2, c3, seed)
        assert tuple(int(w) for w in got[0]) == words
    for seed, layer, sample, stream in ((0, 1, 0, 0), (2**40 + 7, 999, 3, 1), (2**64 - 1, 2, 1, 2)):
        got = cuda_probes.probe_philox(be, 0, 1000, layer, sample, stream, seed)
        k0, k1 = rng.seed_key(seed)
        n = np.arange(1000, dtype=np.uint64)
        c = [np.full(1000, v, dtype=np.uint64) for v in (layer, sample, stream)]
        want = np.stack(rng.philox4x32_10(n, *c, k0, k1), axis=1)
        np.testing.assert_array_equal(got, want.astype(np.uint32))


def test_normals_bit_identical_in_float64(host):
    be = host["float64"]
    for count, layer, sample, stream, seed in ((1, 1, 0, 0, 0), (4097, 7, 2, 1, 12345),
                                               (30001, 200, 1, 3, 2**33 + 5)):  # fmt: skip
        got = cuda_probes.probe_normals(be, count, layer, sample, stream, seed)
        np.testing.assert_array_equal(got, rng.normals(seed, sample, layer, stream, count))


@pytest.mark.parametrize("precision", ["float32", "float64"])
def test_weights_and_bias_bit_identical(host, precision):
    """The engine's generator (vx_fill_weights, vx_fill_bias) against base.weights/bias."""
    cfg = make_config("monte_carlo.seed=1099511627781", precision=precision)
    for width in (1, 7, 33, 64):
        for sample, layer in ((0, 1), (1, 5), (3, 200)):
            Z, xi = cuda_probes.weights(cfg, width, sample, layer, backend=host[precision])
            assert Z.dtype == np.dtype(precision)
            np.testing.assert_array_equal(Z, base.weights(cfg, width, sample, layer))
            np.testing.assert_array_equal(xi, base.bias(cfg, width, sample, layer))


def test_fused_chunk_fill_transposed_and_layered(host):
    """Several layers at once, transposed, as the fused forward pass reads them."""
    cfg = make_config('engine.path="fused"', width=9, depth=12)
    unit = cuda_mlp.Unit(cfg, 9, 1, backend=host["float32"])
    unit._fill(4, 5, transpose=1, bias=True)
    Zs, xis = unit.be.to_host(unit.Zbuf), unit.be.to_host(unit.xibuf)
    for li in range(5):
        np.testing.assert_array_equal(Zs[li], base.weights(cfg, 9, 1, 4 + li).T)
        np.testing.assert_array_equal(xis[li], base.bias(cfg, 9, 1, 4 + li))


def test_box_muller_edge_words_bit_identical(host):
    """Words where the exponent folding and the quadrant selection change."""
    edges = {0, 1, 2, 3, 2**32 - 1, 2**32 - 2, 0x3FFFFFFF, 0x40000000, 0x7FFFFFFF, 0x80000000}
    edges |= {2**e for e in range(32)} | {2**e - 1 for e in range(1, 33)}
    edges |= {int(2**e * 1.4142135623730951) + d for e in range(1, 31) for d in (-1, 0, 1)}
    words = np.array(sorted(w for w in edges if 0 <= w < 2**32), dtype=np.uint64)
    ka = np.repeat(words, words[::7].size)
    kb = np.tile(words[::7], words.size)
    got = cuda_probes.probe_box_muller(host["float64"], ka, kb)
    z0, z1 = rng.box_muller(ka, kb)
    np.testing.assert_array_equal(got[:, 0], z0)
    np.testing.assert_array_equal(got[:, 1], z1)


def test_box_muller_bit_identical_on_a_million_words(host):
    """The transform on 2^20 random word pairs (every octant, exponent and fold)."""
    words = np.random.default_rng(16).integers(0, 2**32, size=(2, 2**20), dtype=np.uint64)
    got = cuda_probes.probe_box_muller(host["float64"], words[0], words[1])
    z0, z1 = rng.box_muller(words[0], words[1])
    np.testing.assert_array_equal(got[:, 0].view(np.uint64), z0.view(np.uint64))
    np.testing.assert_array_equal(got[:, 1].view(np.uint64), z1.view(np.uint64))


LABELS = activations.names() + ["leaky_relu(0.2)", "elu(0.5)"]


@pytest.mark.parametrize("label", LABELS)
def test_activations_match_numpy(host, label):
    """The generated switch (codes and expressions) against the NumPy registry: the
    tolerance of tests/test_activations_c.py (host libm against NumPy, 1e-12 relative,
    1e-15 absolute for cancelling differences)."""
    act, a = activations.parse(label)
    x = np.concatenate([np.linspace(-6.0, 6.0, 1200), np.array(act.kinks(a) or [0.0])])
    for fn in ("phi", "dphi", "d2phi"):
        got = cuda_probes.probe_activation(host["float64"], act.name, fn, x, a)
        want = np.broadcast_to(np.asarray(getattr(act, fn)(x, a), dtype=np.float64), x.shape)
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15, err_msg=f"{label} {fn}")


# ---------------------------------------------------------------- the engine on the CPU


@pytest.mark.parametrize("precision,mode,path,width,depth,record,checkpoint,sample", CASES)
def test_matches_oracle(host, precision, mode, path, width, depth, record, checkpoint, sample):
    cfg = case_config(precision, mode, path, width, depth, record, checkpoint, sample)
    assert cuda_paths.choose_path(cfg, width) == path
    got = cuda_gpu.run_unit(cfg, width, sample, backend=host[precision])
    assert_same(got, numpy_ref.run_unit(cfg, width, sample), TOL[precision])


@pytest.mark.parametrize("threads", [3, 32])
def test_matches_oracle_with_threads(threads):
    """Each block run by several host threads meeting at real barriers: the partition
    of the work (strides, idle threads when N < threads, several elements per thread),
    the barriers and the reductions' contract. 3 threads for every case, 32 (a warp)
    for four."""
    if cuda_host.compiler() is None:
        pytest.skip("no C++ compiler (g++, c++, clang++ or $CXX) on PATH")
    backends = {p: cuda_host.HostBackend(p, threads=threads) for p in ("float32", "float64")}
    for precision, mode, path, width, depth, record, checkpoint, sample in (
        CASES if threads < 8 else CASES[1::3]
    ):
        cfg = case_config(precision, mode, path, width, depth, record, checkpoint, sample)
        got = cuda_gpu.run_unit(cfg, width, sample, backend=backends[precision])
        assert_same(got, numpy_ref.run_unit(cfg, width, sample), TOL[precision])


# ---------------------------------------------------------------- the other architectures


def _arch_config(arch, precision, mode, depth=14, checkpoint=4):
    return make_config(
        f'network.architecture="{arch}"',
        f"grid.{ARCH_AXES[arch]}=[0.5, 1.0]",
        f"engine.checkpoint={checkpoint}",
        precision=precision,
        mode=mode,
        depth=depth,
    )


@pytest.mark.parametrize("precision", ["float32", "float64"])
@pytest.mark.parametrize("mode", ["jvp", "vjp", "both"])
@pytest.mark.parametrize("arch", sorted(ARCH_AXES))
def test_every_architecture_runs_on_the_cuda_engine(host, arch, mode, precision):
    """residual, rnn, gru, lstm on the cuda engine's generic path (engines.generic on device
    arrays; the RNNs' fused step kernels are tests/test_cuda_rnn_host.py):
    the oracle's numbers bit for bit, since the host stand-in computes with NumPy and
    the device generator's weights are rng's. On the strict stand-in, so any host
    array reaching the device computation (or the reverse) is a TypeError, as in CuPy."""
    be = host[precision]
    cfg = _arch_config(arch, precision, mode)
    del be.launches[:]
    got = cuda_gpu.run_unit(cfg, 12, 1, path="generic", backend=be)
    want = numpy_ref.run_unit(cfg, 12, 1)
    assert set(got) == set(want)
    for key in want:
        assert type(got[key]) is np.ndarray
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)
    # the residual MLP's fresh Z^l come from the device generator, one launch per use
    # (forward, then the VJP's recomputation and backward steps); the RNNs' tied
    # matrices are drawn once, on the host
    fills = sum(name == "vx_fill_weights" for name, *_ in be.launches)
    if arch == "residual":
        per_layer = {"jvp": 1, "vjp": 3, "both": 3}[mode]
        assert cfg.depth <= fills <= per_layer * cfg.depth, fills
    else:
        assert fills == 0


@pytest.mark.parametrize("arch", ["residual", "rnn"])
def test_architecture_divergence_flags_match_oracle(host, arch):
    """sigma_w2 = 1e6 with elu and gelu (not renormalised) overflows float32 within a
    few steps: the device path's select-based kill rule flags the same points at the
    same step as the oracle's masks, and the NaNs stay in those points."""
    cfg = make_config(f'network.architecture="{arch}"', sw2="[1.0, 1e6]",
                      acts='["elu", "gelu"]', depth=40)  # fmt: skip
    got = cuda_gpu.run_unit(cfg, 10, 1, path="generic", backend=host["float32"])
    want = numpy_ref.run_unit(cfg, 10, 1)
    assert np.all(want["diverged"][:, 1] > 0) and not np.any(want["diverged"][:, 0])
    for key in want:
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)


@pytest.mark.parametrize("arch", ["residual", "lstm"])
def test_architecture_vjp_that_keeps_every_layer_on_the_device(host, arch, monkeypatch):
    """The store path (every layer kept, nothing recomputed; GPU memory permitting)
    on the strict stand-in: same numbers as the oracle's checkpoints, to rounding."""
    monkeypatch.setattr(cuda_generic.DeviceArrays, "store_bytes", lambda self: 2**40)
    cfg = _arch_config(arch, "float64", "both", checkpoint=0)
    got = cuda_gpu.run_unit(cfg, 12, 1, path="generic", backend=host["float64"])
    want = numpy_ref.run_unit(cfg, 12, 1)
    for key in want:
        np.testing.assert_allclose(got[key], want[key], rtol=1e-12, atol=1e-12, err_msg=key)


def test_tf32_architectures_take_the_float32_path(host, monkeypatch):
    """measure.precision = "tf32" on the generic path: float32 arrays with the GEMMs
    switched by the backend (the host stand-in has no TF32, so float32's numbers)."""
    asked = []
    real = host["float32"].gemm_precision
    monkeypatch.setattr(
        host["float32"], "gemm_precision", lambda tf32: asked.append(tf32) or real(tf32)
    )
    cfg = make_config('network.architecture="gru"', 'measure.precision="tf32"',
                      'engine.backend="cuda"', width=12, depth=10)  # fmt: skip
    ref = make_config('network.architecture="gru"', width=12, depth=10, precision="float32")
    got = cuda_gpu.run_unit(cfg, 12, 0, path="generic", backend=host["float32"])
    want = numpy_ref.run_unit(ref, 12, 0)
    for key in want:
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)
    assert asked == [True]


def test_a_host_array_in_the_device_computation_is_caught(host, monkeypatch):
    """The strict stand-in can fail: a unit that left its inputs on the host (as if
    DeviceArrays.asarray had been forgotten) is refused, naming the host array."""
    cfg = _arch_config("rnn", "float32", "both")
    monkeypatch.setattr(cuda_generic.DeviceArrays, "asarray", lambda self, x: np.asarray(x))
    with pytest.raises(strict_arrays.HostDeviceMixError, match="host .NumPy. array"):
        cuda_gpu.run_unit(cfg, 12, 1, path="generic", backend=host["float32"])


def test_strict_arrays_refuse_what_cupy_refuses():
    xp = strict_arrays.xp
    d = xp.asarray(np.arange(6.0).reshape(2, 3))
    assert isinstance(np.exp(d) + 1.0, strict_arrays.DeviceArray)  # ufuncs stay on the device
    assert isinstance(np.where(d > 2, d, 0.0), strict_arrays.DeviceArray)  # and functions
    assert isinstance(d.max(), strict_arrays.DeviceArray)  # reductions give 0-d device arrays
    assert float(d.max()) == 5.0
    for mix in (lambda: d + np.ones(3), lambda: np.concatenate([d, np.ones((1, 3))]),
                lambda: np.asarray(d), lambda: np.zeros((2, 3)).__setitem__(..., d),
                lambda: d.__setitem__((0, 0), np.ones(1))):  # fmt: skip
        with pytest.raises(strict_arrays.HostDeviceMixError):
            mix()
    host_copy = strict_arrays.to_host(d)
    host_copy[0, 0] = 9.0
    assert type(host_copy) is np.ndarray and float(d[0, 0]) == 0.0


def test_sweep_on_the_cuda_engine_is_the_numpy_sweep(tmp_path, monkeypatch, host):
    """``vxsim sweep --backend cuda`` of a residual net on the generic path, with the host
    stand-in as the GPU: the file's measurements equal the oracle's run. (An LSTM's sweep,
    on its fused step kernels: tests/test_cuda_rnn_host.py; the residual net's fused
    epilogue: tests/test_cuda_residual_host.py.)"""
    import functools

    import h5py

    from vxsim.sweep import run_sweep

    monkeypatch.setattr(cuda_gpu, "available", lambda: True)
    monkeypatch.setattr(cuda_gpu, "gpu_backend", lambda precision: host["float64"])
    monkeypatch.setattr(cuda_gpu, "run_unit", functools.partial(cuda_gpu.run_unit, path="generic"))
    cfg = _arch_config("residual", "float64", "both", depth=10)
    files = {b: run_sweep(cfg, str(tmp_path / f"{b}.h5"), backend=b) for b in ("cuda", "numpy")}
    with h5py.File(files["cuda"], "r") as a, h5py.File(files["numpy"], "r") as b:
        assert a.attrs["backend"] == "cuda"
        for name in ("log_q", "corr", "log_tangent_norm", "log_grad_norm", "diverged"):
            np.testing.assert_array_equal(a[name][...], b[name][...], err_msg=name)


def test_a_missing_barrier_is_caught():
    """Without the barrier between the fused backward pass's product (every thread
    reads all of g) and the step that overwrites g, several threads give wrong
    gradients and one thread does not: the threaded tests above can fail."""
    if cuda_host.compiler() is None:
        pytest.skip("no C++ compiler (g++, c++, clang++ or $CXX) on PATH")
    barrier = "        blk.sync();  // every thread has read all of g before it is overwritten\n"
    text = cuda_sources.program("float64")
    assert text.count(barrier) == 1
    broken = text.replace(barrier, "")
    cfg = make_config('engine.path="fused"', width=64, depth=35, precision="float64", mode="vjp")
    want = numpy_ref.run_unit(cfg, 64, 1)
    one = cuda_gpu.run_unit(cfg, 64, 1, backend=cuda_host.HostBackend("float64", text=broken))
    assert_same(one, want, TOL["float64"])
    three = cuda_host.HostBackend("float64", threads=3, text=broken)
    with pytest.raises(AssertionError, match="log_grad_norm"):
        assert_same(cuda_gpu.run_unit(cfg, 64, 1, backend=three), want, TOL["float64"])


@pytest.mark.parametrize("path", ["gemm", "fused"])
def test_tiny_networks_match_oracle(host, path):
    """Width 1 (N^2 < one Philox block), depth 1 (no backward step), a checkpoint
    spacing longer than the network."""
    for width, depth, checkpoint in ((1, 5, 0), (2, 1, 0), (3, 2, 0), (5, 7, 3), (6, 10, 20)):
        cfg = make_config(f"engine.checkpoint={checkpoint}", width=width, depth=depth,
                          precision="float64")  # fmt: skip
        got = cuda_gpu.run_unit(cfg, width, 0, path=path, backend=host["float64"])
        assert_same(got, numpy_ref.run_unit(cfg, width, 0), TOL["float64"])


def test_fused_chunks_change_nothing(host, monkeypatch):
    """Layers split into launches of 3 (chunk edges inside VJP segments and between
    checkpoints): bit-identical to one launch per pass."""
    cfg = make_config("engine.checkpoint=5", 'engine.path="fused"', width=10, depth=23,
                      precision="float64")  # fmt: skip
    whole = cuda_gpu.run_unit(cfg, 10, 1, backend=host["float64"])
    monkeypatch.setattr(cuda_paths, "FUSED_ZBUF_BYTES", 3 * 10 * 10 * 8)
    unit = cuda_mlp.Unit(cfg, 10, 1, backend=host["float64"])
    assert unit.chunk == 3
    split = unit.run()
    for key, value in whole.items():
        np.testing.assert_array_equal(split[key], value, err_msg=key)


@pytest.mark.parametrize("path", ["gemm", "fused"])
def test_divergence_flags_match_oracle(host, path):
    """ELU and GELU at sigma_w2 = 50 overflow float32: the same (point, layer)
    flags as the oracle, NaN from there on, the other points untouched."""
    cfg = make_config(width=16, depth=60, sw2="[1.0, 50.0]", precision="float32")
    got = cuda_gpu.run_unit(cfg, 16, 0, path=path, backend=host["float32"])
    want = numpy_ref.run_unit(cfg, 16, 0)
    div = got["diverged"]
    np.testing.assert_array_equal(div, want["diverged"])
    elu = [label.split("(")[0] for label in cfg.activations].index("elu")
    assert np.all(div[elu, 1] > 0) and not np.any(div[:, 0])
    for key in ("log_q", "corr", "log_tangent_norm", "log_grad_norm"):
        np.testing.assert_array_equal(np.isnan(got[key]), np.isnan(want[key]), err_msg=key)
        np.testing.assert_allclose(got[key][:, 0], want[key][:, 0], rtol=0,
                                   atol=TOL["float32"][key])  # fmt: skip


@pytest.mark.parametrize("path", ["gemm", "fused"])
def test_underflow_to_zero_is_not_divergence(host, path):
    """tanh at sigma_b2 = 0 in the ordered phase: h underflows to exactly 0 (its
    fixed point q* = 0) after ~160 layers. As in the oracle, that is not
    divergence: log_q reads -inf and the tangents go on through phi'(0)."""
    cfg = config.load(overrides=[
        "network.width=[8]", "network.depth=400", 'network.activation=["tanh"]',
        "grid.sigma_w2=[0.3]", "grid.sigma_b2=[0.0]", 'measure.mode="both"',
        "measure.record={every = 50}", f'engine.path="{path}"',
    ])  # fmt: skip
    got = cuda_gpu.run_unit(cfg, 8, 0, backend=host["float32"])
    want = numpy_ref.run_unit(cfg, 8, 0)
    assert want["diverged"].item() == 0 and got["diverged"].item() == 0
    assert np.isneginf(got["log_q"][0, 0, 0, -1]) and np.isneginf(want["log_q"][0, 0, 0, -1])
    np.testing.assert_allclose(got["log_tangent_norm"], want["log_tangent_norm"], rtol=1e-5)


def test_depth_2000_finite_in_both_phases(host):
    cfg = make_config(
        "measure.record={log = 30}",
        "grid.sigma_b2=[0.05, 0.2]",
        'engine.path="fused"',
        width=16,
        depth=2000,
        sw2="[0.5, 1.0, 4.0]",
        precision="float32",
    )
    out = cuda_gpu.run_unit(cfg, 16, 0, backend=host["float32"])
    names = [label.split("(")[0] for label in cfg.activations]
    div = out["diverged"]
    for name in ("tanh", "relu", "leaky_relu"):
        assert not np.any(div[names.index(name)]), name
    for key in ("log_q", "corr", "log_tangent_norm", "log_grad_norm"):
        assert np.all(np.isfinite(out[key][div == 0])), key
    tanh = names.index("tanh")
    tangent = out["log_tangent_norm"][tanh, :, 0, -1]
    grad = out["log_grad_norm"][tanh, :, 0, 0]
    assert tangent[0] < -100 and grad[0] < -100  # sigma_w2 = 0.5: vanishing
    assert tangent[2] > 100 and grad[2] > 100  # sigma_w2 = 4: exploding


def test_launch_shapes_and_kernels_used(host):
    """Every engine kernel is launched (so each one's arguments were checked against its
    C signature above); per-point kernels get one block per point, a multiple of 32
    threads, and the fused ones the shared memory their vectors take."""
    seen = {}
    for path in ("gemm", "fused"):
        cfg = make_config('engine.path="' + path + '"', width=40, depth=9, mode="both")
        be = cuda_host.HostBackend("float32")
        unit = cuda_mlp.Unit(cfg, 40, 0, backend=be)
        unit.run()
        for name, grid, block, smem in be.launches:
            seen.setdefault(name, set()).add((grid, block, smem))
    P = int(np.prod(cfg.grid_shape))
    rnn_seen = {}  # the RNNs' step kernels (kernels/rnn.cu), the residual's (residual.cu)
    for arch in ("rnn", "gru", "lstm", "residual"):
        rnn_cfg = _arch_config(arch, "float32", "both", depth=9)
        be = cuda_host.HostBackend("float32")
        cuda_gpu.run_unit(rnn_cfg, 40, 0, backend=be, path=None if arch == "residual" else "steps")
        for name, grid, block, smem in be.launches:
            rnn_seen.setdefault(name, set()).add((grid, block, smem))
    P_rnn = int(np.prod(rnn_cfg.grid_shape))
    for name, shapes in rnn_seen.items():
        if not name.startswith("vx_fill"):
            assert shapes == {(P_rnn, 64, 0)}, name
        seen.setdefault(name, shapes)  # (the MLP's kernels that Elman shares: checked below)
    for arch in ("rnn", "gru", "lstm"):  # the persistent kernels (kernels/persist*.cu)
        be = cuda_host.HostBackend("float32")
        cfg_p = _arch_config(arch, "float32", "both", depth=9)
        cuda_gpu.run_unit(cfg_p, 40, 0, backend=be)
        vectors = cuda_paths.PERSIST_KERNEL_VECTORS[arch]
        for name, grid, block, smem in be.launches:
            if "_persist_" in name:
                want = cfg_p.arch.gates * 40 * 40 + vectors[name.rsplit("_", 1)[1]] * 40
                assert smem == want * 4 and (grid, block) == (P_rnn, 64), name
            seen.setdefault(name, {(grid, block, smem)})
    for arch in ("mlp", "rnn", "gru", "lstm", "residual"):  # a captured body (cuda_graphs)
        cfg65 = make_config(f'network.architecture="{arch}"', 'engine.path="gemm"', width=8,
                            depth=65, mode="both")  # fmt: skip
        be = cuda_host.HostBackend("float32")
        cuda_gpu.run_unit(cfg65, 8, 0, backend=be)
        assert be.captures == 2, arch  # the forward body, the VJP's segments
        for name, grid, block, smem in be.launches:
            seen.setdefault(name, {(grid, block, smem)})
    assert seen["vx_clock_advance"] == {(1, 32, 0)}
    engine_kernels = {k for k in cuda_sources.kernel_signatures(cuda_sources.program("float32"))
                      if not k.startswith("vx_probe")}  # fmt: skip
    assert set(seen) == engine_kernels
    for name in ("vx_forward", "vx_recompute", "vx_restart", "vx_backward", "vx_grad_init"):
        assert seen[name] == {(P, 64, 0)}, name
    assert seen["vx_fused_forward"] == {(P, 64, 6 * 40 * 4)}
    assert seen["vx_fused_recompute"] == seen["vx_fused_backward"] == {(P, 64, 2 * 40 * 4)}


def test_mlp_unit_lowers_the_schedule(host, monkeypatch):
    """The MLP unit runs engines.schedule's operations and nothing else: the GEMM path
    one launch of each per operation, a segment's Z^l kept from its recomputation
    (drawn once more only for its last layer); the fused path in chunks of like
    operations (3 layers here), with the oracle's numbers."""
    cfg = make_config("engine.checkpoint=4", width=12, depth=14, mode="vjp",
                      precision="float64")  # fmt: skip
    L = cfg.depth
    plan = cuda_paths.vjp_plan(cfg, 12, "gemm")
    assert plan == schedule.Plan(4, False, True, False)
    assert cuda_paths.vjp_plan(cfg, 12, "fused") == plan._replace(keep_weights=False)
    ops = schedule.backward_ops(L, plan, base.record_index(cfg))
    count = {kind: sum(isinstance(op, kind) for op in ops)
             for kind in (schedule.Restart, schedule.Recompute, schedule.Backward)}  # fmt: skip
    be = host["float64"]
    del be.launches[:]
    unit = cuda_mlp.Unit(cfg, 12, 1, backend=be, path="gemm")
    assert unit.Zbuf.shape[0] == 4 and unit.cp.shape[0] == schedule.checkpoint_count(L, 4)
    unit.run()
    names = [name for name, *_ in be.launches]
    assert names.count("vx_forward") == L
    # (segments 8-12 and 4-8 replayed as a captured graph: their kernels read the layer on
    # the device, the _clocked variants; cuda_graphs)
    assert be.captures and names.count("vx_restart_clocked") == 2
    launched = lambda name: names.count(name) + names.count(name + "_clocked")  # noqa: E731
    assert launched("vx_restart") == count[schedule.Restart]
    assert launched("vx_recompute") == count[schedule.Recompute]
    assert launched("vx_backward") == count[schedule.Backward]
    draws = sum(isinstance(op, schedule.Backward) and op.draw for op in ops)
    assert draws == count[schedule.Restart]  # Z^stop of every segment
    weights = names.count("vx_fill_weights") + names.count("vx_fill_stream_clocked")
    assert weights == L + count[schedule.Recompute] + draws

    monkeypatch.setattr(cuda_paths, "FUSED_ZBUF_BYTES", 3 * 12 * 12 * 8)
    del be.launches[:]
    got = cuda_gpu.run_unit(cfg, 12, 1, path="fused", backend=be)
    names = [name for name, *_ in be.launches]
    segments = [(s, min(s + 4, L)) for s in range(0, L, 4)]  # 0-4, 4-8, 8-12, 12-14
    assert names.count("vx_fused_forward") == -(-L // 3)
    assert names.count("vx_fused_recompute") == sum(-(-(b - a - 1) // 3) for a, b in segments)
    assert names.count("vx_fused_backward") == sum(-(-(b - max(a, 1)) // 3) for a, b in segments)
    assert_same(got, numpy_ref.run_unit(cfg, 12, 1), TOL["float64"])


def test_device_memory_estimate_covers_the_buffers(host):
    for path in ("gemm", "fused"):
        cfg = make_config('engine.path="' + path + '"', width=24, depth=50, mode="both")
        unit = cuda_mlp.Unit(cfg, 24, 0, backend=host["float32"])
        arrays = [v for v in vars(unit).values() if isinstance(v, strict_arrays.DeviceArray)]
        held = sum(a.nbytes for a in arrays)
        estimate = cuda_paths.estimate_device_bytes(cfg, 24, path)
        assert held <= estimate <= 1.5 * held + 2**16, (path, held, estimate)


# ---------------------------------------------------------------- without a GPU


def test_registry_and_config():
    assert cuda_gpu.NAME == "cuda"
    assert isinstance(cuda_gpu.available(), bool)
    assert set(engines.available()) == {"numpy", "numba", "cuda"}
    cfg = make_config('measure.precision="tf32"', 'engine.backend="cuda"')
    assert cfg.precision == "tf32" and cfg.dtype == np.float32
    assert cuda_sources.program(cfg.precision).startswith("#define VX_REAL float")
    with pytest.raises(config.ConfigError, match="tf32.*cuda backend"):
        make_config('measure.precision="tf32"', 'engine.backend="numba"')
    assert cuda_paths.choose_path(make_config('engine.path="gemm"'), 8) == "gemm"
    assert cuda_paths.choose_path(make_config('engine.path="fused"'), 2000) == "fused"
    # the fused kernels' shared memory (6 N reals <= 46 KiB) and the GPU's free memory
    cuda_paths.check_unit(make_config(precision="float64"), 981, "fused")
    with pytest.raises(VxsimError, match="takes widths up to 981 in float64"):
        cuda_paths.check_unit(make_config(precision="float64"), 982, "fused")
    need = cuda_paths.estimate_device_bytes(make_config(), 512, "gemm")
    cuda_paths.check_unit(make_config(), 512, "gemm", lambda: 2 * need)
    with pytest.raises(VxsimError, match="GiB of GPU memory"):
        cuda_paths.check_unit(make_config(), 512, "gemm", lambda: need)


def _grid(points_per_axis, *extra, precision="float32"):
    return make_config(
        f"grid.sigma_w2={{start=0.5, stop=4.0, num={points_per_axis}}}",
        f"grid.sigma_b2={{start=0.0, stop=0.3, num={points_per_axis}}}",
        *extra, acts='["tanh"]', mode="jvp", precision=precision,
    )  # fmt: skip


def test_path_is_chosen_by_a_cost_model_in_points_and_width():
    """engine.path = "auto": the fused path (every block streams all of Z, P N^2 bytes a
    layer) for small grids or small widths, the GEMM path (three launches a layer, N^2
    bytes) for large ones; never a fused path that does not fit in shared memory."""
    small, schoenholz = _grid(4), _grid(40)  # 16 and 1,600 points
    assert int(np.prod(schoenholz.grid_shape)) == 1600
    assert cuda_paths.choose_path(small, 8) == cuda_paths.choose_path(small, 256) == "fused"
    assert cuda_paths.choose_path(schoenholz, 64) == "fused"
    assert cuda_paths.choose_path(schoenholz, 256) == "gemm"  # 7 waves of blocks reading Z
    assert not cuda_paths.fused_fits(_grid(2, precision="float64"), 982)
    assert cuda_paths.choose_path(_grid(2, precision="float64"), 982) == "gemm"
    assert cuda_paths.choose_path(_grid(2, precision="float64"), 128) == "fused"
    for width in (16, 64, 128, 256, 512, 1000):  # more points never favour the fused path
        paths = [cuda_paths.choose_path(_grid(n), width) for n in (2, 8, 20, 40, 80)]
        assert paths == sorted(paths, key=("fused", "gemm").index), (width, paths)
    for points in (16, 1600):  # nor does a wider network, at a given grid
        widths = [
            cuda_paths.layer_seconds("fused", points, w, 4, 3)
            / cuda_paths.layer_seconds("gemm", points, w, 4, 3)
            for w in (16, 64, 256, 1024)
        ]
        assert widths == sorted(widths), widths


def test_cost_model_against_the_paths_measured_on_an_h200():
    """cuda_paths.layer_seconds against the per-layer times gpu_check measured on an H200
    (tests/measured/h200_mlp_paths.csv: widths 32-1024, 16-4096 points, float32 and
    float64, 34 cases): each estimate within a factor 1.5 of the measured time; "auto"
    picks the faster path in all but 1 case, and no pick is 10 % slower than the other."""
    slower = []
    for row in measured("h200_mlp_paths.csv"):
        N, P, s = int(row["width"]), int(row["points"]), np.dtype(row["precision"]).itemsize
        took = {path: float(row[f"{path}_s"]) for path in ("fused", "gemm")}
        guess = {path: cuda_paths.layer_seconds(path, P, N, s, 3) for path in took}
        for path in took:
            assert 1 / 1.5 < guess[path] / took[path] < 1.5, (row, path, guess[path])
        slower.append(took[min(guess, key=guess.get)] / min(took.values()))
    assert len(slower) == 34
    assert sum(x > 1 for x in slower) <= 1 and max(slower) < 1.1, slower


def _cli(tmp_path, *args):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = tmp_path / "never.h5"
    cmd = [sys.executable, "-m", "vxsim", "sweep", *args, "-o", str(out)]
    r = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("vxsim: error: "), r.stderr
    assert not out.exists()
    return lines[0]


@pytest.mark.skipif(cuda_gpu.available(), reason="a CUDA GPU is available here")
def test_cli_without_gpu_one_line_errors(tmp_path):
    line = _cli(tmp_path, "--backend", "cuda", "--set", "network.depth=3")
    assert "backend 'cuda' is not available on this machine: " in line
    assert cuda_gpu.unavailable_reason() in line
    line = _cli(tmp_path, "--set", 'measure.precision="tf32"', "--set", "network.depth=3")
    assert 'measure.precision = "tf32" runs only on the cuda backend' in line
    line = _cli(tmp_path, "--set", 'measure.precision="tf32"', "--backend", "numba")
    assert "this run would use 'numba'" in line


@pytest.mark.slow
@needs_cxx
def test_gpu_check_script_dry_run(tmp_path):
    """scripts/gpu_check.sh --host: the device check itself, every section, on the CPU
    (tiny sizes), so that a broken script is found here and not on the GPU."""
    env = dict(os.environ, VXSIM_CACHE_DIR=str(tmp_path / "cache"))
    proc = subprocess.run(["bash", os.path.join(ROOT, "scripts", "gpu_check.sh"), "--host"],
                          env=env, capture_output=True, text=True, timeout=600)  # fmt: skip
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    assert re.search(r"gpu tests: \d+ passed, 0 failed", out), out
    assert "Traceback" not in out + proc.stderr
    for title in ("versions", "device", "GPU tests", "GEMM path throughput",
                  "fused path throughput", "path crossover", "other architectures",
                  "Schoenholz", "the CPU cores"):  # fmt: skip
        assert re.search(rf"^PASS +[\d.]+ s  {title}", out, re.M), (title, out)
    assert re.search(r"^python  3\.\d+\.\d+  numpy \S+  numba \S+", out, re.M), out
    assert re.search(r"auto picked the faster path in \d+ of \d+ cases", out), out
    for arch in ("residual", "rnn", "gru", "lstm"):
        assert re.search(rf"^{arch} +width \d+, .* k network-steps/s", out, re.M), (arch, out)
    assert re.search(r"engine [\d.]+ TFLOP/s effective, cupy.matmul [\d.]+ TFLOP/s, ratio", out)
    assert re.search(r"fused/gemm speedup at width \d+, jvp: [\d.]+", out)
    for arch in ("rnn", "gru", "lstm"):
        assert re.search(rf"{arch}: auto picked the faster path in \d+ of \d+ cases", out), out
    assert re.search(r"schoenholz2017_tanh: .* wall time [\d.]+ s", out)
    assert re.search(r"^ +2 +256 +A @ Z\.T( +[\d.]+){5}  True$", out, re.M), out  # bench_gemm_split
