"""The layout of a results file: coordinates, variables and their attributes.

Every variable's dims, dtype, fill value and CF attributes come from the
catalogue (``vxsim.variables``); this module turns them into HDF5 datasets with
netCDF-4 dimension scales, so that xarray (``open_results``) reads them labelled.

    coordinates  width, activation, [init], sigma_w2, sigma_b2, [extra], sample, layer
                 (init only where network.init is given: weight laws, vxsim.laws)
    per unit     the catalogue's role-"unit" variables this config's modes produce
    progress     completed (width, sample)
    attributes   vxsim_version, config (canonical JSON), config_text, backend, device,
                 numerics, seed, created, status, Conventions
"""

import json
import time

import h5py
import numpy as np

from .. import __version__, rng, variables
from . import space

STR = h5py.string_dtype()


def coordinates(config):
    """{dimension name: coordinate values} of a config's results file."""
    return {
        "width": np.array(config.widths, dtype=np.int64),
        "activation": np.array(config.activations, dtype=object),
        **({"init": np.array(config.inits, dtype=object)} if config.init_axis else {}),
        "sigma_w2": np.asarray(config.sigma_w2, dtype=np.float64),
        "sigma_b2": np.asarray(config.sigma_b2, dtype=np.float64),
        **{k: np.asarray(v, dtype=np.float64) for k, v in config.extra_axes.items()},
        "sample": np.arange(config.samples, dtype=np.int64),
        "layer": np.asarray(config.layers, dtype=np.int64),
        **spectrum_coordinates(config),
    }


def spectrum_coordinates(config):
    """spectrum_layer (the layers l of measure.spectrum) and sv (0..D-1, D the state
    dimension of the largest width) where the Jacobian spectrum is measured; else {}."""
    layers = getattr(config, "spectrum_layers", np.zeros(0))
    if not len(layers):
        return {}
    D = config.state_dimension(max(config.widths))
    return {
        "spectrum_layer": np.asarray(layers, dtype=np.int64),
        "sv": np.arange(D, dtype=np.int64),
    }


COORDINATE_NAMES = {
    "layer": "layer index l (1 = first hidden layer)",
    "spectrum_layer": "layer l of the Jacobian J^l whose singular values are stored",
    "sv": "index of the singular value, largest first",
}


def label(f):
    """The long_name of the coordinates that have one."""
    for name, text in COORDINATE_NAMES.items():
        if name in f:
            f[name].attrs["long_name"] = text


def scale(f, name, values):
    """A coordinate dataset made a dimension scale."""
    dtype = STR if values.dtype == object else values.dtype
    ds = f.create_dataset(name, data=values, dtype=dtype)
    ds.make_scale(name)
    return ds


def variable(f, name, dims, shape, dtype, compressed, fill, chunked=None):
    """An empty variable on the scales ``dims``, with the catalogue's attributes.

    Chunked: one (width, sample) unit a chunk, allocated as units are written (so
    a running file takes the disk its finished units need); compressed: also
    gzip with shuffle. ``chunked`` defaults to ``compressed``.
    """
    kw = {}
    if compressed if chunked is None else chunked:
        kw["chunks"] = tuple(
            1 if d in ("width", "sample") else n for d, n in zip(dims, shape, strict=True)
        )
    if compressed:
        kw.update(compression="gzip", compression_opts=4, shuffle=True)
    ds = f.create_dataset(name, shape=shape, dtype=dtype, fillvalue=fill, **kw)
    for i, dim in enumerate(dims):
        ds.dims[i].attach_scale(f[dim])
    attrs = variables.attributes(name)
    if attrs:
        ds.attrs["long_name"], ds.attrs["units"] = attrs["long_name"], attrs["units"]
    return ds


def layout(f, config, compressed):
    """Create coordinates and the empty stored variables; return {name: dataset}."""
    coords = coordinates(config)
    for name, values in coords.items():
        scale(f, name, values)
    label(f)
    sizes = {k: len(v) for k, v in coords.items()}
    out = {}
    for name, var_dims in variables.stored_variables(config).items():
        v = variables.CATALOGUE[name]
        shape = tuple(sizes[d] for d in var_dims)
        unit = v.role == "unit"  # the progress flags stay contiguous
        dtype = space.storage_dtype(config, v)
        out[name] = variable(f, name, var_dims, shape, dtype, compressed and unit, v.fill, unit)
    return out


def write_attrs(f, config, backend, device, created=None, numerics="", generator=rng.GENERATOR):
    """The root attributes of a new (running) results file; ``generator``: the normal
    generator that draws its weights (``rng.GENERATOR``; a merge passes its parts')."""
    f.attrs["vxsim_version"] = __version__
    f.attrs["config"] = config.canonical()
    f.attrs["config_text"] = json.dumps(config.raw, sort_keys=True, indent=1)
    f.attrs["backend"] = backend
    f.attrs["device"] = device
    f.attrs["numerics"] = numerics
    f.attrs["generator"] = generator
    f.attrs["seed"] = np.uint64(config.seed)
    f.attrs["created"] = created or time.strftime("%Y-%m-%dT%H:%M:%S%z")
    f.attrs["status"] = "running"
    f.attrs["Conventions"] = "CF-1.8"


def file_dims(f):
    """The dimension names of an open results file's per-unit variables (log_q's scales)."""
    ds = f["log_q"]
    return tuple(ds.dims[i][0].name.rsplit("/", 1)[-1] for i in range(ds.ndim))


def _labelled(f, name, dims, values, desc):
    """A dataset of ``values`` on the dimension scales ``dims`` of ``f``, with its long_name."""
    ds = f.create_dataset(name, data=values)
    for i, dim in enumerate(dims):
        ds.dims[i].attach_scale(f[dim])
    ds.attrs["long_name"] = desc
    return ds


def write_summary(f, summary):
    """summary: {'mode': [...], 'growth_law': str, 'vars': {name: (dims, array, desc)}}."""
    scale(f, "mode", np.array(summary["mode"], dtype=object))
    f.attrs["growth_law"] = summary.get("growth_law", "exponential")
    for name, (var_dims, values, desc) in summary["vars"].items():
        _labelled(f, name, var_dims, values, desc)


def write_extra(f, content):
    """Root variables and attributes; content: {'vars': {name: (dims, array, desc)}, 'attrs': {}}.

    The dims must be root coordinates already in ``f``.
    """
    for name, (var_dims, values, desc) in content.get("vars", {}).items():
        _labelled(f, name, var_dims, values, desc)
    for key, value in content.get("attrs", {}).items():
        f.attrs[key] = value


def write_group(f, group, content):
    """content: {'vars': {name: (dims, array, desc)}, 'attrs': {}}.

    The group gets its own copies of the root coordinates it uses, so that
    ``open_results(path, group=...)`` has labelled axes too.
    """
    g = f.create_group(group)
    for dim in sorted({d for var_dims, _, _ in content["vars"].values() for d in var_dims}):
        values = f[dim].asstr()[...] if h5py.check_string_dtype(f[dim].dtype) else f[dim][...]
        scale(g, dim, np.asarray(values, dtype=object if values.dtype.kind in "OU" else None))
    for name, (var_dims, values, desc) in content["vars"].items():
        _labelled(g, name, var_dims, values, desc)
    for key, value in content.get("attrs", {}).items():
        g.attrs[key] = value
