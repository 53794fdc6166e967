"""A short account of what a results file holds, readable while its sweep runs."""

import json
import os

import h5py
import numpy as np

from ..errors import VxsimError
from ..fits import CROSSING_FLAGS, zero_crossing
from .hdf5 import file_dims, open_reader


def open_for_reading(path):
    """Open a results file read-only, beside a writer that may hold it (SWMR reader, no lock)."""
    try:
        return open_reader(path)
    except FileNotFoundError:
        raise VxsimError(f"{path} does not exist") from None
    except OSError as err:
        raise VxsimError(f"{path} is not a readable HDF5 file ({err})") from None


def _text(values):
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values]


def summarise_file(path):
    """Config, progress, divergence count and (when complete) the growth-rate zero crossings."""
    with open_for_reading(path) as f:
        if "config" not in f.attrs or "completed" not in f:
            raise VxsimError(f"{path} is not a vxsim results file")
        cfg = json.loads(f.attrs["config"])
        completed = f["completed"][...].astype(bool)
        sw2 = f["sigma_w2"][...]
        sb2 = f["sigma_b2"][...]
        widths = f["width"][...]
        acts = _text(f["activation"][...])
        diverged = f["diverged"][...]
        done_mask = completed.reshape(
            completed.shape[:1] + (1,) * (diverged.ndim - 2) + completed.shape[1:]
        )
        out = {
            "path": path,
            "status": str(f.attrs.get("status", "unknown")),
            "vxsim_version": str(f.attrs.get("vxsim_version", "?")),
            "backend": str(f.attrs.get("backend", "?")),
            "device": str(f.attrs.get("device", "?")),
            "created": str(f.attrs.get("created", "?")),
            "architecture": cfg["network"]["architecture"],
            "width": widths.tolist(),
            "depth": cfg["network"]["depth"],
            "activation": acts,
            **({"init": _text(f["init"][...])} if "init" in f else {}),
            "sigma_w2_range": [float(sw2.min()), float(sw2.max())],
            "n_sigma_w2": int(sw2.size),
            "sigma_b2": sb2.tolist(),
            "samples": int(completed.shape[1]),
            "seed": int(f.attrs.get("seed", 0)),
            "mode": cfg["measure"]["mode"],
            "n_layers": int(f["layer"].size),
            "units_done": int(completed.sum()),
            "units_total": int(completed.size),
            "diverged_points": int(((diverged > 0) & done_mask).sum()),
            "total_points": int(diverged.size),
            "crossings": [],
            "shard": None,
        }
        out["missing_parts"] = _missing_parts(f, path)
        out["spectrum"] = _spectrum(f)
        extra = _extra_coords(f)
        out["architecture_axes"] = {k: v.tolist() for k, v in extra.items()}
        out["growth_law"] = str(f.attrs.get("growth_law", "exponential"))
        if "shard_index" in f.attrs:
            owned = f["shard_units"][...].astype(bool)
            out["shard"] = {
                "index": int(f.attrs["shard_index"]),
                "count": int(f.attrs["shard_count"]),
                "units": int(owned.sum()),
                "units_done": int((completed & owned).sum()),
            }
        if "growth_rate_quenched" in f and out["growth_law"] == "power":
            out["exponents"] = _exponent_rows(f)
        elif "growth_rate_quenched" in f:
            ds = f["growth_rate_quenched"]
            dims = _dims(ds)
            sw = dims.index("sigma_w2")
            rates = np.moveaxis(ds[...], sw, -1)  # sigma_w2 last
            point_dims = dims[:sw] + dims[sw + 1 :]
            theory = (
                f["analysis/theory_critical_sigma_w2"][...]
                if "analysis" in f
                else np.full(rates.shape[2:-1], np.nan)
            )
            labels = _labels(f, point_dims)
            for idx in np.ndindex(rates.shape[:-1]):
                row = {
                    **_row(labels, idx),
                    "sigma_w2": _num(zero_crossing(sw2, rates[idx])),
                    "theory_sigma_w2": _num(theory[idx[2:]]),
                }
                out["crossings"].append(row)
    return out


def _dims(ds):
    """The dimension names of a labelled dataset (its scales)."""
    return tuple(ds.dims[i][0].name.rsplit("/", 1)[-1] for i in range(ds.ndim))


def _labels(where, dims):
    """[(dim, values)] of the coordinates ``dims`` of a file or group, as Python values:
    str for the named axes (mode, activation, init), int widths, float otherwise."""
    out = []
    for d in dims:
        values = where[d][...]
        if d in ("mode", "activation", "init"):
            values = _text(values)
        elif d == "width":
            values = [int(v) for v in values]
        else:
            values = [float(v) for v in values]
        out.append((d, values))
    return out


def _row(labels, idx):
    """{dim: value} of one point ``idx`` of the axes ``labels``."""
    return {d: values[i] for (d, values), i in zip(labels, idx, strict=True)}


