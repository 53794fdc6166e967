"""The variable catalogue (vxsim.variables) drives the engines' result shapes, the
HDF5 schema, merge and the xarray attributes: a file holds each catalogue variable
its modes produce with the declared dims, dtype and attributes, and a new entry
(plus the engine code that computes it) is stored, read back and merged with no
other change."""

import h5py
import numpy as np
import pytest
from conftest import small_config

import vxsim
from vxsim import variables
from vxsim.analysis import growth
from vxsim.engines import base, numpy_ref
from vxsim.store import hdf5

KEYS = dict(
    network__width=[8, 12],
    network__depth=10,
    monte_carlo__samples=2,
    grid__sigma_w2=[0.5, 2.0],
    engine__backend="numpy",
)


def _dims(ds):
    return tuple(ds.dims[i][0].name.rsplit("/", 1)[-1] for i in range(ds.ndim))


def _text(value):
    return value.decode() if isinstance(value, bytes) else str(value)


def _check_declared(f, var, config):
    ds = f[var.name]
    assert _dims(ds) == variables.dims_of(var, config.grid_dims)
    assert ds.dtype == np.dtype(var.dtype)
    if var.role == "summary":  # long_name is a template on the growth law's unit
        head, _, tail = var.long_name.partition("{per}")
        assert _text(ds.attrs["long_name"]).startswith(head)
        assert _text(ds.attrs["long_name"]).endswith(tail)
    else:
        assert _text(ds.attrs["long_name"]) == var.long_name
        assert _text(ds.attrs["units"]) == var.units


@pytest.mark.parametrize("mode", ["jvp", "vjp", "both"])
def test_a_file_holds_what_the_catalogue_declares(tmp_path, mode):
    config = small_config(measure__mode=mode, **KEYS)
    running, path = str(tmp_path / "running.h5"), str(tmp_path / "run.h5")
    hdf5.create(running, config, "numpy", "cpu")
    with h5py.File(running, "r") as f:  # a running file: units and progress
        for var in variables.CATALOGUE.values():
            wanted = var.role != "summary" and variables.produced(var, config.modes)
            assert (var.name in f) == wanted, var.name
            if wanted:
                _check_declared(f, var, config)
                assert np.array_equal(f[var.name].fillvalue, var.fill, equal_nan=True)
    vxsim.run_sweep(config, path)
    with h5py.File(path, "r") as f:  # the finished file: summary too
        for var in variables.CATALOGUE.values():
            assert (var.name in f) == variables.produced(var, config.modes), var.name
            if var.name in f:
                _check_declared(f, var, config)
        sizes = {d: f[d].size for d in _dims(f["log_q"])}
    shapes = base.result_shapes(config)
    assert set(shapes) == set(variables.unit_variables(config))
    for name, dims in variables.unit_variables(config).items():
        assert shapes[name] == tuple(sizes[d] for d in dims if d not in ("width", "sample"))


def test_an_engine_returns_the_result_shapes():
    config = small_config(measure__mode="both", **KEYS)
    out = numpy_ref.run_unit(config, 8, 0)
    shapes = base.result_shapes(config)
    assert {k: v.shape for k, v in out.items()} == shapes
    for name, values in out.items():
        assert values.dtype == np.dtype(variables.CATALOGUE[name].dtype)
    empty = base.empty_results(config)
    assert set(empty) == set(shapes)
    assert empty["diverged"].dtype == np.int32 and not empty["diverged"].any()
    assert np.isnan(empty["log_q"]).all()


