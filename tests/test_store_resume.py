"""HDF5 results: layout for xarray, resume after SIGKILL, refusals."""

import json
import os
import signal
import threading
import time

import h5py
import numpy as np
import pytest
from conftest import SLOW_KEYS, small_config, spawn_cli, units_done

import vxsim
from vxsim.errors import VxsimError
from vxsim.store.hdf5 import open_reader
from vxsim.store.summary import summarise_file


def _contents(path):
    """Every dataset and the physics attributes (not timestamps or backend)."""
    with h5py.File(path, "r") as f:
        data = {name: f[name][...] for name in f if isinstance(f[name], h5py.Dataset)}
        attrs = {k: f.attrs[k] for k in ("config", "seed", "status", "vxsim_version")}
    return data, attrs


def _assert_same_file(a, b):
    da, aa = _contents(a)
    db, ab = _contents(b)
    assert aa == ab
    assert set(da) == set(db)
    for name in da:
        np.testing.assert_array_equal(da[name], db[name], err_msg=name)


def _wait_for(predicate, timeout=120):
    start = time.time()
    while not predicate() and time.time() - start < timeout:
        time.sleep(0.005)


@pytest.mark.parametrize(
    "kill_when", ["file_created", "after_first_unit", "inside_fourth_unit", "writing_third_unit"]
)
def test_sigkill_and_resume_equals_uninterrupted(tmp_path, slow_reference, kill_when):
    """Killed at several moments (before any unit, between units, inside one), then resumed."""
    out = str(tmp_path / "killed.h5")
    p = spawn_cli("sweep", "-o", out, *SLOW_KEYS)
    if kill_when == "file_created":
        _wait_for(lambda: os.path.exists(out))
    elif kill_when == "after_first_unit":
        _wait_for(lambda: units_done(out) >= 1)
    elif kill_when == "inside_fourth_unit":
        _wait_for(lambda: units_done(out) >= 3)
        time.sleep(0.2)
    else:  # as close as polling gets to the moment the third unit's data land
        _wait_for(lambda: units_done(out) >= 2)
        time.sleep(0.45)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert units_done(out) < 6, "the sweep finished before it could be killed; make it slower"

    p = spawn_cli("sweep", "-o", out, "--resume", *SLOW_KEYS)
    assert p.wait(timeout=300) == 0, p.stderr.read()
    _assert_same_file(slow_reference, out)


def test_resume_computes_no_finished_unit_twice(tmp_out, monkeypatch):
    cfg = small_config(
        network__width=16, network__depth=20, monte_carlo__samples=3, engine__backend="numpy"
    )
    from vxsim.engines import numpy_ref

    calls = []
    real = numpy_ref.run_unit

    def counting(config, width, sample):
        calls.append(sample)
        if len(calls) == 2:
            raise KeyboardInterrupt  # dies during the second unit
        return real(config, width, sample)

    monkeypatch.setattr(numpy_ref, "run_unit", counting)
    with pytest.raises(KeyboardInterrupt):
        vxsim.run_sweep(cfg, tmp_out)
    assert summarise_file(tmp_out)["units_done"] == 1
    monkeypatch.setattr(numpy_ref, "run_unit", lambda c, w, s: calls.append(s) or real(c, w, s))
    vxsim.run_sweep(cfg, tmp_out, resume=True)
    assert calls == [0, 1, 1, 2]
    assert summarise_file(tmp_out)["status"] == "complete"


def test_a_file_begun_before_swmr_still_resumes(tmp_out, monkeypatch):
    """A running file in the old format (superblock v0, no SWMR) is finished plainly."""
    from vxsim.engines import numpy_ref
    from vxsim.store import swmr

    cfg = small_config(
        network__width=16, network__depth=20, monte_carlo__samples=3, engine__backend="numpy"
    )
    ref = tmp_out + ".ref.h5"
    vxsim.run_sweep(cfg, ref)
    real = numpy_ref.run_unit
    monkeypatch.setattr(swmr, "RUNNING_LIBVER", "earliest")
    monkeypatch.setattr(
        numpy_ref, "run_unit", lambda c, w, s: real(c, w, s) if s < 1 else 1 / 0
    )  # dies in the second unit
    with pytest.raises(ZeroDivisionError):
        vxsim.run_sweep(cfg, tmp_out)
    assert open(tmp_out, "rb").read(9)[8] == 0  # superblock v0: SWMR cannot write it
    monkeypatch.undo()
    vxsim.run_sweep(cfg, tmp_out, resume=True)
    _assert_same_file(ref, tmp_out)


def test_resume_with_other_config_is_refused(tmp_out):
    cfg = small_config(network__width=16, network__depth=20, monte_carlo__samples=1)
    vxsim.run_sweep(cfg, tmp_out, backend="numpy")
    other = small_config(network__width=16, network__depth=30, monte_carlo__samples=1)
    with pytest.raises(VxsimError, match=r"network\.depth \(file: 20, now: 30\)"):
        vxsim.run_sweep(other, tmp_out, backend="numpy", resume=True)


