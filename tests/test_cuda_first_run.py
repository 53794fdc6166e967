"""The first GPU run must not fail for trivial reasons (issue 17), checked without a GPU.

* the cuda engine imports and runs with Numba unusable (``sys.modules['numba'] =
  None`` in a subprocess: the device image's NumPy may be newer than its Numba
  supports), on the host build, with the oracle's numbers;
* ``available()`` needs NVRTC and cuBLAS, not only a visible GPU (CuPy 14's
  wheel brings neither), and says why in one log line, so ``--backend auto``
  falls back to the CPU (a fake ``cupy`` package in ``sys.modules``);
* float32 GEMMs are float32 whatever ``CUPY_TF32`` says, and TF32 is switched
  on only inside a tf32 unit, the previous setting restored (a fake compute-type
  API);
* every launch is a whole number of warps within the kernels' launch bound, on
  the GPU backend as on the host one.
"""

import json
import logging
import os
import subprocess
import sys
import types

import numpy as np
import pytest

from vxsim import engines
from vxsim.engines import cuda_backend, cuda_host, cuda_sources
from vxsim.errors import VxsimError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

WITHOUT_NUMBA = r"""
import json, sys
sys.modules["numba"] = None  # "import numba" raises ImportError, as a refused NumPy does
sys.path.insert(0, "tests")
import numpy as np
from oracle_cases import make_config
from vxsim import numba_optional
from vxsim.engines import cuda_gpu, cuda_host, numpy_ref
import vxsim.engines

out = {"numba_error": numba_optional.NUMBA_ERROR, "available": vxsim.engines.available(),
       "auto": vxsim.engines.auto(), "cases": {}}
for label, extra, precision in (("mlp gemm", 'engine.path="gemm"', "float64"),
                                ("mlp fused", 'engine.path="fused"', "float32"),
                                ("rnn", 'network.architecture="rnn"', "float64")):
    cfg = make_config(extra, width=12, depth=8, precision=precision, mode="both")
    be = cuda_host.HostBackend(precision, strict=True)
    got, want = cuda_gpu.run_unit(cfg, 12, 1, backend=be), numpy_ref.run_unit(cfg, 12, 1)
    out["cases"][label] = max(float(np.nanmax(np.abs(got[k] - want[k]))) for k in want)
out["numba_loaded"] = [m for m in sys.modules if m.startswith("numba") and sys.modules[m]]
print(json.dumps(out))
"""


