"""The phase diagram: the measured growth rate over (sigma_w2, sigma_b2), theory on top.

One panel per activation: a heat map of the growth rate per layer (the
empirical log chi1; positive explodes, negative vanishes) in a diverging map
whose centre, white, is rate 0, with symmetric colour limits +-max|rate| shared
by every panel. On it: the theory's critical line chi1 = 1 (black) and the
empirical boundary, the zero crossing of the rate along sigma_w2 at each
sigma_b2, with its bootstrap interval (white dots, black bars).
"""

import math

import numpy as np

from ..errors import VxsimError
from . import critical, data, style

DRAWN = ("activation", "sigma_w2", "sigma_b2")
ESTIMATORS = ("annealed", "quenched")


def check_estimator(estimator):
    if estimator not in ESTIMATORS:
        raise VxsimError(
            f"--estimator {estimator}: not an estimator; allowed: {', '.join(ESTIMATORS)}"
        )


def cell_edges(centres):
    """Edges of the cells around sorted ``centres``: midpoints, half a step beyond the ends.

    Variances are >= 0, so an edge that would fall below 0 is put at 0.
    """
    c = np.asarray(centres, dtype=np.float64)
    if c.size == 1:
        half = max(0.5 * abs(c[0]), 0.025)
        edges = np.array([c[0] - half, c[0] + half])
    else:
        mid = 0.5 * (c[1:] + c[:-1])
        edges = np.concatenate([[c[0] - (mid[0] - c[0])], mid, [c[-1] + (c[-1] - mid[-1])]])
    if c.min() >= 0:
        edges = np.maximum(edges, 0.0)
    return edges


def phase(source, sel=None, estimator="annealed", analysis=None, size=None):
    """Figure: growth rate over (sigma_w2, sigma_b2) per activation, with the edge of chaos.

    source: a results path or ``vxsim.open_results(path)``; sel: {dim: value} (or
    'dim=value,...') for the dimensions not drawn (mode, width, extra grid axes;
    ``activation`` restricts the panels to one); estimator: 'annealed' (what
    mean-field theory predicts) or 'quenched'; size: see ``style.figure_size``.
    """
    sel = data.parse_sel(sel)
    check_estimator(estimator)
    with style.context(), data.opened(source, analysis) as res:
        rate = res.root[f"growth_rate_{estimator}"]
        selectable = [d for d in rate.dims if d not in ("sigma_w2", "sigma_b2")]
        data.check_keys(sel, selectable, drawn=("sigma_w2", "sigma_b2"))
        rest = {k: v for k, v in sel.items() if k != "activation"}
        rate = data.restrict(rate, sel, "activation", res.name).sortby(["sigma_w2", "sigma_b2"])
        rate, fixed = data.fix(rate, rest, DRAWN, res.name)
        edge = {}
        for suffix in ("", "_ci_low", "_ci_high"):
            da = data.restrict(
                res.analysis[f"critical_sigma_w2_{estimator}{suffix}"], sel, "activation", res.name
            )
            da, _ = data.fix(da.sortby("sigma_b2"), rest, ("activation", "sigma_b2"), res.name)
            edge[suffix] = da
        labels = [str(a) for a in rate.activation.values]
        sw2 = rate.sigma_w2.values
        sb2 = rate.sigma_b2.values
        theory = _theory_lines(res, labels, sb2, rest)
        fig = _draw(
            rate.values,
            labels,
            sw2,
            sb2,
            {k: v.values for k, v in edge.items()},
            theory,
            estimator,
            data.describe(fixed),
            size,
        )
    return fig


def _theory_lines(res, labels, sb2, rest):
    """{label: (sigma_w2 on the line, sigma_b2)} of the theory's critical line per activation."""
    if critical.dense(critical.architecture_of(res.config)):
        q0 = data.config_value(res.config, "measure", "q0", 1.0)
        grid = critical.sigma_b2_grid(sb2.min(), sb2.max(), sb2)
        return {a: (critical.mlp_line(a, grid, q0), grid) for a in labels}
    da = res.analysis["theory_critical_sigma_w2"].sel(activation=labels)
    da, _ = data.fix(da, rest, ("activation", "sigma_b2"), res.name)
    return {a: (da.values[i], da.sigma_b2.values) for i, a in enumerate(labels)}


def _draw(values, labels, sw2, sb2, edge, theory, estimator, title, size):
    """values: (activation, sigma_w2, sigma_b2) rates; edge: {'', '_ci_low', '_ci_high'}."""
    from matplotlib.colors import Normalize
    from matplotlib.ticker import MaxNLocator

    n = len(labels)
    ncols = min(n, 3)
    nrows = math.ceil(n / ncols)
    fig = style.new_figure(style.figure_size(size, 0.75 + 1.45 * nrows))
    axes = fig.subplots(nrows, ncols, sharex=True, sharey=True, squeeze=False).ravel()
    for ax in axes[n:]:
        fig.delaxes(ax)
    finite = np.abs(values[np.isfinite(values)])
    limit = float(finite.max()) if finite.size and finite.max() > 0 else 1.0
    norm = Normalize(vmin=-limit, vmax=limit)  # symmetric: rate 0 is the centre (white)
    cmap = style.diverging_cmap()
    xe, ye = cell_edges(sw2), cell_edges(sb2)
    handles = {}
    for a, (ax, label) in enumerate(zip(axes, labels, strict=False)):
        mesh = ax.pcolormesh(
            xe, ye, np.ma.masked_invalid(values[a].T), cmap=cmap, norm=norm, rasterized=True
        )
        x_th, y_th = theory[label]
        (handles["theory"],) = ax.plot(x_th, y_th, color="k", lw=1.1, zorder=3)
        x, lo, hi = edge[""][a], edge["_ci_low"][a], edge["_ci_high"][a]
        ok = np.isfinite(x)
        if ok.any():
            err = np.vstack([np.clip(x - lo, 0, None), np.clip(hi - x, 0, None)])[:, ok]
            handles["measured"] = ax.errorbar(
                x[ok],
                sb2[ok],
                xerr=np.nan_to_num(err),
                fmt="o",
                ms=3,
                mfc="white",
                mec="k",
                mew=0.7,
                ecolor="k",
                elinewidth=0.8,
                capsize=1.5,
                zorder=4,
                clip_on=False,
            )
        ax.xaxis.set_major_locator(MaxNLocator(nbins=5, steps=[1, 2, 2.5, 5, 10]))
        ax.set_xlim(xe[0], xe[-1])
        ax.set_ylim(ye[0], ye[-1])
        ax.set_title(label)
        ax.spines[["top", "right"]].set_visible(True)
        if a % ncols == 0:
            ax.set_ylabel(style.SYMBOL["sigma_b2"])
        if a >= n - ncols:
            ax.set_xlabel(style.SYMBOL["sigma_w2"])
            ax.tick_params(labelbottom=True)
    cbar = fig.colorbar(mesh, ax=axes[:n].tolist(), aspect=25, pad=0.02)
    cbar.set_label(f"{estimator} growth rate (per layer)")
    cbar.outline.set_linewidth(0.5)
    names = {"theory": r"theory, $\chi_1 = 1$", "measured": "measured, 95% CI"}
    fig.legend(
        [handles[k] for k in names if k in handles],
        [names[k] for k in names if k in handles],
        loc="outside lower center",
        ncols=2,
    )
    if title:
        fig.suptitle(title)
    return fig