def test_existing_output_is_not_overwritten(tmp_out):
    cfg = small_config(network__width=8, network__depth=5, monte_carlo__samples=1)
    vxsim.run_sweep(cfg, tmp_out, backend="numpy")
    before = open(tmp_out, "rb").read()
    with pytest.raises(VxsimError, match="exists"):
        vxsim.run_sweep(cfg, tmp_out, backend="numpy")
    assert open(tmp_out, "rb").read() == before
    vxsim.run_sweep(cfg, tmp_out, backend="numpy", overwrite=True)


def test_xarray_opens_with_coordinates(tmp_out):
    cfg = small_config(
        network__width=[8, 16],
        network__depth=12,
        monte_carlo__samples=2,
        measure__mode="both",
        measure__record={"every": 3},
    )
    vxsim.run_sweep(cfg, tmp_out, backend="numpy")
    ds = vxsim.open_results(tmp_out)
    assert list(ds["log_q"].dims) == [
        "width",
        "activation",
        "sigma_w2",
        "sigma_b2",
        "sample",
        "layer",
    ]
    assert ds["width"].values.tolist() == [8, 16]
    assert ds["activation"].values.tolist() == ["tanh", "relu"]
    assert ds["layer"].values.tolist() == [3, 6, 9, 12]
    np.testing.assert_allclose(ds["sigma_w2"].values, np.linspace(0.5, 4.0, 15))
    assert set(ds["mode"].values.tolist()) == {"jvp", "vjp"}
    rate = ds["growth_rate_quenched"].sel(mode="jvp", width=16, activation="relu")
    assert rate.dims == ("sigma_w2", "sigma_b2")
    assert json.loads(ds.attrs["config"])["network"]["depth"] == 12
    for key in ("vxsim_version", "backend", "seed", "created", "config"):
        assert key in ds.attrs
    with h5py.File(tmp_out) as f:  # the finished file is chunked and compressed
        assert f["log_q"].compression == "gzip" and f["log_q"].chunks is not None


def test_a_second_writer_is_refused_and_a_reader_sees_the_finished_prefix(tmp_path):
    """The writer is held after its second unit (until the test opens a gate), so the
    second writers and the readers always meet it running, however fast the machine."""
    out = str(tmp_path / "live.h5")
    gate = tmp_path / "gate"
    hold = (
        "import os, time\n"
        "from vxsim.store import hdf5\n"
        "_write, _n = hdf5.Writer.write_unit, []\n"
        "def _held(self, *args):\n"
        "    _write(self, *args)\n"
        "    _n.append(1)\n"
        f"    while len(_n) == 2 and not os.path.exists({str(gate)!r}):\n"
        "        time.sleep(0.01)\n"
        "hdf5.Writer.write_unit = _held\n"
    )
    p = spawn_cli("sweep", "-o", out, *SLOW_KEYS, prelude=hold)
    try:
        _wait_for(lambda: units_done(out) >= 2)
        for flag in ("--resume", "--overwrite"):
            second = spawn_cli("sweep", "-o", out, flag, *SLOW_KEYS)
            assert second.wait(timeout=120) == 2
            assert "open in another process" in second.stderr.read()
        summary = summarise_file(out)  # read beside the writer
        assert summary["status"] == "running" and summary["units_done"] == 2
        with h5py.File(out, "r", swmr=True) as f:  # a plain h5py SWMR reader, no vxsim
            done = f["completed"][0].astype(bool)
            finished = f["log_q"][0, :, :, :, done]
        assert done.sum() == 2 and np.all(np.isfinite(finished))  # flagged units are whole
        assert p.poll() is None  # still held: the writer was running all along
    finally:
        gate.touch()
    assert p.wait(timeout=300) == 0, p.stderr.read()
    assert units_done(out) == 6


def _unit_axes(ds):
    """Positions of the width and sample axes of a per-unit variable, from its dimension scales."""
    names = [ds.dims[i][0].name.rsplit("/", 1)[-1] for i in range(ds.ndim)]
    return names.index("width"), names.index("sample")


def _finished_units(f):
    """{(width_index, sample): {variable: that unit's data}} for every unit flagged complete."""
    done = f["completed"][...].astype(bool)
    arrays = {name: f[name] for name in ("log_q", "corr", "log_tangent_norm", "log_grad_norm")}
    out = {}
    for wi, s in zip(*np.nonzero(done), strict=True):
        unit = {}
        for name, ds in arrays.items():
            index = [slice(None)] * ds.ndim
            w_axis, s_axis = _unit_axes(ds)
            index[w_axis], index[s_axis] = wi, s
            unit[name] = ds[tuple(index)]
        out[int(wi), int(s)] = unit
    return out


