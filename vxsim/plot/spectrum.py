"""The Jacobian spectrum: measured density of lambda = s^2 at several depths, over the theory.

For each spectrum layer drawn, the histogram of log10 lambda = 2 log10 s over every
singular value and Monte Carlo sample of the selected grid point (a step outline
with a light fill), and the free-probability density at the fixed point q*
(``theory.spectrum.density``, plain MLP) as a line of the same colour.

Why the density of log10 lambda: deep spectra spread over many decades (a Gaussian
net's over hundreds at l = 1000, an orthogonal tanh net's over a fraction of one),
and the file holds log s, so nothing is exponentiated (no underflow at 10^-300).
With uniform bins in log10 lambda, an area on the figure is a fraction of the
eigenvalues, the same for the data and for the curve:

    rho_10(u) = ln(10) rho_log(u ln 10),  u = log10 lambda,

where rho_log is the density of log lambda. The histogram is normalised by the
count of all values, so values outside the drawn range (and lambda = 0, the rank
deficiency of a ReLU net's J, which the measurement holds as a very negative or
infinite log; where the theory has an atom at 0, values under ZERO_BELOW = 1e-24
times their sample's largest lambda count as 0) are left out of the bars but not of
the normalisation; the legend gives the fraction of values outside the axis. The
bars then carry the continuous part's mass, as the curve does. The theory curve is the
fixed-point law (its integrable edge singularities, e.g. an orthogonal tanh net at
l = 2, are cut at 1.2 times the highest bar or the highest value of the curves at the bins'
centres): where the input's q0 is far from q*, the first layers of the data
lie off it (``vxsim theory spectrum`` gives the trajectory's moments).
"""

import math
import textwrap

import numpy as np

from .. import models
from ..errors import VxsimError
from . import data, style

DRAWN = ("spectrum_layer", "sample", "sv")
VARIABLE = "log_singular_value"
MAX_LAYERS = 4
BINS = 60
ZERO_BELOW = 1e-24  # lambda / max lambda under which a value is lambda = 0 (see below)
LN10 = math.log(10.0)


def pick_layers(values, wanted=None, max_layers=MAX_LAYERS, where="the file"):
    """Indices of the spectrum layers to draw: the wanted ones, else up to max_layers spread."""
    if wanted is not None:
        if isinstance(wanted, str):
            wanted = [w for w in wanted.split(",") if w.strip()]
        wanted = list(np.atleast_1d(wanted))
        if not wanted:
            raise VxsimError("--layers: give one or more spectrum layers, e.g. 16,64")
        return [
            data.index_of(values, "spectrum_layer", w, where, option=f"--layers {w}")
            for w in wanted
        ]
    n = len(values)
    return sorted({int(round(i)) for i in np.linspace(0, n - 1, min(n, max_layers))})


def measured(log_s, bins):
    """(heights, fraction outside) of log10 lambda = 2 log_s / ln 10 over all values.

    heights: density per unit log10 lambda, normalised by the count of the values
    that exist: -inf (lambda = 0) and those outside ``bins`` included, NaN (past a
    smaller width's N in the sv axis, or a diverged sample) not.
    """
    u = 2.0 * np.ravel(log_s) / LN10
    finite = u[np.isfinite(u)]
    counts, _ = np.histogram(finite, bins=bins)
    total = int(np.count_nonzero(~np.isnan(u)))
    heights = counts / (total * np.diff(bins)) if total else counts * 0.0
    return heights, 1.0 - counts.sum() / max(total, 1)


def theory_curve(coords, config, layer):
    """((u, rho_10, atom at 0), None) of the theory at ``layer``, or (None, why).

    u = log10 lambda; for a point mass u is one number and rho_10 its mass.
    """
    from ..theory import spectrum as theory

    arch = config.get("network", {}).get("architecture")
    if arch not in models.names() or not models.get(arch).spectrum_theory:
        return None, f"no theory for {arch}"
    act = str(coords["activation"])
    init = str(coords.get("init", "gaussian"))
    q0 = float(data.config_value(config, "measure", "q0", 1.0))
    try:
        dens = theory.density(act, coords["sigma_w2"], coords["sigma_b2"], init, layer, q0)
    except VxsimError as err:
        return None, str(err)
    if dens.point_mass is not None:
        return (math.log10(dens.point_mass[0]), dens.point_mass[1], dens.atom_at_zero), None
    return (dens.log_lambda / LN10, LN10 * dens.rho_log, dens.atom_at_zero), None


def zeros_as_minus_inf(log_s):
    """log s of one layer (sample, sv), with s below ZERO_BELOW of its sample's largest as -inf.

    Used where the theory has an atom at lambda = 0 (relu): a rank-deficient J's
    zero singular values come out of the measurement at rounding level, not as 0.
    """
    top = np.max(np.where(np.isfinite(log_s), log_s, -np.inf), axis=-1, keepdims=True)
    return np.where(log_s < top + 0.5 * math.log(ZERO_BELOW), -np.inf, log_s)


