"""The depth profile: log squared gradient norm against layer, for several sigma_w2.

For each sigma_w2 drawn: the mean over Monte Carlo samples of y_l = ln|g^l|^2 (the
quenched, typical value) as a line, one standard deviation over samples either
side as a band, and the theory's prediction as a dashed line of slope log chi1
per layer, chi1 = sigma_w2 E[phi'(sqrt(q*) z)^2], in the direction the signal
travels:

    y_th(l) = y(l0) + d log chi1 (l - l0),   d = +1 (JVP: input -> output), -1 (VJP)

anchored on the measured mean at l0, the first layer of the rate fit's window
counted from where the signal enters (after ``measure.transient`` layers).
Mean-field theory predicts log E|g|^2 (the annealed rate); the quenched mean
falls below it by O(l / N), which is what the figure shows at finite width.
The transient (left out of every rate fit) is shaded grey.

Residual networks (root attribute growth_law = "power") grow sub-exponentially:
the layer axis is then logarithmic and the dashed line is the mean-field
recursion's own curve (``theory.residual``: log prod chi^l), anchored the same way.
"""

import textwrap

import numpy as np

from ..analysis.growth import DIRECTION, MODE_VARIABLE, fit_window, quiet
from ..errors import VxsimError
from . import data, style

DRAWN = ("sigma_w2", "sample", "layer")
MAX_LINES = 5
YLABEL = {
    "jvp": r"$\ln\,\|J^{\,l} v_0\|^2 / \|v_0\|^2$",
    "vjp": r"$\ln\,\|\partial E/\partial h^l\|^2$ (rel. to layer $L$)",
}


def pick_sigma_w2(values, wanted=None, max_lines=MAX_LINES, where="the file"):
    """Indices of the sigma_w2 to draw: the wanted ones, else up to max_lines spread evenly."""
    if wanted is not None:
        if isinstance(wanted, str):
            wanted = [w for w in wanted.split(",") if w.strip()]
        wanted = list(np.atleast_1d(wanted))
        if not wanted:
            raise VxsimError("--sigma-w2: give one or more values, e.g. 1,1.5,2")
        return [
            data.index_of(values, "sigma_w2", w, where, option=f"--sigma-w2 {w}") for w in wanted
        ]
    n = len(values)
    return sorted({int(round(i)) for i in np.linspace(0, n - 1, min(n, max_lines))})


def depth(source, sel=None, sigma_w2=None, analysis=None, size=None, max_lines=MAX_LINES):
    """Figure: ln|g^l|^2 against layer l for several sigma_w2, with theory's slope.

    source: a results path or ``vxsim.open_results(path)``; sel: {dim: value} (or
    'dim=value,...') for every dimension not drawn: activation, sigma_b2, width,
    mode (jvp or vjp, when the file has both) and any extra grid axes; the first
    value is taken where none is given, and the title says so. sigma_w2: the values
    to draw (default: up to ``max_lines`` spread over the grid).
    """
    sel = data.parse_sel(sel)
    with style.context(), data.opened(source, analysis) as res:
        modes = [str(m) for m in res.root["mode"].values]
        mode = modes[data.index_of(modes, "mode", sel["mode"], res.name)] if "mode" in sel else None
        y = res.root[MODE_VARIABLE[mode or modes[0]]]
        selectable = [d for d in y.dims if d not in DRAWN] + ["mode"]
        data.check_keys(sel, selectable, drawn=DRAWN)
        rest = {k: v for k, v in sel.items() if k != "mode"}
        y, fixed = data.fix(y, rest, DRAWN, res.name)
        fixed.insert(0, ("mode", mode or modes[0], mode is None and len(modes) > 1, len(modes)))
        mode = mode or modes[0]
        chosen = pick_sigma_w2(y.sigma_w2.values, sigma_w2, max_lines, res.name)
        y = y.isel(sigma_w2=chosen)
        log_chi1 = res.analysis["theory_log_chi1"].isel(sigma_w2=chosen)
        log_chi1, _ = data.fix(log_chi1, rest, ("sigma_w2",), res.name)
        depth_ = int(data.config_value(res.config, "network", "depth", y.layer.values.max()))
        transient = int(data.config_value(res.config, "measure", "transient", 0))
        curves = None
        if res.root.attrs.get("growth_law") == "power":
            q0 = float(data.config_value(res.config, "measure", "q0", 1.0))
            curves = _residual_theory(y, mode, depth_, q0)
        fig = _draw(
            y.values,
            y.sigma_w2.values,
            y.layer.values,
            log_chi1.values,
            mode,
            depth_,
            transient,
            data.describe(fixed),
            size,
            curves,
        )
    return fig


