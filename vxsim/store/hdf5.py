"""Results on disk: one HDF5 file per sweep, netCDF-4 style, resumable.

Layout (root group):

    coordinates  width, activation, sigma_w2, sigma_b2, sample, layer   (dimension scales)
    per unit     log_q, corr, log_tangent_norm, log_grad_norm
                 (width, activation, sigma_w2, sigma_b2, sample, layer), float64
                 diverged (width, activation, sigma_w2, sigma_b2, sample): first bad layer, 0 = none
    progress     completed (width, sample): 1 once a work unit is on disk
    summary      growth_rate_{quenched,annealed}[_se] (mode, width, activation, sigma_w2, sigma_b2)
    attributes   vxsim_version, config (canonical JSON), config_text, backend, device, seed,
                 created, status ('running' | 'complete'; 'shard-complete': see shardfile)

While a sweep runs, the datasets are contiguous and allocated up front, so
writing a unit changes raw bytes only, never the file's structure: a kill at
any moment leaves a readable file in which every unit flagged complete is
whole. A unit's data are flushed before its flag is set. When the last unit is
in, the file is rewritten chunked and compressed with the summary added, into
a temporary file renamed over the original (atomic on POSIX).
"""

import contextlib
import json
import os
import time

import h5py
import numpy as np

from .. import __version__
from ..errors import VxsimError

COORDS = ("width", "activation", "sigma_w2", "sigma_b2", "sample", "layer")
UNIT_VARS = ("log_q", "corr", "log_tangent_norm", "log_grad_norm")
STR = h5py.string_dtype()


def coordinates(config):
    return {
        "width": np.array(config.widths, dtype=np.int64),
        "activation": np.array(config.activations, dtype=object),
        "sigma_w2": np.asarray(config.sigma_w2, dtype=np.float64),
        "sigma_b2": np.asarray(config.sigma_b2, dtype=np.float64),
        "sample": np.arange(config.samples, dtype=np.int64),
        "layer": np.asarray(config.layers, dtype=np.int64),
    }


def unit_variables(config):
    """{name: dims} of the per-unit variables this config produces."""
    names = ["log_q", "corr"]
    if "jvp" in config.modes:
        names.append("log_tangent_norm")
    if "vjp" in config.modes:
        names.append("log_grad_norm")
    out = {name: COORDS for name in names}
    out["diverged"] = COORDS[:-1]
    return out


ATTRS = {
    "log_q": ("log of the mean squared pre-activation of input 1", "1"),
    "corr": ("correlation of the pre-activations of the two inputs", "1"),
    "log_tangent_norm": ("JVP: log |J v0|^2 at layer l relative to |v0|^2", "1"),
    "log_grad_norm": ("VJP: log |dE/dh^l|^2 relative to its value at the output layer", "1"),
    "diverged": ("first layer at which the point left the float range (0: never)", "layer"),
    "completed": ("1 where the work unit (width, sample) is finished", "1"),
}


def _scale(f, name, values):
    dtype = STR if values.dtype == object else values.dtype
    ds = f.create_dataset(name, data=values, dtype=dtype)
    ds.make_scale(name)
    return ds


def _variable(f, name, dims, shape, dtype, compressed, fill):
    kw = {}
    if compressed:
        chunks = tuple(
            1 if d in ("width", "sample") else n for d, n in zip(dims, shape, strict=True)
        )
        kw = dict(chunks=chunks, compression="gzip", compression_opts=4, shuffle=True)
    ds = f.create_dataset(name, shape=shape, dtype=dtype, fillvalue=fill, **kw)
    for i, dim in enumerate(dims):
        ds.dims[i].attach_scale(f[dim])
    if name in ATTRS:
        ds.attrs["long_name"], ds.attrs["units"] = ATTRS[name]
    return ds