@pytest.mark.skipif(cuda_host.compiler() is None, reason="no C++ compiler on PATH")
def test_cuda_engine_imports_and_runs_without_numba(tmp_path):
    env = dict(os.environ, PYTHONPATH=ROOT)
    env.setdefault("VXSIM_CACHE_DIR", str(tmp_path / "cache"))
    proc = subprocess.run([sys.executable, "-c", WITHOUT_NUMBA], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "import of numba halted" in out["numba_error"]
    assert out["numba_loaded"] == []
    assert out["available"]["numba"] is False and out["available"]["numpy"] is True
    assert out["auto"] == "numpy"  # no GPU here either
    for label, err in out["cases"].items():
        assert err < {"mlp fused": 2e-4}.get(label, 1e-8), (label, err)


# ---------------------------------------------------------------- a fake CuPy


def _fake_cupy(monkeypatch, nvrtc=True, cublas=True, visible=True, compute_api=True):
    """A ``cupy`` package in sys.modules with just what the engine's checks touch."""
    cupy = types.ModuleType("cupy")
    cupy.__version__ = "14.2.0"
    cupy.__path__ = []

    def fail(what):
        def call(*args):
            raise RuntimeError(f"CuPy failed to load {what}: OSError: cannot open shared object")

        return call

    nv = types.SimpleNamespace(getVersion=(lambda: (13, 0)) if nvrtc else fail("libnvrtc.so.13"))
    device = types.SimpleNamespace(
        get_cublas_handle=(lambda: 1234) if cublas else fail("libcublas.so.13")
    )
    cupy.cuda = types.SimpleNamespace(is_available=lambda: visible, nvrtc=nv, device=device)
    core = types.ModuleType("cupy._core")
    core.__path__ = []
    core.types = {np.dtype(np.float32): 0}  # COMPUTE_TYPE_TBD
    linalg = types.ModuleType("cupy._core._routines_linalg")
    linalg.COMPUTE_TYPE_TBD, linalg.COMPUTE_TYPE_DEFAULT, linalg.COMPUTE_TYPE_TF32 = 0, 1, 7
    core.set_calls = []

    def get_compute_type(dtype):  # CuPy's: TBD resolves from CUPY_TF32 on first use
        if core.types[np.dtype(dtype)] == 0:
            tf32 = int(os.environ.get("CUPY_TF32", "0")) > 0
            core.types[np.dtype(dtype)] = 7 if tf32 else 1
        return core.types[np.dtype(dtype)]

    def set_compute_type(dtype, mode):
        core.set_calls.append(mode)
        core.types[np.dtype(dtype)] = mode

    core.get_compute_type, core.set_compute_type = get_compute_type, set_compute_type
    cupy._core = core
    monkeypatch.setitem(sys.modules, "cupy", cupy)
    monkeypatch.setitem(sys.modules, "cupy._core", core)
    if compute_api:
        core._routines_linalg = linalg
        monkeypatch.setitem(sys.modules, "cupy._core._routines_linalg", linalg)
    else:
        monkeypatch.setitem(sys.modules, "cupy._core._routines_linalg", None)
    monkeypatch.setattr(cuda_backend, "_said", set())
    return cupy


@pytest.mark.parametrize("missing", ["NVRTC", "cuBLAS"])
def test_auto_falls_back_with_one_line_when_a_cuda_library_is_missing(monkeypatch, caplog, missing):
    _fake_cupy(monkeypatch, nvrtc=missing != "NVRTC", cublas=missing != "cuBLAS")
    why = cuda_backend.unavailable_reason()
    assert f"cannot load {missing}" in why and "vxsim[gpu]" in why and "\n" not in why
    with caplog.at_level(logging.WARNING, logger="vxsim"):
        assert engines.auto() in ("numba", "numpy")
        assert engines.auto() in ("numba", "numpy")
        assert cuda_backend.available() is False
    lines = [r.getMessage() for r in caplog.records if r.name == "vxsim"]
    assert len(lines) == 1 and why in lines[0], lines
    with pytest.raises(VxsimError, match=f"not available on this machine: .*{missing}"):
        engines.get("cuda")


def test_available_with_every_cuda_library(monkeypatch, caplog):
    _fake_cupy(monkeypatch)
    with caplog.at_level(logging.WARNING, logger="vxsim"):
        assert cuda_backend.unavailable_reason() is None and cuda_backend.available()
    assert not caplog.records


def test_no_log_line_where_cupy_is_not_installed(monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "cupy", None)
    monkeypatch.setattr(cuda_backend, "_said", set())
    with caplog.at_level(logging.WARNING, logger="vxsim"):
        assert cuda_backend.available() is False
    assert "cupy cannot be imported" in cuda_backend.unavailable_reason()
    assert not caplog.records
    _fake_cupy(monkeypatch, visible=False)
    with caplog.at_level(logging.WARNING, logger="vxsim"):
        assert cuda_backend.available() is False  # CuPy there, no GPU: said once
    assert [r.getMessage() for r in caplog.records] == [
        "the cuda backend is not usable here: no CUDA GPU is visible to CuPy"
    ]


# ---------------------------------------------------------------- TF32


def _gpu_backend_on(cupy):
    """A GpuBackend without a GPU: only the attributes gemm_precision and launch use."""
    be = object.__new__(cuda_backend.GpuBackend)
    be.cupy = be.xp = cupy
    be.functions, be.checked, be.signatures, be.real = {}, set(), {}, np.dtype(np.float32)
    return be


@pytest.mark.parametrize("env", [None, "0", "1"])
def test_float32_gemms_are_float32_whatever_cupy_tf32_says(monkeypatch, env):
    if env is None:
        monkeypatch.delenv("CUPY_TF32", raising=False)
    else:
        monkeypatch.setenv("CUPY_TF32", env)
    cupy = _fake_cupy(monkeypatch)
    core = cupy._core
    be = _gpu_backend_on(cupy)
    before = core.get_compute_type(np.float32)
    assert before == (7 if env == "1" else 1)
    with be.gemm_precision(False):
        assert core.get_compute_type(np.float32) == 1  # COMPUTE_TYPE_DEFAULT: strict float32
    assert core.get_compute_type(np.float32) == before  # restored
    with be.gemm_precision(True):
        assert core.get_compute_type(np.float32) == 7  # COMPUTE_TYPE_TF32
    assert core.get_compute_type(np.float32) == before
    with pytest.raises(KeyError), be.gemm_precision(False):
        {}["a unit that fails"]
    assert core.get_compute_type(np.float32) == before  # restored after an error too


def test_a_cupy_without_the_compute_type_switch(monkeypatch):
    cupy = _fake_cupy(monkeypatch, compute_api=False)
    be = _gpu_backend_on(cupy)
    with be.gemm_precision(False):  # nothing to leak: float32 runs go on
        pass
    assert cupy._core.set_calls == []
    with pytest.raises(VxsimError, match="cannot switch GEMMs to TF32"):
        with be.gemm_precision(True):
            pass


# ---------------------------------------------------------------- launches


@pytest.mark.parametrize("block", [0, 16, 48, 96 + 1, 512, 1024])
def test_gpu_launches_are_whole_warps_within_the_launch_bound(monkeypatch, block):
    be = _gpu_backend_on(_fake_cupy(monkeypatch))
    with pytest.raises(AssertionError, match="threads per block"):
        be.launch("vx_forward", 4, block, ())
    with pytest.raises(AssertionError, match="grid of 0 blocks"):
        be.launch("vx_forward", 0, 64, ())


def test_launch_bound_is_stated_once():
    """Python's bound is the kernels' (the program prefix defines VX_MAX_THREADS for
    common.cuh's __launch_bounds__), and every launch the engine makes is within it."""
    from vxsim.engines import cuda_paths

    text = cuda_sources.program("float64")
    assert f"#define VX_MAX_THREADS {cuda_sources.MAX_BLOCK_THREADS}\n" in text
    assert "__launch_bounds__(VX_MAX_THREADS)" in text
    assert cuda_paths.MAX_THREADS <= cuda_sources.MAX_BLOCK_THREADS
    assert cuda_backend.FILL_THREADS <= cuda_sources.MAX_BLOCK_THREADS
    assert cuda_paths.threads_for(10**6) == cuda_paths.MAX_THREADS
    cuda_sources.check_launch("vx_forward", 1, cuda_sources.MAX_BLOCK_THREADS)


# ---------------------------------------------------------------- gpu_check's report


def _gpu_check():
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "gpu_check_under_test", os.path.join(ROOT, "scripts", "gpu_check.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gpu_check_names_the_first_failure_and_the_sticky_cuda_error(capsys):
    """A kernel fault poisons CUDA's context: the report says which section failed
    first, that later failures may only echo it, and how to rerun that section with
    CUDA_LAUNCH_BLOCKING=1; sections that could not run say SKIPPED, not FAIL."""
    gc = _gpu_check()
    args = types.SimpleNamespace(host=False)
    with gc.section("versions", 100, 0) as go:
        assert go
    with gc.section(gc._TITLES["gemm"], 100, 0) as go:
        raise RuntimeError("cudaErrorIllegalAddress: an illegal memory access was encountered")
    with gc.section(gc._TITLES["fused"], 100, 0) as go:
        raise RuntimeError("cudaErrorIllegalAddress: an illegal memory access was encountered")
    with gc.section(gc._TITLES["schoenholz"], 100, 10**6) as go:
        assert not go  # over the budget
    with gc.section(gc._TITLES["crossover"], 100, 0, requires=lambda: False) as go:
        assert not go
    assert gc.summary(args) == 1
    out = capsys.readouterr().out
    assert f"(after the CUDA error in '{gc._TITLES['gemm']}': this may only echo it)" in out
    report = out[out.index("== summary") :]
    statuses = [line.split()[0] for line in report.splitlines()[1:6]]
    assert statuses == ["PASS", "FAIL", "FAIL", "SKIPPED", "SKIPPED"]
    assert f"first failure: {gc._TITLES['gemm']}" in report
    assert "CUDA_LAUNCH_BLOCKING=1 bash scripts/gpu_check.sh --only gemm" in report


def test_gpu_check_reports_an_interrupted_run(capsys):
    """gpu_check.sh's time limit sends SIGINT: the running section FAILs as interrupted,
    the rest are SKIPPED, and the summary is still printed."""
    gc = _gpu_check()
    with gc.section(gc._TITLES["tests"], 100, 0):
        raise KeyboardInterrupt
    with gc.section(gc._TITLES["gemm"], 100, 0) as go:
        assert not go
    assert gc.summary(types.SimpleNamespace(host=True)) == 1
    report = capsys.readouterr().out.split("== summary")[1]
    assert "interrupted by the time limit" in report
    assert "the time limit was reached" in report
