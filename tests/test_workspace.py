"""engines.workspace: buffers kept between units, lent to one unit at a time."""

import numpy as np

from vxsim.engines import workspace


def test_a_smaller_array_reuses_the_buffer_and_a_larger_one_replaces_it():
    ws = workspace.Workspace()
    big = ws.empty("Z", (4, 8), np.float32)
    small = ws.empty("Z", (3, 5), np.float64)
    assert small.shape == (3, 5) and small.dtype == np.float64 and small.flags.c_contiguous
    assert np.shares_memory(big, small) and ws.nbytes == big.nbytes == 128
    larger = ws.empty("Z", (5, 5), np.float64)
    assert not np.shares_memory(big, larger) and ws.nbytes == larger.nbytes == 200
    other = ws.empty("D", (2,), np.float32)
    assert not np.shares_memory(other, larger) and ws.nbytes == 208
    assert ws.empty("E", (0, 3), np.float32).shape == (0, 3)


def test_poison_makes_every_float_nan():
    ws = workspace.Workspace()
    ws.empty("a", (7,), np.float32)[:] = 1.0
    ws.empty("b", (3,), np.float64)[:] = 2.0
    ws.poison()
    assert np.isnan(ws.empty("a", (7,), np.float32)).all()
    assert np.isnan(ws.empty("b", (3,), np.float64)).all()


def test_units_alive_at_once_get_distinct_workspaces_and_the_last_comes_back():
    workspace.release()
    with workspace.borrowed() as outer:
        with workspace.borrowed() as inner:
            assert inner is not outer
        assert workspace.idle() == [inner]
    assert workspace.idle() == [inner, outer]
    with workspace.borrowed() as again:
        assert again is outer
    workspace.release()
    assert workspace.idle() == []


def test_a_sweep_frees_what_its_units_kept(tmp_path):
    """The numba engine's units borrow a workspace; the sweep frees it when done."""
    from conftest import small_config

    from vxsim import run_sweep

    cfg = small_config(
        network__width=[16, 24], network__depth=10, monte_carlo__samples=2, measure__mode="both"
    )
    workspace.release()
    run_sweep(cfg, str(tmp_path / "res.h5"), backend="numba")
    assert workspace.idle() == []