def _layout(f, config, compressed):
    """Create coordinates and empty variables; return {name: dataset}."""
    coords = coordinates(config)
    for name, values in coords.items():
        _scale(f, name, values)
    f["layer"].attrs["long_name"] = "layer index l (1 = first hidden layer)"
    sizes = {k: len(v) for k, v in coords.items()}
    out = {}
    for name, dims in unit_variables(config).items():
        shape = tuple(sizes[d] for d in dims)
        int_var = name == "diverged"
        out[name] = _variable(
            f,
            name,
            dims,
            shape,
            np.int32 if int_var else np.float64,
            compressed,
            0 if int_var else np.nan,
        )
    out["completed"] = _variable(
        f,
        "completed",
        ("width", "sample"),
        (sizes["width"], sizes["sample"]),
        np.uint8,
        False,
        0,
    )
    return out


def _write_attrs(f, config, backend, device, created=None):
    f.attrs["vxsim_version"] = __version__
    f.attrs["config"] = config.canonical()
    f.attrs["config_text"] = json.dumps(config.raw, sort_keys=True, indent=1)
    f.attrs["backend"] = backend
    f.attrs["device"] = device
    f.attrs["seed"] = np.uint64(config.seed)
    f.attrs["created"] = created or time.strftime("%Y-%m-%dT%H:%M:%S%z")
    f.attrs["status"] = "running"
    f.attrs["Conventions"] = "CF-1.8"


def create(path, config, backend, device, extra=None):
    """A new results file with every variable allocated and marked incomplete.

    Built under a temporary name and renamed into place, so that a kill during
    creation leaves either no file or a whole one. ``extra``: more root
    variables and attributes, as for ``_write_extra`` (a shard's, say).
    """
    with _replacing(path, "creating") as tmp:
        try:
            f = h5py.File(tmp, "w", libver="earliest")
        except OSError as err:
            raise VxsimError(f"cannot create {path}: {_reason(err)}") from None
        with f:
            _write_attrs(f, config, backend, device)
            datasets = _layout(f, config, compressed=False)
            for ds in datasets.values():
                ds[(0,) * ds.ndim] = ds.fillvalue  # allocate contiguous storage now
            if extra:
                _write_extra(f, extra)


