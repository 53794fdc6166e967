"""A short account of what a results file holds, readable while its sweep runs."""

import json

import numpy as np

from ..analysis.boundary import zero_crossing
from ..errors import VxsimError
from .hdf5 import open_reader


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
        done_mask = completed[:, None, None, None, :]
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
        if "shard_index" in f.attrs:
            owned = f["shard_units"][...].astype(bool)
            out["shard"] = {
                "index": int(f.attrs["shard_index"]),
                "count": int(f.attrs["shard_count"]),
                "units": int(owned.sum()),
                "units_done": int((completed & owned).sum()),
            }
        if "growth_rate_quenched" in f:
            modes = _text(f["mode"][...])
            rates = f["growth_rate_quenched"][...]
            theory = (
                f["analysis/theory_critical_sigma_w2"][...]
                if "analysis" in f
                else np.full((len(acts), sb2.size), np.nan)
            )
            for m, mode in enumerate(modes):
                for w, width in enumerate(widths):
                    for a, act in enumerate(acts):
                        for b, bias in enumerate(sb2):
                            x = zero_crossing(sw2, rates[m, w, a, :, b])
                            out["crossings"].append(
                                {
                                    "mode": mode,
                                    "width": int(width),
                                    "activation": act,
                                    "sigma_b2": float(bias),
                                    "sigma_w2": _num(x),
                                    "theory_sigma_w2": _num(theory[a, b]),
                                }
                            )
    return out


def boundary_rows(path):
    """One dict per (mode, estimator, width, activation, sigma_b2) from the ``analysis`` group.

    Keys: mode, estimator, width, activation, sigma_b2, critical_sigma_w2, ci_low,
    ci_high, theory_sigma_w2 (None where there is no crossing / no theory value).
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
        modes, widths = _text(g["mode"][...]), g["width"][...]
        acts, sb2 = _text(g["activation"][...]), g["sigma_b2"][...]
        theory = g["theory_critical_sigma_w2"][...]
        est = {
            kind: [g[f"critical_sigma_w2_{kind}{sfx}"][...] for sfx in ("", "_ci_low", "_ci_high")]
            for kind in ("quenched", "annealed")
        }
    rows = []
    for m, mode in enumerate(modes):
        for kind, (x, lo, hi) in est.items():
            for w, width in enumerate(widths):
                for a, act in enumerate(acts):
                    for b, bias in enumerate(sb2):
                        rows.append(
                            {
                                "mode": mode,
                                "estimator": kind,
                                "width": int(width),
                                "activation": act,
                                "sigma_b2": float(bias),
                                "critical_sigma_w2": _num(x[m, w, a, b]),
                                "ci_low": _num(lo[m, w, a, b]),
                                "ci_high": _num(hi[m, w, a, b]),
                                "theory_sigma_w2": _num(theory[a, b]),
                            }
                        )
    return rows


def _num(value):
    value = float(value)
    return value if np.isfinite(value) else None
