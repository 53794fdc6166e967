"""SIGTERM and SIGINT stop a sweep at a safe point; the file resumes to the uninterrupted one."""

import os
import signal
import time

import h5py
import numpy as np
import pytest
from conftest import SLOW_KEYS, small_config, spawn_cli, units_done

import vxsim
from vxsim.interrupt import Stopped
from vxsim.store import hdf5


def _datasets(path):
    with h5py.File(path, "r") as f:
        return {k: f[k][...] for k in f if isinstance(f[k], h5py.Dataset)}


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_stops_the_sweep_resumably(tmp_path, slow_reference, sig):
    out = str(tmp_path / "stopped.h5")
    p = spawn_cli("sweep", "-o", out, *SLOW_KEYS)
    deadline = time.time() + 300
    while units_done(out) < 2 and p.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    p.send_signal(sig)
    assert p.wait(timeout=60) == 128 + sig
    err = p.stderr.read()
    name = signal.Signals(sig).name
    assert err.count("\n") == 1 and err.startswith(f"vxsim: stopped by {name} at a safe point")
    done = units_done(out)
    assert 2 <= done < 6, f"{done} units at the stop; make the sweep slower"
    with h5py.File(out, "r") as f:  # closed cleanly: a plain reader opens it at once
        assert int(f["completed"][...].sum()) == done
    p = spawn_cli("sweep", "-o", out, "--resume", *SLOW_KEYS)
    assert p.wait(timeout=300) == 0, p.stderr.read()
    want, got = _datasets(slow_reference), _datasets(out)
    for key in want:
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)


def test_a_signal_during_a_write_waits_for_the_unit_to_land(tmp_out, monkeypatch):
    """SIGTERM arriving while a unit is written: the unit is finished and flagged, then the
    sweep stops; the rest resumes."""
    cfg = small_config(
        network__width=16, network__depth=10, monte_carlo__samples=3, engine__backend="numpy"
    )
    real = hdf5.Writer.write_unit
    calls = []

    def write_and_get_signalled(self, wi, sample, arrays):
        calls.append(sample)
        if len(calls) == 1:
            os.kill(os.getpid(), signal.SIGTERM)  # delivered here, in the main thread
        return real(self, wi, sample, arrays)

    monkeypatch.setattr(hdf5.Writer, "write_unit", write_and_get_signalled)
    with pytest.raises(Stopped) as stop:
        vxsim.run_sweep(cfg, tmp_out)
    assert stop.value.signum == signal.SIGTERM and calls == [0]
    assert units_done(tmp_out) == 1
    monkeypatch.setattr(hdf5.Writer, "write_unit", real)
    vxsim.run_sweep(cfg, tmp_out, resume=True)
    assert units_done(tmp_out) == 3
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handlers restored