@contextlib.contextmanager
def _replacing(path, purpose):
    """Yield a temporary name beside ``path``; rename it over ``path`` if the block succeeds."""
    folder, name = os.path.split(os.path.abspath(path))
    tmp = os.path.join(folder, f".{name}.{purpose}-{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def refuse_if_written(path):
    """Raise if another process holds ``path`` open for writing (before replacing it)."""
    try:
        h5py.File(path, "r").close()
    except OSError as err:
        if "lock" in str(err):
            raise VxsimError(f"cannot replace {path}: {_reason(err)}") from None


def _reason(err):
    """The useful part of an h5py OSError (it is open elsewhere, it is not HDF5, ...)."""
    text = str(err)
    if "lock" in text or "already open" in text:
        return "the file is open in another process or program (one writer at a time)"
    return f"not a readable HDF5 file ({text})"


def _diff_keys(a, b, prefix="", labels=("file", "now")):
    keys = []
    for k in sorted(set(a) | set(b)):
        name = f"{prefix}{k}"
        if isinstance(a.get(k), dict) and isinstance(b.get(k), dict):
            keys += _diff_keys(a[k], b[k], f"{name}.", labels)
        elif a.get(k) != b.get(k):
            keys.append(
                f"{name} ({labels[0]}: {json.dumps(a.get(k))}, {labels[1]}: {json.dumps(b.get(k))})"
            )
    return keys


def check_resumable(path, config):
    """Refuse to resume a file written for another config (say which keys differ)."""
    try:
        with h5py.File(path, "r") as f:
            stored = f.attrs["config"]
    except OSError as err:
        raise VxsimError(f"cannot resume {path}: {_reason(err)}") from None
    except KeyError:
        raise VxsimError(f"cannot resume {path}: not a vxsim results file") from None
    if stored != config.canonical():
        diffs = _diff_keys(json.loads(stored), json.loads(config.canonical()))
        raise VxsimError(f"cannot resume {path}: config differs in " + "; ".join(diffs))


class Writer:
    """The single writer of a running sweep: unit results in, completion flags out."""

    def __init__(self, path):
        self.path = path
        try:
            self.file = h5py.File(path, "r+")
        except OSError as err:
            raise VxsimError(f"cannot write {path}: {_reason(err)}") from None

    def completed(self):
        return self.file["completed"][...].astype(bool)

    def write_unit(self, width_index, sample, arrays):
        f = self.file
        for name, values in arrays.items():
            ds = f[name]
            index = (width_index, Ellipsis, sample) + ((slice(None),) if ds.ndim == 6 else ())
            ds[index] = values
        f.flush()
        f["completed"][width_index, sample] = 1
        f.flush()

    def close(self):
        self.file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def read_unit_variables(path):
    """{name: array} of every per-unit variable, plus coordinates and attributes."""
    with h5py.File(path, "r") as f:
        data = {
            name: f[name][...] for name in list(UNIT_VARS) + ["diverged", "completed"] if name in f
        }
        coords = {name: f[name][...] for name in COORDS}
        coords["activation"] = np.array(
            [s.decode() if isinstance(s, bytes) else s for s in coords["activation"]]
        )
        attrs = dict(f.attrs)
    return data, coords, attrs


def finalize(path, config, summary, analysis=None, status="complete", extra=None):
    """Rewrite the finished file chunked + compressed with the summary; atomic rename.

    ``status``: the status it ends with; ``extra``: root variables to carry along
    (see ``_write_extra``; root attributes are always kept).
    """
    with _replacing(path, "finishing") as tmp:
        with h5py.File(path, "r") as src, h5py.File(tmp, "w") as dst:
            for key, value in src.attrs.items():
                dst.attrs[key] = value
            datasets = _layout(dst, config, compressed=True)
            for name, ds in datasets.items():
                ds[...] = src[name][...]
            if summary:
                _write_summary(dst, summary)
            if analysis:
                _write_group(dst, "analysis", analysis)
            if extra:
                _write_extra(dst, extra)
            dst.attrs["status"] = status


def _write_summary(f, summary):
    """summary: {'mode': [...], name: (dims, array)}."""
    _scale(f, "mode", np.array(summary["mode"], dtype=object))
    for name, (dims, values, desc) in summary["vars"].items():
        ds = f.create_dataset(name, data=values)
        for i, dim in enumerate(dims):
            ds.dims[i].attach_scale(f[dim])
        ds.attrs["long_name"] = desc


def _write_extra(f, content):
    """Root variables and attributes; content: {'vars': {name: (dims, array, desc)}, 'attrs': {}}.

    The dims must be root coordinates already in ``f``.
    """
    for name, (dims, values, desc) in content.get("vars", {}).items():
        ds = f.create_dataset(name, data=values)
        for i, dim in enumerate(dims):
            ds.dims[i].attach_scale(f[dim])
        ds.attrs["long_name"] = desc
    for key, value in content.get("attrs", {}).items():
        f.attrs[key] = value


def _write_group(f, group, content):
    """content: {'vars': {name: (dims, array, desc)}, 'attrs': {}}.

    The group gets its own copies of the root coordinates it uses, so that
    ``open_results(path, group=...)`` has labelled axes too.
    """
    g = f.create_group(group)
    for dim in sorted({d for dims, _, _ in content["vars"].values() for d in dims}):
        values = f[dim].asstr()[...] if h5py.check_string_dtype(f[dim].dtype) else f[dim][...]
        _scale(g, dim, np.asarray(values, dtype=object if values.dtype.kind in "OU" else None))
    for name, (dims, values, desc) in content["vars"].items():
        ds = g.create_dataset(name, data=values)
        for i, dim in enumerate(dims):
            ds.dims[i].attach_scale(g[dim])
        ds.attrs["long_name"] = desc
    for key, value in content.get("attrs", {}).items():
        g.attrs[key] = value


def open_results(path, group=None):
    """An xarray Dataset of a results file (or of its ``analysis`` group)."""
    try:
        import xarray as xr
    except ImportError:
        raise VxsimError(
            "open_results needs xarray and h5netcdf: pip install 'vxsim[xarray]'"
        ) from None
    return xr.open_dataset(path, engine="h5netcdf", group=group, phony_dims="access")
