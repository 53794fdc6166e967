"""What a figure reads: finished results files, and the ``--sel`` choice of the axes not drawn.

A figure draws some dimensions of a results file (sigma_w2 and sigma_b2 for the
phase map, layer for the depth profile, ...) and needs one value of every other
one (mode, width, the activation of a depth profile, the extra grid axes of other
architectures such as sigma_u2 or alpha). Those come from ``sel`` (the CLI's
``--sel name=value,...``), or else the first value, which the figure's title then
says. Dimensions are always taken by name from the file, never by position.
"""

import contextlib
import json
import os
from typing import NamedTuple

import numpy as np

from ..errors import VxsimError


class Results(NamedTuple):
    """One finished results file: root Dataset, ``analysis`` Dataset, config tree, short name."""

    root: object
    analysis: object
    config: dict
    name: str


def _status_error(name, status, done=None, total=None):
    progress = "" if done is None else f", {done}/{total} work units"
    return VxsimError(
        f"{name} is not finished (status: {status}{progress}); figures need a complete file: "
        f"finish it with `vxsim sweep CONFIG -o {name} --resume`"
    )


def _check_file(path):
    """Say why ``path`` cannot be drawn: not a results file, or not finished (raises)."""
    from ..store.summary import open_for_reading

    with open_for_reading(path) as f:
        if "config" not in f.attrs or "completed" not in f:
            raise VxsimError(f"{path} is not a vxsim results file")
        status = f.attrs.get("status", "unknown")
        status = status.decode() if isinstance(status, bytes) else str(status)
        if status != "complete":
            done = f["completed"][...]
            raise _status_error(path, status, int(done.sum()), int(done.size))


def _open_file(path):
    """(root, analysis) Datasets of a finished results file; one-line errors otherwise.

    Opened through xarray first (h5py refuses a second handle with other locking
    flags, so a file the caller already has open with ``open_results`` must be
    opened the same way); where that fails (a sweep is writing it, it is no HDF5
    file) the summary reader, which needs no lock, says why.
    """
    from ..store.hdf5 import open_results

    if not os.path.exists(path):
        raise VxsimError(f"{path} does not exist")
    try:
        root = open_results(path)
    except VxsimError:
        raise
    except Exception as err:  # noqa: BLE001 - any reader failure becomes one line
        _check_file(path)
        raise VxsimError(f"{path} cannot be read as a results file ({err})") from None
    try:
        if "config" not in root.attrs or "completed" not in root:
            raise VxsimError(f"{path} is not a vxsim results file")
        if root.attrs.get("status") != "complete":
            done = root["completed"].values
            raise _status_error(path, root.attrs.get("status"), int(done.sum()), int(done.size))
        try:
            analysis = open_results(path, group="analysis")
        except Exception:  # noqa: BLE001
            raise VxsimError(f"{path} has no analysis group (written by an older vxsim?)") from None
    except BaseException:
        root.close()
        raise
    return root, analysis


@contextlib.contextmanager
def opened(source, analysis=None):
    """Results of a path or of an xarray Dataset; closes what it opened on exit.

    ``source``: a path; the root Dataset of ``vxsim.open_results(path)`` (its
    ``analysis`` group is opened from the same file unless given); or the analysis
    Dataset itself (``open_results(path, group="analysis")``; no config then).
    """
    from ..store.hdf5 import open_results

    mine = []
    try:
        if isinstance(source, str | os.PathLike):
            path = os.fspath(source)
            root, analysis = _open_file(path)
            mine += [root, analysis]
            name = os.path.basename(path)
        elif "critical_sigma_w2_annealed" in getattr(source, "data_vars", {}):
            root, analysis, name = None, source, _source_name(source)
        else:
            root, name = source, _source_name(source)
            status = root.attrs.get("status", "unknown")
            if "config" not in root.attrs:
                raise VxsimError(f"{name} is not a vxsim results Dataset (no config attribute)")
            if status != "complete":
                raise _status_error(name, status)
            if analysis is None:
                path = root.encoding.get("source")
                if not path:
                    raise VxsimError(
                        "this Dataset has no file behind it: pass analysis="
                        "vxsim.open_results(path, group='analysis') as well"
                    )
                analysis = open_results(path, group="analysis")
                mine.append(analysis)
        config = json.loads(root.attrs["config"]) if root is not None else {}
        yield Results(root, analysis, config, name)
    finally:
        for ds in mine:
            ds.close()


