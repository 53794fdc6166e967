"""The same numbers whatever the thread variables: sweeps in fresh processes.

Dask's nanny, Slurm (``vxsim slurm --cpus-per-task``) and users set
OPENBLAS_NUM_THREADS, OMP_NUM_THREADS and NUMBA_NUM_THREADS; a multithreaded
BLAS GEMM's bits depend on its thread count. Every engine runs its units with
BLAS on one thread and splits rows only at verified cuts (``engines.gemm``),
so files written under any of these settings must be bit-identical. Which
BLAS kernel runs (the CPU, or OPENBLAS_CORETYPE) does change the bits: the
file records it (``numerics``) and resume and merge refuse to mix two.
"""

import json
import subprocess
import sys

import h5py
import numpy as np
import pytest
from conftest import spawn_cli

import vxsim
from vxsim.errors import VxsimError

pytestmark = pytest.mark.slow

# Removed from every run's environment first: the runs differ only as each says.
THREAD_VARIABLES = (
    "OPENBLAS_NUM_THREADS",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "NUMBA_NUM_THREADS",
    "OPENBLAS_CORETYPE",
    "OPENBLAS_L2_SIZE",
)

# Width 64 runs the fused kernels, 400 the GEMM path (its forward GEMMs, 96 x 400
# x 400, over gemm.MIN_FLOPS: rows split at verified cuts, on Numba's threads where
# numba_gemm takes them); the LSTM and the Elman RNN run engines.numba_rnn's
# stacked-gate GEMMs (the Elman net's, 192 x 320 x 320, split the same way) and
# fused step kernels.
SWEEPS = {
    "mlp": [
        "network.width=[64, 400]",
        'network.activation=["tanh", "relu"]',
        "network.depth=30",
        "grid.sigma_w2=[0.8, 1.2, 1.6, 2.0, 2.4, 2.8, 3.2, 3.6]",
        'measure.mode="both"',
        "monte_carlo.samples=1",
    ],
    "rnn": [
        'network.architecture="rnn"',
        "network.width=[320]",
        'network.activation=["tanh", "relu"]',
        "network.depth=25",
        "grid.sigma_w2=[0.8, 1.2, 1.6, 2.0, 2.4, 2.8, 3.2, 3.6]",
        "grid.sigma_u2=[0.5, 1.0]",
        'measure.mode="both"',
        "monte_carlo.samples=1",
    ],
    "lstm": [
        'network.architecture="lstm"',
        "network.width=[160]",
        'network.activation=["tanh"]',
        "network.depth=20",
        "grid.sigma_w2=[0.8, 1.6, 2.4, 3.2]",
        'measure.mode="both"',
        "monte_carlo.samples=1",
    ],
}


def _env(**values):
    env = dict.fromkeys(THREAD_VARIABLES)
    env.update(values)
    return env


def _sweep(path, name, env):
    args = ["sweep", "-o", str(path), "--backend", "numba", "-q"]
    for item in SWEEPS[name]:
        args += ["--set", item]
    p = spawn_cli(*args, extra_env=env)
    assert p.wait(timeout=600) == 0, p.stderr.read()


def _contents(path):
    with h5py.File(path, "r") as f:
        data = {k: f[k][...] for k in f if isinstance(f[k], h5py.Dataset)}
        data.update({f"analysis/{k}": f["analysis"][k][...] for k in f.get("analysis", {})})
        return data, str(f.attrs["numerics"])


def _blas_kernel(env):
    """The BLAS kernel a fresh process would run under ``env`` (threadpoolctl), or None."""
    code = (
        "import json, numpy, threadpoolctl\n"
        "print(json.dumps([i for i in threadpoolctl.threadpool_info() if i['user_api'] == 'blas']))"
    )
    full = {k: v for k, v in __import__("os").environ.items() if k not in env}
    full.update({k: v for k, v in env.items() if v is not None})
    out = subprocess.run([sys.executable, "-c", code], env=full, capture_output=True, text=True)
    libs = json.loads(out.stdout)
    arch = {lib.get("architecture") for lib in libs if lib.get("internal_api") == "openblas"}
    return arch.pop() if len(arch) == 1 else None


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """Both sweeps with every thread variable unset."""
    folder = tmp_path_factory.mktemp("same")
    files = {}
    for name in SWEEPS:
        files[name] = folder / f"{name}-base.h5"
        _sweep(files[name], name, _env())
    return files


VARIANTS = {
    "OPENBLAS_NUM_THREADS=1": {"OPENBLAS_NUM_THREADS": "1"},
    "OMP_NUM_THREADS=1": {"OMP_NUM_THREADS": "1"},
    "NUMBA_NUM_THREADS=1": {"NUMBA_NUM_THREADS": "1"},
    # More lanes than this machine's cores may have: GEMM rows in 3 blocks on Numba's
    # threads (numba_gemm), the fused kernels' points over 3 lanes.
    "NUMBA_NUM_THREADS=3": {"NUMBA_NUM_THREADS": "3"},
    "all three 1": {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"},
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_thread_variables_change_no_bit(variant, reference, tmp_path):
    for name, ref in reference.items():
        out = tmp_path / f"{name}.h5"
        _sweep(out, name, _env(**VARIANTS[variant]))
        want, want_numerics = _contents(ref)
        got, got_numerics = _contents(out)
        assert got_numerics == want_numerics
        assert set(got) == set(want)
        for key in want:
            np.testing.assert_array_equal(got[key], want[key], err_msg=f"{name}: {key}")


def test_openblas_coretype_set_to_the_detected_kernel_changes_no_bit(reference, tmp_path):
    kernel = _blas_kernel(_env())
    if kernel is None:
        pytest.skip("NumPy here does not run on exactly one OpenBLAS: no OPENBLAS_CORETYPE")
    out = tmp_path / "mlp.h5"
    _sweep(out, "mlp", _env(OPENBLAS_CORETYPE=kernel))
    want, _ = _contents(reference["mlp"])
    got, _ = _contents(out)
    for key in want:
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)


def test_another_blas_kernel_is_recorded_and_never_mixed(reference, tmp_path):
    """OPENBLAS_CORETYPE naming another kernel: the file says so, and resuming
    or merging it with the reference's numbers is refused with one line."""
    here = _blas_kernel(_env())
    if here is None:
        pytest.skip("NumPy here does not run on exactly one OpenBLAS: no OPENBLAS_CORETYPE")
    for other in ("Sandybridge", "Nehalem", "Haswell"):  # kernels every x86-64 CPU runs
        if other.lower() != here.lower() and _blas_kernel(_env(OPENBLAS_CORETYPE=other)) == other:
            break
    else:
        pytest.skip("this OpenBLAS cannot be made to run another kernel (not x86-64?)")
    out = tmp_path / "other.h5"
    _sweep(out, "mlp", _env(OPENBLAS_CORETYPE=other))
    _, numerics = _contents(out)
    _, numerics_here = _contents(reference["mlp"])
    assert other in numerics and numerics != numerics_here
    with pytest.raises(VxsimError, match="its numbers would differ in the last bits"):
        vxsim.run_sweep(
            vxsim.load_config(overrides=SWEEPS["mlp"]), str(out), backend="numba", resume=True
        )