@pytest.mark.parametrize("spectrum", [False, True])
def test_growth_summary_and_modes_agree_with_the_catalogue(spectrum):
    """growth.summarise writes exactly the catalogue's summary variables that the
    config produces (with measure.spectrum: the spectrum's statistics too)."""
    extra = {"measure__spectrum": {"layers": [1, 2]}} if spectrum else {}
    config = small_config(measure__mode="both", **KEYS, **extra)
    data = {}
    if spectrum:
        D = config.state_dimension(max(config.widths))
        data["log_singular_value"] = np.zeros((2,) + config.grid_shape + (config.samples, 2, D))
    shape = (2,) + config.grid_shape + (config.samples, config.layers.size)
    rng = np.random.default_rng(0)
    for mode, name in variables.MODE_VARIABLE.items():
        assert growth.MODE_VARIABLE[mode] == name
        assert variables.CATALOGUE[name].modes == mode
        data[name] = np.cumsum(rng.normal(size=shape), axis=-1)
    summary = growth.summarise(data, {"layer": config.layers}, config)
    declared = variables.of_role("summary", config)
    assert list(summary["vars"]) == [v.name for v in declared]
    assert any(v.modes == "spectrum" for v in declared) == spectrum
    for var in declared:
        dims, values, desc = summary["vars"][var.name]
        assert dims == variables.dims_of(var, config.grid_dims)
        assert values.dtype == np.dtype(var.dtype)
        head, _, tail = var.long_name.partition("{per}")
        assert desc.startswith(head) and desc.endswith(tail)


def test_open_results_carries_the_catalogue_attributes(tmp_path):
    pytest.importorskip("xarray")
    pytest.importorskip("h5netcdf")
    config = small_config(measure__mode="both", **KEYS)
    path = str(tmp_path / "run.h5")
    vxsim.run_sweep(config, path)
    with vxsim.open_results(path) as ds:
        for name, dims in variables.stored_variables(config).items():
            var = variables.CATALOGUE[name]
            assert ds[name].dims == dims
            assert ds[name].attrs["long_name"] == var.long_name
            assert ds[name].attrs["units"] == var.units


NEW = variables.Variable(
    "log_q_gap",
    variables.UNIT_DIMS,
    np.float64,
    "log_q of input 1 minus its value at the first recorded layer",
    units="1",
    modes="jvp",
)
FLAG = variables.Variable(
    "ever_negative_corr",
    variables.POINT_DIMS,
    np.int8,
    "1 where the correlation went below zero at a recorded layer",
    fill=-1,
)


@pytest.fixture
def new_variables(monkeypatch):
    """Two catalogue entries and the engine code that computes them: nothing else."""
    monkeypatch.setitem(variables.CATALOGUE, NEW.name, NEW)
    monkeypatch.setitem(variables.CATALOGUE, FLAG.name, FLAG)
    real = numpy_ref.run_unit

    def run_unit(config, width, sample):
        out = real(config, width, sample)
        shapes = base.result_shapes(config)
        if NEW.name in shapes:
            out[NEW.name] = out["log_q"] - out["log_q"][..., :1]
        out[FLAG.name] = (out["corr"] < 0).any(axis=-1).astype(np.int8)
        assert {k: v.shape for k, v in out.items()} == shapes
        return out

    monkeypatch.setattr(numpy_ref, "run_unit", run_unit)


def test_a_new_catalogue_entry_is_stored_read_back_and_merged(tmp_path, new_variables):
    config = small_config(measure__mode="both", **KEYS)
    whole = str(tmp_path / "whole.h5")
    vxsim.run_sweep(config, whole)
    data, _, _ = hdf5.read_unit_variables(whole)
    assert np.array_equal(data[NEW.name], data["log_q"] - data["log_q"][..., :1], equal_nan=True)
    assert np.array_equal(data[FLAG.name], (data["corr"] < 0).any(axis=-1))
    with h5py.File(whole, "r") as f:
        for var in (NEW, FLAG):
            _check_declared(f, var, config)
    parts = [str(tmp_path / f"part{i}.h5") for i in (1, 2)]
    for i, part in enumerate(parts, 1):
        vxsim.run_sweep(config, part, shard=(i, 2))
    merged = vxsim.merge(parts, str(tmp_path / "merged.h5"))
    with h5py.File(whole, "r") as a, h5py.File(merged, "r") as b:
        for var in (NEW, FLAG):
            _check_declared(b, var, config)
            assert np.array_equal(a[var.name][...], b[var.name][...], equal_nan=True)
    # a mode that does not produce the new per-layer variable: neither engine nor file has it
    vjp = small_config(measure__mode="vjp", **KEYS)
    assert NEW.name not in base.result_shapes(vjp)
    only_vjp = str(tmp_path / "vjp.h5")
    vxsim.run_sweep(vjp, only_vjp)
    with h5py.File(only_vjp, "r") as f:
        assert NEW.name not in f and FLAG.name in f
