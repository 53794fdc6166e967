"""The Dask executor: same file as the single run, resumable, one-line errors."""

import os
import signal
import socket
import sys
import time

import h5py
import numpy as np
import pytest
from conftest import SLOW_KEYS, small_config, spawn_cli, units_done

import vxsim
from vxsim.store import hdf5

NEEDS_DASK = "dask[distributed] is not installed (pip install '.[test]' brings it)"


def _datasets(path):
    with h5py.File(path, "r") as f:
        return {name: f[name][...] for name in f if isinstance(f[name], h5py.Dataset)}


def _assert_same_datasets(a, b):
    """Every dataset of the two files bitwise equal (NaN where NaN)."""
    da, db = _datasets(a), _datasets(b)
    assert set(da) == set(db)
    for name in da:
        np.testing.assert_array_equal(da[name], db[name], err_msg=name, strict=True)


def test_dask_on_a_local_cluster_equals_the_single_run(tmp_path):
    """The default local cluster (numba engine in a worker process) writes the same file."""
    pytest.importorskip("distributed", reason=NEEDS_DASK)
    cfg = small_config(
        network__width=[16, 48],
        network__depth=40,
        monte_carlo__samples=3,
        measure__mode="both",
        engine__backend="numba",
    )
    single, spread = str(tmp_path / "single.h5"), str(tmp_path / "dask.h5")
    vxsim.run_sweep(cfg, single)
    vxsim.run_sweep(cfg, spread, executor="dask")
    _assert_same_datasets(single, spread)
    assert set(hdf5.unit_variables(cfg)) <= set(_datasets(spread))


def test_results_arriving_out_of_order_still_make_the_same_file(tmp_path, monkeypatch):
    """Two workers of a scheduler given by address: a big unit finishes after small ones."""
    distributed = pytest.importorskip("distributed", reason=NEEDS_DASK)
    cfg = small_config(
        network__width=[256, 8, 16],
        network__depth=40,
        monte_carlo__samples=1,
        engine__backend="numpy",
    )
    single, spread = str(tmp_path / "single.h5"), str(tmp_path / "dask.h5")
    vxsim.run_sweep(cfg, single)

    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        monkeypatch.setenv(name, "1")  # what the nanny sets in this process; undone after the test
    written = []
    real = hdf5.Writer.write_unit
    monkeypatch.setattr(
        hdf5.Writer,
        "write_unit",
        lambda self, wi, s, arrays: written.append((wi, s)) or real(self, wi, s, arrays),
    )
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, dashboard_address=":0", silence_logs=40
    ) as cluster:
        vxsim.run_sweep(cfg, spread, executor="dask", scheduler=cluster.scheduler_address)
    assert sorted(written) == [(0, 0), (1, 0), (2, 0)]  # each unit written once
    assert written != sorted(written), "the width-256 unit was expected to arrive last"
    _assert_same_datasets(single, spread)


def _worker_view():
    names = ("CUDA_VISIBLE_DEVICES", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")
    return {name: os.environ.get(name) for name in names}


def test_local_cluster_has_one_worker_per_gpu_each_pinned_to_its_own(monkeypatch):
    """The cuda engine's cluster: one worker per visible GPU (no GPU needed to check the pins)."""
    distributed = pytest.importorskip("distributed", reason=NEEDS_DASK)
    from vxsim import executors

    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,1")
    cores = len(os.sched_getaffinity(0))
    with executors.local_cluster("cuda") as cluster, distributed.Client(cluster) as client:
        views = list(client.run(_worker_view).values())
    share = str(max(1, cores // 2))
    assert sorted(views, key=lambda v: v["CUDA_VISIBLE_DEVICES"]) == [
        {"CUDA_VISIBLE_DEVICES": gpu, "OMP_NUM_THREADS": share, "OPENBLAS_NUM_THREADS": share}
        for gpu in ("1", "3")
    ]
    assert "OMP_NUM_THREADS" not in os.environ  # the nanny's settings do not leak into this process
    assert executors.worker_environments("numba") == [{}]  # CPU engines: one worker


def _group_members(pgid):
    """Process ids whose process group is ``pgid`` (Linux /proc)."""
    members = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    fields = fh.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                members.append(int(entry))
    return members


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads process groups in /proc")
def test_a_killed_dask_sweep_resumes_to_the_single_run(tmp_path, slow_reference):
    """SIGKILL the sweep's process mid-run: its workers go too, and --resume finishes the file."""
    pytest.importorskip("distributed", reason=NEEDS_DASK)
    out = str(tmp_path / "killed.h5")
    p = spawn_cli("sweep", "-o", out, "--executor", "dask", *SLOW_KEYS, start_new_session=True)
    start = time.time()
    while units_done(out) < 2 and p.poll() is None and time.time() - start < 300:
        time.sleep(0.01)
    assert len(_group_members(p.pid)) >= 2, "expected the sweep and its Dask worker processes"
    p.send_signal(signal.SIGKILL)  # the writer only: workers must not outlive it
    p.wait()
    done = units_done(out)
    assert 2 <= done < 6, f"{done} units done at the kill; make the sweep slower"
    deadline = time.time() + 60
    while _group_members(p.pid) and time.time() < deadline:
        time.sleep(0.2)
    left = _group_members(p.pid)
    for pid in left:  # leave nothing behind, then fail
        os.kill(pid, signal.SIGKILL)
    assert not left, f"Dask processes outlived the killed sweep: {left}"

    p = spawn_cli("sweep", "-o", out, "--resume", "--executor", "dask", *SLOW_KEYS)
    assert p.wait(timeout=300) == 0, p.stderr.read()
    _assert_same_datasets(slow_reference, out)


def _one_line_error(p, expected):
    assert p.wait(timeout=120) == 2
    err = p.stderr.read()
    assert err.startswith(f"vxsim: error: {expected}") and err.count("\n") == 1, err


def test_without_dask_installed_the_dask_executor_is_one_line(tmp_path):
    out = tmp_path / "none.h5"
    block = "import sys\nsys.modules['dask'] = sys.modules['distributed'] = None"
    p = spawn_cli("sweep", "-o", str(out), "--executor", "dask", *SLOW_KEYS, prelude=block)
    _one_line_error(p, "the dask executor needs dask and distributed: pip install 'vxsim[dask]'")
    assert not out.exists()


def test_an_unreachable_scheduler_is_one_line(tmp_path):
    pytest.importorskip("distributed", reason=NEEDS_DASK)
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "none.h5"
    address = f"tcp://127.0.0.1:{port}"
    p = spawn_cli(
        "sweep",
        "-o",
        str(out),
        "--executor",
        "dask",
        "--scheduler",
        address,
        *SLOW_KEYS,
        extra_env={"DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT": "2s"},
    )
    _one_line_error(p, f"cannot reach the Dask scheduler at {address}: ")
    assert not out.exists()

    p = spawn_cli("sweep", "-o", str(out), "--scheduler", address, *SLOW_KEYS)
    _one_line_error(p, "--scheduler needs --executor dask")
    assert not out.exists()