def _source_name(ds):
    path = ds.encoding.get("source") if hasattr(ds, "encoding") else None
    return os.path.basename(path) if path else "dataset"


def parse_sel(items):
    """'activation=tanh,sigma_b2=0.05' (or a list of such, or a dict) -> {name: value}."""
    if items is None:
        return {}
    if isinstance(items, dict):
        return dict(items)
    if isinstance(items, str):
        items = [items]
    out = {}
    for item in items:
        for part in str(item).split(","):
            part = part.strip()
            if not part:
                continue
            key, eq, value = part.partition("=")
            key, value = key.strip(), value.strip()
            if not eq or not key or not value:
                raise VxsimError(f"--sel {part!r}: expected NAME=VALUE, e.g. activation=tanh")
            if key in out:
                raise VxsimError(f"--sel {key} given twice")
            out[key] = value
    return out


def check_keys(sel, selectable, drawn):
    """Refuse --sel names that are no dimension here, or that the figure draws on an axis."""
    for key, value in sel.items():
        if key in drawn:
            raise VxsimError(
                f"--sel {key}={value}: {key} is drawn on an axis of this figure; "
                f"selectable: {', '.join(selectable) or 'none'}"
            )
        if key not in selectable:
            raise VxsimError(
                f"--sel {key}={value}: no dimension {key!r}; "
                f"selectable: {', '.join(selectable) or 'none'}"
            )


def _fmt(value):
    if isinstance(value, float | np.floating):
        return f"{float(value):g}"
    return str(value)


def index_of(values, key, value, where="the file", option=None):
    """Index of ``value`` in the coordinate ``values`` (floats to 1e-9 relative).

    A value not there raises a one-line VxsimError listing the allowed values, naming
    the command-line option (default ``--sel KEY=VALUE``).
    """
    values = np.asarray(values)
    if values.dtype.kind in "OUS":
        labels = [v.decode() if isinstance(v, bytes) else str(v) for v in values]
        if str(value).strip() in labels:
            return labels.index(str(value).strip())
    else:
        try:
            x = float(value)
        except (TypeError, ValueError):
            x = None
        if x is not None:
            hits = np.flatnonzero(np.isclose(values.astype(float), x, rtol=1e-9, atol=1e-12))
            if hits.size:
                return int(hits[0])
    allowed = ", ".join(_fmt(v) for v in values)
    option = option or f"--sel {key}={value}"
    raise VxsimError(f"{option}: not a value of {key} in {where}; allowed: {allowed}")


def fix(da, sel, keep, where="the file"):
    """``da`` with every dimension outside ``keep`` fixed at its --sel value (else the first).

    Returns (DataArray with dims ``keep`` in that order, fixed), ``fixed`` a list of
    (name, value, defaulted, size): ``defaulted`` where the first of several was taken.
    """
    fixed, index = [], {}
    for dim in da.dims:
        if dim in keep:
            continue
        values = da[dim].values
        i = index_of(values, dim, sel[dim], where) if dim in sel else 0
        index[dim] = i
        fixed.append((dim, values[i], dim not in sel and values.size > 1, values.size))
    return da.isel(index).transpose(*[d for d in keep if d in da.dims]), fixed


def restrict(da, sel, dim, where="the file"):
    """``da`` with the drawn dimension ``dim`` cut to the --sel value, when one is given."""
    if dim not in sel or dim not in da.dims:
        return da
    return da.isel({dim: [index_of(da[dim].values, dim, sel[dim], where)]})


def describe(fixed):
    """Title text of the fixed coordinates: 'mode jvp, N = 256, ... (first of 2)'."""
    from .style import coord_text

    parts = []
    for name, value, defaulted, size in fixed:
        text = coord_text(name, value.item() if hasattr(value, "item") else value)
        if defaulted:
            text += f" (first of {size})"
        parts.append(text)
    return ", ".join(parts)


def config_value(config, section, key, default=None):
    return config.get(section, {}).get(key, default)
