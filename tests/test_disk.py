"""The disk: the file's size known before it exists, allocated as units land, and a disk
that fills mid-run stops the sweep with one line and every finished unit intact."""

import json
import os
import subprocess
import time

import h5py
import numpy as np
import pytest
from conftest import SLOW_KEYS, run_cli, small_config, spawn_cli, units_done

import vxsim
from vxsim import sweep
from vxsim.errors import VxsimError
from vxsim.store import hdf5, space

HUGE = ["--set", "monte_carlo.samples=100000", "--set", "network.depth=10000"]


def test_the_estimate_is_the_running_files_size(tmp_path, monkeypatch):
    cfg = small_config(
        network__width=[8, 16], network__depth=50, monte_carlo__samples=3,
        measure__mode="both", engine__backend="numpy",
    )  # fmt: skip
    monkeypatch.setattr(sweep, "finish", lambda output, config: None)  # keep the running file
    out = tmp_path / "running.h5"
    vxsim.run_sweep(cfg, str(out))
    size, estimate = out.stat().st_size, space.file_bytes(cfg)
    data = estimate - space.OVERHEAD
    assert data < size <= estimate, (size, estimate)


def test_storage_grows_with_the_units_written(tmp_path):
    """A 1.4 TB sweep's file starts at a few hundred kB: nothing is allocated eagerly."""
    cfg = vxsim.load_config(overrides=[HUGE[1], HUGE[3]])
    assert space.file_bytes(cfg) > 1e12
    path = tmp_path / "huge.h5"
    hdf5.create(str(path), cfg, "numpy", "cpu")
    assert path.stat().st_size < 2e6
    with h5py.File(path, "r") as f:
        assert f["log_q"].chunks is not None and f["log_q"].id.get_storage_size() == 0


def test_a_sweep_too_big_for_the_disk_is_refused_before_anything_is_written(tmp_path):
    r = run_cli("sweep", "-o", str(tmp_path / "out.h5"), *HUGE)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    total = space.file_bytes(vxsim.load_config(overrides=[HUGE[1], HUGE[3]]))
    assert f"needs about {space.human(2 * total)} of disk" in r.stderr, r.stderr
    assert f"({space.human(total)} of results" in r.stderr and "free" in r.stderr
    assert os.listdir(tmp_path) == []


def test_dry_run_says_units_memory_and_size_and_writes_nothing(tmp_path):
    out = tmp_path / "out.h5"
    r = run_cli("sweep", "--dry-run", "-o", str(out), "--json", *HUGE)
    assert r.returncode == 0, r.stderr
    plan = json.loads(r.stdout)
    assert plan["work_units"] == 100000 and len(plan["units"]) == 100000
    assert plan["file_bytes"] == space.file_bytes(vxsim.load_config(overrides=[HUGE[1], HUGE[3]]))
    assert plan["unit_memory_bytes"]["256"] > 0 and plan["free_bytes"] > 0
    text = run_cli("sweep", "--dry-run", "-o", str(out), *HUGE).stdout
    assert "work units    100000" in text and "results file  about 1.4 TB" in text
    assert not out.exists() and os.listdir(tmp_path) == []


def test_disk_errors_become_one_line():
    with pytest.raises(VxsimError, match="the disk quota is exceeded while writing x"):
        with space.writing("x", "writing"):
            raise OSError(122, "Disk quota exceeded")
    with pytest.raises(VxsimError, match="the disk is full while finishing y"):
        with space.writing("y", "finishing"):
            raise OSError("Can't write data (file write failed: ... No space left on device)")
    with pytest.raises(OSError, match="something else"):
        with space.writing("z", "writing"):
            raise OSError("something else")


@pytest.fixture
def small_disk(tmp_path):
    """A mount(size) that mounts a tmpfs of that size in tmp_path (root only)."""
    mounted = []

    def mount(size):
        where = tmp_path / f"fs{len(mounted)}"
        where.mkdir()
        if os.geteuid() != 0:
            pytest.skip(f"mounting a small tmpfs needs root (uid {os.geteuid()})")
        r = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
            capture_output=True,
            text=True,
        )
        if r.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
        mounted.append(where)
        return where

    yield mount
    for where in mounted:
        subprocess.run(["umount", "-l", str(where)], check=False)


def test_a_tiny_disk_is_refused_in_one_line(small_disk):
    fs = small_disk("200k")
    r = run_cli("sweep", "-o", str(fs / "default.h5"))
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "needs about" in r.stderr and "204.8 kB free" in r.stderr
    assert os.listdir(fs) == []


def test_a_disk_that_fills_mid_run_keeps_every_finished_unit(small_disk, slow_reference):
    fs = small_disk("6m")
    out = str(fs / "out.h5")
    p = spawn_cli("sweep", "-o", out, *SLOW_KEYS)
    deadline = time.time() + 300
    while units_done(out) < 1 and p.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    filler = fs / "filler"
    with open(filler, "wb") as fh:  # another program takes the rest of the disk
        try:
            while True:
                fh.write(b"\0" * 65536)
                fh.flush()
        except OSError:
            pass
    assert p.wait(timeout=300) == 2
    err = p.stderr.read()
    assert err.count("\n") == 1 and err.startswith("vxsim: error: the disk is full"), err
    done = units_done(out)
    assert 1 <= done < 6
    filler.unlink()
    p = spawn_cli("sweep", "-o", out, "--resume", *SLOW_KEYS)
    assert p.wait(timeout=300) == 0, p.stderr.read()
    with h5py.File(slow_reference, "r") as a, h5py.File(out, "r") as b:
        for name in a:
            if isinstance(a[name], h5py.Dataset):
                np.testing.assert_array_equal(b[name][...], a[name][...], err_msg=name)


def test_float32_storage_halves_the_records_and_keeps_rates_float64(tmp_path):
    keys = dict(
        network__width=16, network__depth=40, monte_carlo__samples=3,
        measure__mode="both", engine__backend="numpy",
    )  # fmt: skip
    wide = small_config(**keys)
    narrow = small_config(**keys, measure__storage="float32")
    a, b = str(tmp_path / "f64.h5"), str(tmp_path / "f32.h5")
    vxsim.run_sweep(wide, a)
    vxsim.run_sweep(narrow, b)
    per_layer = ("log_q", "corr", "log_tangent_norm", "log_grad_norm")
    with h5py.File(a, "r") as f64, h5py.File(b, "r") as f32:
        for name in per_layer:
            assert f64[name].dtype == np.float64 and f32[name].dtype == np.float32
            np.testing.assert_array_equal(f32[name][...], f64[name][...].astype(np.float32))
        for name in ("growth_rate_quenched", "growth_rate_annealed"):
            assert f32[name].dtype == np.float64
            # rates fitted to float32-rounded logs: relative error ~ 2^-24 of |log|
            np.testing.assert_allclose(f32[name][...], f64[name][...], rtol=1e-5, atol=1e-6)
        assert f32["diverged"].dtype == f64["diverged"].dtype
    records = sum(np.prod(h5py.File(a, "r")[n].shape) for n in per_layer) * 4
    assert space.file_bytes(wide) - space.file_bytes(narrow) == records
    assert "storage" not in json.loads(wide.canonical())["measure"]  # earlier files unchanged