def test_a_reader_during_a_running_sweep_sees_a_consistent_prefix(tmp_path, slow_reference):
    """Poll a running sweep (SWMR): finished units only grow, and each is already final."""
    out = str(tmp_path / "watched.h5")
    p = spawn_cli("sweep", "-o", out, *SLOW_KEYS)
    seen = []  # (status, {unit: data}) per read
    while p.poll() is None:
        try:
            f = open_reader(out)
        except FileNotFoundError:
            continue
        with f:
            seen.append((f.attrs["status"], _finished_units(f)))
        time.sleep(0.02)
    assert p.returncode == 0, p.stderr.read()
    _assert_same_file(slow_reference, out)  # the reads did not disturb the writer

    with h5py.File(out, "r") as f:
        final = _finished_units(f)
    running = [units for status, units in seen if status == "running"]
    counts = [len(units) for units in running]
    assert len(set(counts)) >= 3, f"too few distinct moments seen: {counts}"
    for before, after in zip(running, running[1:], strict=False):
        assert set(before) <= set(after)  # a finished unit stays finished
    for units in running:
        for unit, data in units.items():
            for name, values in data.items():
                assert np.all(np.isfinite(values)), (unit, name)
                np.testing.assert_array_equal(values, final[unit][name], err_msg=f"{unit} {name}")


def test_a_killed_writer_leaves_marks_that_resume_clears(tmp_path, slow_reference):
    """SIGKILL leaves the superblock marked open for SWMR writing; resume clears it and finishes."""
    out = str(tmp_path / "marked.h5")
    p = spawn_cli("sweep", "-o", out, *SLOW_KEYS)
    _wait_for(lambda: units_done(out) >= 1)
    p.send_signal(signal.SIGKILL)
    p.wait()
    with open(out, "rb") as fh:
        assert fh.read(12)[11] == 0x5  # status flags: open for writing | open for SWMR writing
    with pytest.raises(OSError, match="already open for write"):
        h5py.File(out, "r")  # why readers fall back to SWMR and the writer clears the marks
    assert 1 <= summarise_file(out)["units_done"] < 6  # still readable as an SWMR reader

    p = spawn_cli("sweep", "-o", out, "--resume", *SLOW_KEYS)
    assert p.wait(timeout=300) == 0, p.stderr.read()
    _assert_same_file(slow_reference, out)


def test_a_reader_waits_out_a_file_caught_mid_close_and_not_one_truncated_for_good(tmp_path):
    """While its writer closes it, a file's superblock can already name an end the file
    has not reached yet ("truncated file"): open_reader tries again until it has, and
    raises the error for a file that stays truncated."""
    path = tmp_path / "closing.h5"
    with h5py.File(path, "w") as f:
        f["x"] = np.arange(1000.0)
    whole = path.read_bytes()
    path.write_bytes(whole[:-48])
    with pytest.raises(OSError, match="truncated file"):
        h5py.File(path, "r")

    def finish_close():
        time.sleep(0.2)
        with open(path, "ab") as fh:
            fh.write(whole[-48:])

    writer = threading.Thread(target=finish_close)
    writer.start()
    with open_reader(str(path), wait=60.0) as f:
        np.testing.assert_array_equal(f["x"][()], np.arange(1000.0))
    writer.join()
    path.write_bytes(whole[:-48])
    start = time.monotonic()
    with pytest.raises(OSError, match="truncated file"):
        open_reader(str(path), wait=0.3)
    assert time.monotonic() - start >= 0.3


def test_lookup3_known_answers():
    """Bob Jenkins' published lookup3 vectors, and the checksum of a real HDF5 superblock."""
    from vxsim.store.swmr import lookup3

    assert lookup3(b"") == 0xDEADBEEF
    assert lookup3(b"Four score and seven years ago") == 0x17770551
    assert lookup3(b"Four score and seven years ago", 1) == 0xCD628161


def test_lookup3_matches_hdf5_superblock_checksum(tmp_path):
    from vxsim.store.swmr import lookup3

    path = str(tmp_path / "sb.h5")
    with h5py.File(path, "w", libver="latest") as f:
        f["x"] = np.arange(3)
    block = open(path, "rb").read(48)
    assert block[8] >= 2 and block[9] == 8  # superblock v2+, 8-byte offsets: 44 bytes + checksum
    assert int.from_bytes(block[44:48], "little") == lookup3(block[:44])


def test_a_killed_writers_temporary_file_is_removed_by_the_next(tmp_path):
    """A process killed inside locks.replacing (creating, finishing, merging) leaves
    its hidden temporary behind; the next one on this host removes those of dead
    processes, and keeps a live process's and another host's."""
    import subprocess
    import sys

    from vxsim.store import locks

    out = tmp_path / "merged.h5"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    host = locks.host()
    stale = tmp_path / f".merged.h5.merging-{host}-{dead}"
    live = tmp_path / f".merged.h5.merging-{host}-{os.getppid()}"
    elsewhere = tmp_path / f".merged.h5.merging-otherhost-{dead}"
    other_purpose = tmp_path / f".merged.h5.finishing-{host}-{dead}"
    for path in (stale, live, elsewhere, other_purpose):
        path.write_bytes(b"partial")
    with locks.replacing(str(out), "merging") as tmp:
        with open(tmp, "wb") as fh:
            fh.write(b"whole")
    assert out.read_bytes() == b"whole"
    assert not stale.exists()
    assert live.exists() and elsewhere.exists() and other_purpose.exists()
