"""Edges of chaos side by side: critical lines of several activations and architectures.

On one axes (sigma_w2 across, sigma_b2 up, as in the phase map), for every
activation (and architecture) in the given results files and every extra
``activations`` label: the theory's critical line chi1 = 1 as a solid line in the
curve's colour, and, from each file's ``analysis`` group, the empirical boundary
(the zero crossing of the growth rate along sigma_w2) with its bootstrap interval
as horizontal error bars, one marker shape per file.
"""

import os
import textwrap

import numpy as np

from .. import activations as act_registry
from ..errors import VxsimError
from . import critical, data, style
from .phase_map import check_estimator

DRAWN = ("sigma_w2", "sigma_b2")
DEFAULT_SIGMA_B2 = (0.0, 0.3)


def _label(text):
    """Canonical activation label ('leaky_relu(0.20)' -> 'leaky_relu(0.2)'); one-line error."""
    try:
        return act_registry.label(*act_registry.parse(text))
    except ValueError as err:
        raise VxsimError(f"--activation {text}: {err}") from None


def _sigma_b2_range(spec):
    """(low, high, n) from 'START:STOP:NUM', a (low, high[, n]) tuple, or None."""
    if spec is None:
        return None
    parts = spec.split(":") if isinstance(spec, str) else list(spec)
    try:
        low, high = float(parts[0]), float(parts[1])
        n = int(parts[2]) if len(parts) > 2 else critical.N_POINTS
    except (ValueError, IndexError, TypeError):
        raise VxsimError(f"--sigma-b2 {spec}: expected START:STOP:NUM, e.g. 0:0.3:41") from None
    if not (0 <= low <= high) or not np.isfinite(high) or n < 1 or len(parts) > 3:
        raise VxsimError(f"--sigma-b2 {spec}: need 0 <= START <= STOP and NUM >= 1")
    return low, high, n


def boundary(sources=(), activations=(), sel=None, estimator="annealed", sigma_b2=None, size=None):
    """Figure: theory critical lines (and measured boundaries) of several activations.

    sources: results paths or Datasets (``vxsim.open_results(path)`` or its analysis
    group); activations: extra labels drawn from theory alone (plain MLP, q0 = 1);
    sel: {dim: value} for the dimensions not drawn (mode, width, extra grid axes;
    ``activation`` keeps one); estimator: 'annealed' or 'quenched'; sigma_b2: the
    range of the theory lines as 'START:STOP:NUM' (default: the files' range, else
    0 to 0.3).
    """
    if isinstance(sources, str | os.PathLike) or hasattr(sources, "data_vars"):
        sources = [sources]
    if isinstance(activations, str):
        activations = [activations]
    extra = [_label(a) for item in activations for a in str(item).split(",") if a.strip()]
    if not sources and not extra:
        raise VxsimError("nothing to draw: give results files and/or --activation NAME")
    sel = data.parse_sel(sel)
    check_estimator(estimator)
    span = _sigma_b2_range(sigma_b2)
    with style.context():
        files = [_read_file(src, sel, estimator) for src in sources]
        selectable = sorted({d for f in files for d in f["dims"]} - set(DRAWN))
        data.check_keys(sel, selectable, drawn=DRAWN)
        grid_b2 = np.concatenate([f["sigma_b2"] for f in files]) if files else np.array([])
        if span is None:
            low, high = (grid_b2.min(), grid_b2.max()) if files else DEFAULT_SIGMA_B2
            span = (low, high, critical.N_POINTS)
        dense = critical.sigma_b2_grid(span[0], span[1], grid_b2, span[2])
        return _draw(files, extra, dense, estimator, size)


def _read_file(source, sel, estimator):
    """Measured boundary and theory of one file: a dict of plain arrays."""
    with data.opened(source) as res:
        an = res.analysis
        crit = an[f"critical_sigma_w2_{estimator}"]
        mine = {k: v for k, v in sel.items() if k in crit.dims and k != "activation"}
        keep = ("activation", "sigma_b2")
        out = {"name": res.name, "dims": list(crit.dims)}
        for suffix in ("", "_ci_low", "_ci_high"):
            da = data.restrict(
                an[f"critical_sigma_w2_{estimator}{suffix}"], sel, "activation", res.name
            )
            da, fixed = data.fix(da, mine, keep, res.name)
            out["x" + suffix] = da.values
        out["activation"] = [str(a) for a in da.activation.values]
        out["sigma_b2"] = da.sigma_b2.values
        out["fixed"] = data.describe(fixed)
        out["architecture"] = critical.architecture_of(res.config)
        out["q0"] = float(data.config_value(res.config, "measure", "q0", 1.0))
        if not critical.dense(out["architecture"]):
            th = data.restrict(an["theory_critical_sigma_w2"], sel, "activation", res.name)
            th, _ = data.fix(th, mine, keep, res.name)
            out["theory"] = th.values
    return out