def spectrum(source, sel=None, layers=None, analysis=None, size=None, max_layers=MAX_LAYERS):
    """Figure: the measured density of log10 lambda at several depths, with the theory's.

    source: a results path or ``vxsim.open_results(path)``; sel: {dim: value} for every
    dimension not drawn (width, activation, init, sigma_w2, sigma_b2, ...), the first
    value where none is given (the title says so); layers: the spectrum layers to draw
    (default: up to ``max_layers`` spread over them).
    """
    sel = data.parse_sel(sel)
    with style.context(), data.opened(source, analysis) as res:
        if VARIABLE not in res.root:
            raise VxsimError(f"{res.name} has no spectrum (measure.spectrum was not set)")
        y = res.root[VARIABLE]
        data.check_keys(sel, [d for d in y.dims if d not in DRAWN], drawn=DRAWN)
        y, fixed = data.fix(y, sel, DRAWN, res.name)
        y = y.isel(
            spectrum_layer=pick_layers(y.spectrum_layer.values, layers, max_layers, res.name)
        )
        coords = {k: v.item() for k, v in y.coords.items() if v.ndim == 0}
        chosen = [int(v) for v in y.spectrum_layer.values]
        curves = [theory_curve(coords, res.config, layer) for layer in chosen]
        log_s = np.array(y.values, dtype=float)
        for k, (curve, _) in enumerate(curves):
            if curve is not None and curve[2] > 0.0:
                log_s[k] = zeros_as_minus_inf(log_s[k])
        fig = _draw(log_s, chosen, curves, data.describe(fixed), size)
    return fig


def _range(log_s, curves):
    """x limits (log10 lambda): the data's 0.5 %..99.9 % quantiles and the curves' bulk."""
    u = 2.0 * np.ravel(log_s) / LN10
    u = u[np.isfinite(u)]
    lo, hi = np.quantile(u, [0.005, 0.999]) if u.size else (np.inf, -np.inf)
    for curve, _ in curves:
        if curve is None:
            continue
        x, r = curve[:2]
        if np.ndim(x) == 0:
            lo, hi = min(lo, x), max(hi, x)
            continue
        cum = np.concatenate([[0.0], np.cumsum(0.5 * (r[1:] + r[:-1]) * np.diff(x))])
        cum /= cum[-1] if cum[-1] > 0 else 1.0
        lo = min(lo, np.interp(0.005, cum, x))
        hi = max(hi, np.interp(0.999, cum, x))
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise VxsimError("no finite singular values to draw at the selected point")
    pad = 0.05 * (hi - lo) if hi > lo else 0.5
    return lo - pad, hi + pad


def _draw(log_s, layers, curves, title, size):
    """log_s: (spectrum_layer, sample, sv) natural logs of s; curves: theory per layer."""
    from matplotlib.lines import Line2D

    lo, hi = _range(log_s, curves)
    bins = np.linspace(lo, hi, BINS + 1)
    fig = style.new_figure(style.figure_size(size, 2.6))
    ax = fig.add_subplot()
    handles, labels = [], []
    notes = []
    tops = [0.0]
    for k, layer in enumerate(layers):
        c = style.colour(k)
        heights, outside = measured(log_s[k], bins)
        tops.append(float(heights.max()))
        ax.stairs(heights, bins, color=c, fill=True, alpha=0.25, lw=0)
        ax.stairs(heights, bins, color=c, lw=0.8)
        text = f"$l$ = {layer}"
        if outside >= 0.005:
            text += f" ({100 * outside:.0f} % off axis or 0)"
        handles.append(Line2D([], [], color=c, lw=1.0))
        labels.append(text)
        curve, why = curves[k]
        if curve is None:
            notes.append(f"l = {layer}: {why}")
            continue
        x, r = curve[:2]
        if np.ndim(x) == 0:
            ax.axvline(x, color=c, lw=1.0, ls=(0, (3, 2)))
        else:
            keep = (x >= lo) & (x <= hi)
            ax.plot(x[keep], r[keep], color=c, lw=1.1, ls=(0, (3, 2)), zorder=3)
            centres = 0.5 * (bins[1:] + bins[:-1])
            tops.append(float(np.max(np.interp(centres, x, r, left=0.0, right=0.0))))
    ax.set_xlim(lo, hi)
    # an integrable edge singularity (orthogonal nets at small l) would flatten the rest
    ax.set_ylim(0.0, 1.2 * max(tops) or 1.0)
    ax.set_xlabel(r"$\log_{10}\lambda$,  $\lambda = s^2$ of $J^{\,l}$")
    ax.set_ylabel(r"density of $\log_{10}\lambda$")
    keys = [
        Line2D([], [], color="0.3", lw=0.8),
        Line2D([], [], color="0.3", lw=1.1, ls=(0, (3, 2))),
    ]
    key_labels = ["measured (all samples)", "free probability at $q^*$"]
    fig.legend(handles, labels, loc="outside right center")
    fig.legend(keys, key_labels, loc="outside lower center", ncols=2)
    if notes:
        title = (title + "; " if title else "") + "no theory: " + "; ".join(sorted(set(notes)))
    if title:
        fig.suptitle(textwrap.fill(title, 60))
    return fig