def _residual_theory(y, mode, depth, q0):
    """Mean-field log E|g^l|^2 per drawn sigma_w2 (sigma_w2, layer), for a residual network."""
    from ..theory import residual

    label = str(y.coords["activation"].item())
    moments = residual.moment_function(label)
    sb2, alpha = float(y.coords["sigma_b2"]), float(y.coords["alpha"])
    _, log_chi = residual.curves(moments, y.sigma_w2.values, sb2, alpha, q0, depth)
    layers = y.layer.values
    curve = log_chi[layers] if mode == "jvp" else log_chi[-1] - log_chi[layers]
    return curve.T


def _draw(y, sw2, layers, log_chi1, mode, depth, transient, title, size, curves=None):
    """y: (sigma_w2, sample, layer) log squared norms; log_chi1: (sigma_w2,) theory slopes.

    curves: (sigma_w2, layer) theory curves to draw instead of slopes (power-law files).
    """
    from matplotlib.lines import Line2D

    if y.shape[-1] < 2:
        raise VxsimError("the depth profile needs at least two recorded layers")
    with quiet():
        mean = np.nanmean(y, axis=1)
        spread = np.nanstd(y, axis=1, ddof=1) if y.shape[1] > 1 else np.zeros_like(mean)
    window = fit_window(layers, depth, transient, mode)
    lw = layers[window]
    l0 = lw.min() if mode == "jvp" else lw.max()
    i0 = int(np.flatnonzero(layers == l0)[0])
    fig = style.new_figure(style.figure_size(size, 2.6))
    ax = fig.add_subplot()
    if not window.all():
        skipped = layers[~window]
        ax.axvspan(skipped.min() - 0.5, skipped.max() + 0.5, color="0.92", lw=0, zorder=0)
    handles = []
    for k, s in enumerate(sw2):
        c = style.colour(k)
        ax.fill_between(layers, mean[k] - spread[k], mean[k] + spread[k], color=c, alpha=0.25, lw=0)
        (line,) = ax.plot(layers, mean[k], color=c, lw=1.0)
        handles.append((line, f"{style.SYMBOL['sigma_w2']} = {s:g}"))
        if curves is not None and np.isfinite(mean[k, i0]):
            th = curves[k] - curves[k, i0] + mean[k, i0]
            ax.plot(layers[window], th[window], color=c, lw=0.9, ls=(0, (3, 2)), zorder=3)
        elif np.isfinite(log_chi1[k]) and np.isfinite(mean[k, i0]):
            th = mean[k, i0] + DIRECTION[mode] * log_chi1[k] * (lw - l0)
            ax.plot(lw, th, color=c, lw=0.9, ls=(0, (3, 2)), zorder=3)
    finite = np.concatenate(
        [(mean - spread)[np.isfinite(mean)], (mean + spread)[np.isfinite(mean)]]
    )
    if finite.size:
        lo, hi = finite.min(), finite.max()
        pad = 0.06 * (hi - lo or 1.0)
        ax.set_ylim(lo - pad, hi + pad)
    ax.set_xlim(layers.min(), layers.max())
    if curves is not None:
        ax.set_xscale("log")
    ax.set_xlabel(style.SYMBOL["layer"])
    ax.set_ylabel(YLABEL[mode])
    n_samples = y.shape[1]
    keys = [
        Line2D([], [], color="0.3", lw=1.0),
        Line2D([], [], color="0.3", lw=0.9, ls=(0, (3, 2))),
    ]
    key_labels = [
        f"mean $\\pm$ s.d. over {n_samples} samples",
        r"theory: $\log\chi_1$ per layer (annealed)"
        if curves is None
        else "theory: mean-field recursion (annealed)",
    ]
    fig.legend([h for h, _ in handles], [t for _, t in handles], loc="outside right center")
    fig.legend(keys, key_labels, loc="outside lower center", ncols=1)
    if title:
        fig.suptitle(textwrap.fill(title, 60))
    return fig