def _draw(files, extra, dense, estimator, size):
    from matplotlib.lines import Line2D

    fig = style.new_figure(style.figure_size(size, 2.8))
    ax = fig.add_subplot()
    plain = critical.dense_architecture()  # whose line theory() recomputes
    archs = {f["architecture"] for f in files} | ({plain} if extra else set())
    curves = {}  # (architecture, activation, q0) -> colour index

    def curve(arch, label, q0):
        key = (arch, label, q0)
        if key not in curves:
            curves[key] = len(curves)
        return style.colour(curves[key]), key

    drawn_theory = set()

    def theory(arch, label, q0, x=None, y=None):
        colour, key = curve(arch, label, q0)
        if key in drawn_theory:
            return
        drawn_theory.add(key)
        if x is None:
            x, y = critical.mlp_line(label, dense, q0), dense
        ax.plot(x, y, color=colour, lw=1.2, zorder=2)

    for f in files:
        for a, label in enumerate(f["activation"]):
            if critical.dense(f["architecture"]):
                theory(f["architecture"], label, f["q0"])
            else:
                theory(f["architecture"], label, f["q0"], f["theory"][a], f["sigma_b2"])
    for label in extra:
        theory(plain, label, 1.0)
    for i, f in enumerate(files):
        for a, label in enumerate(f["activation"]):
            colour, _ = curve(f["architecture"], label, f["q0"])
            x, lo, hi = f["x"][a], f["x_ci_low"][a], f["x_ci_high"][a]
            ok = np.isfinite(x)
            if not ok.any():
                continue
            err = np.vstack([np.clip(x - lo, 0, None), np.clip(hi - x, 0, None)])[:, ok]
            ax.errorbar(
                x[ok],
                f["sigma_b2"][ok],
                xerr=np.nan_to_num(err),
                fmt=style.marker(i),
                color=colour,
                mfc=colour if i % 2 == 0 else "none",  # every other file hollow: both show
                mec="k" if i % 2 == 0 else colour,
                mew=0.5 if i % 2 == 0 else 0.9,
                ms=3.5,
                elinewidth=0.8,
                capsize=1.5,
                zorder=3,
            )
    ax.set_xlabel(style.SYMBOL["sigma_w2"])
    ax.set_ylabel(style.SYMBOL["sigma_b2"])
    pad = 0.03 * (dense.max() - dense.min() or 1.0)
    ax.set_ylim(dense.min() - pad, dense.max() + pad)
    colours, names = [], []
    for (arch, label, q0), k in curves.items():
        colours.append(Line2D([], [], color=style.colour(k), lw=1.2))
        text = label if archs == {plain} else f"{arch} {label}"
        names.append(text + (f" ($q_0$ = {q0:g})" if q0 != 1.0 else ""))
    keys = [Line2D([], [], color="k", lw=1.2)]
    key_labels = [r"theory, $\chi_1 = 1$"]
    same = len({f["fixed"] for f in files}) <= 1
    for i, f in enumerate(files):
        face = "0.6" if i % 2 == 0 else "none"
        keys.append(Line2D([], [], color="k", marker=style.marker(i), ls="none", ms=3.5, mfc=face))
        where = "" if same or not f["fixed"] else f" [{f['fixed']}]"
        label = f"{f['name']}{where}: measured ({estimator}, 95% CI)"
        key_labels.append(textwrap.fill(label, 52, break_long_words=False, break_on_hyphens=False))
    fig.legend(colours, names, loc="outside right center")
    fig.legend(keys, key_labels, loc="outside lower center", ncols=1)
    if files and same and files[0]["fixed"]:
        ax.set_title(files[0]["fixed"], fontsize=7)
    return fig