def boundary_rows(path):
    """One dict per (mode, estimator, width, activation, sigma_b2) from the ``analysis`` group.

    Keys: mode, estimator, width, activation, sigma_b2, critical_sigma_w2, ci_low,
    ci_high, theory_sigma_w2 (None where there is no crossing / no theory value /
    no interval), flag (where the crossing lies in the grid, ``fits.CROSSING_FLAGS``)
    and note (why an interval is missing, or None).
    """
    with open_for_reading(path) as f:
        if "analysis" not in f and "shard_index" in f.attrs:
            raise VxsimError(
                f"{path} is one shard of a sweep (no analysis); join the shards with `vxsim merge`"
            )
        if "analysis" not in f:
            status = f.attrs.get("status", "unknown")
            raise VxsimError(
                f"{path} has no analysis yet (status: {status}); finish the sweep "
                "with `vxsim sweep ... --resume`"
            )
        g = f["analysis"]
        modes = _text(g["mode"][...])
        labels = _labels(g, _dims(g["critical_sigma_w2_quenched"]))
        theory = g["theory_critical_sigma_w2"][...]
        est = {
            kind: [g[f"critical_sigma_w2_{kind}{sfx}"][...] for sfx in ("", "_ci_low", "_ci_high")]
            for kind in ("quenched", "annealed")
        }
        flags = {
            kind: g[f"critical_sigma_w2_{kind}_flag"][...] if f"critical_sigma_w2_{kind}_flag" in g
            else None
            for kind in est
        }  # fmt: skip
        samples = int(f["sample"].shape[0])
    rows = []
    for kind, (x, lo, hi) in est.items():
        for idx in np.ndindex(x.shape):
            rows.append(
                {
                    "estimator": kind,
                    **_row(labels, idx),
                    "critical_sigma_w2": _num(x[idx]),
                    "ci_low": _num(lo[idx]),
                    "ci_high": _num(hi[idx]),
                    "theory_sigma_w2": _num(theory[idx[2:]]),
                    "flag": None if flags[kind] is None else CROSSING_FLAGS[int(flags[kind][idx])],
                    "note": _interval_note(samples, lo[idx], hi[idx], x[idx]),
                }
            )
    rows.sort(key=lambda r: (modes.index(r["mode"]), r["estimator"] != "quenched"))
    return rows


SPECTRUM_VARIABLES = (
    "log_singular_value",
    "lambda_mean",
    "lambda_mean_se",
    "lambda_var_norm",
    "lambda_var_norm_se",
    "s_max",
    "s_max_se",
)


def _spectrum(f):
    """The Jacobian spectrum a file holds: {layers, sv, variables}, or None."""
    if "spectrum_layer" not in f:
        return None
    return {
        "layers": f["spectrum_layer"][...].tolist(),
        "sv": int(f["sv"].size),
        "variables": [name for name in SPECTRUM_VARIABLES if name in f],
    }


def _missing_parts(f, path):
    """The parts a virtual merge (``vxsim merge --virtual``) maps that are not where it
    looks for them (their units read as NaN); [] for a plain file."""
    folder = os.path.dirname(os.path.abspath(path))
    names = set()
    for ds in f.values():
        if isinstance(ds, h5py.Dataset) and ds.is_virtual:
            names.update(source.file_name for source in ds.virtual_sources())
    return sorted(
        n.replace("%%", "%")
        for n in names
        if not os.path.isfile(os.path.join(folder, n.replace("%%", "%")))
    )


def _interval_note(samples, lo, hi, x):
    """Why an interval (or an end of it) is missing; None when it is whole."""
    if samples < 2:
        return "no interval: fewer than 2 Monte Carlo samples"
    if not np.isfinite(x):
        return None
    if not np.isfinite(lo) and not np.isfinite(hi):
        return "interval open on both sides: the edge leaves the grid in the bootstrap"
    if not np.isfinite(hi):
        return "interval open above: the edge leaves the grid in the bootstrap"
    if not np.isfinite(lo):
        return "interval open below: the edge leaves the grid in the bootstrap"
    return None


def _exponent_rows(f):
    """Power-law files (residual): one row per (mode, point) with the fitted exponent."""
    ds = f["growth_rate_quenched"]
    rates = ds[...]
    theory = f["analysis/theory_growth_rate"][...] if "analysis/theory_growth_rate" in f else None
    labels = _labels(f, _dims(ds))
    rows = []
    for idx in np.ndindex(rates.shape):
        m = idx[0]
        rows.append(
            {
                **_row(labels, idx),
                "exponent": _num(rates[idx]),
                "theory_exponent": None if theory is None else _num(theory[(m,) + idx[2:]]),
            }
        )
    return rows


def _extra_coords(f):
    """{name: values} of the architecture's grid axes after sigma_b2 (empty for the MLP)."""
    names = file_dims(f)
    return {k: f[k][...] for k in names[names.index("sigma_b2") + 1 : -2]}


def _num(value):
    value = float(value)
    return value if np.isfinite(value) else None
