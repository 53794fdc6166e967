"""Per-layer growth rates of squared gradient norms: the empirical log chi1.

For one grid point and sample, y_l = log |g^l|^2 (relative) is fitted by a
straight line in l over the layers after a transient, counted from where the
signal enters (the input for JVP tangents, the output for VJP gradients). The
growth rate is the slope in the direction the signal travels, so both modes
estimate log chi1: positive explodes, negative vanishes.

* quenched: the mean over samples of each sample's slope (the typical value,
  E[log |g|^2]); standard error = std / sqrt(S);
* annealed: the slope of log mean_s exp(y_s) (log E[|g|^2], what mean-field
  theory predicts); standard error by the jackknife over samples.

The growth law says what y is fitted against (``growth_law``): ``exponential``
(plain MLP and RNNs, |g^l|^2 ~ exp(rate * l): y linear in l) or ``power``
(residual networks, whose mean-field gradients grow polynomially,
|g^l|^2 ~ l^rate (Yang & Schoenholz 2017): y linear in log l). Either way
the rate is positive where gradients grow in the direction the signal travels.
"""

import contextlib
import warnings

import numpy as np


@contextlib.contextmanager
def quiet():
    """Silence NumPy's warnings for all-NaN slices and log(0): NaN/-inf are the answers there."""
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


MODE_VARIABLE = {"jvp": "log_tangent_norm", "vjp": "log_grad_norm"}
DIRECTION = {"jvp": 1.0, "vjp": -1.0}
GROWTH_LAWS = {"residual": "power"}  # every other architecture: exponential


def growth_law(architecture):
    """'power' (residual networks) or 'exponential' (the rest)."""
    return GROWTH_LAWS.get(architecture, "exponential")


def fit_abscissa(layers, law):
    """What log |g|^2 is fitted against: l (exponential law) or log l (power law)."""
    layers = np.asarray(layers, dtype=np.float64)
    return np.log(layers) if law == "power" else layers


def fit_window(layers, depth, transient, mode):
    """Boolean mask of the recorded layers used in the fit."""
    if mode == "jvp":
        mask = layers > transient
    else:
        mask = layers <= depth - transient
    if mask.sum() < 2:  # too shallow for the transient: use every recorded layer
        mask = np.ones_like(layers, dtype=bool)
    return mask


def slopes(layers, y):
    """Least-squares slope of y (..., R) against layers (R,); NaN where any y is NaN."""
    x = layers.astype(np.float64)
    xc = x - x.mean()
    denom = (xc * xc).sum()
    if layers.size < 2 or denom == 0:
        return np.full(y.shape[:-1], np.nan)
    return (y * xc).sum(axis=-1) / denom


def growth_rates(y, layers, depth, transient, mode, law="exponential"):
    """Rates from y of shape (..., S, R): dict of quenched/annealed rate and standard error.

    Samples with a NaN in the window (diverged) are left out of both estimates.
    """
    mask = fit_window(layers, depth, transient, mode)
    sign = DIRECTION[mode]
    lw, yw = fit_abscissa(layers[mask], law), y[..., mask]
    per_sample = sign * slopes(lw, yw)  # (..., S)
    valid = np.isfinite(per_sample)
    n = valid.sum(axis=-1)
    with quiet():  # all samples diverged: NaN is the right answer
        quenched = np.nanmean(per_sample, axis=-1)
        q_se = np.nanstd(per_sample, axis=-1, ddof=1) / np.sqrt(n)
    annealed, a_se = _annealed(yw, lw, valid, sign)
    return {
        "quenched": quenched,
        "quenched_se": np.where(n > 1, q_se, np.nan),
        "annealed": annealed,
        "annealed_se": a_se,
        "samples_used": n,
    }


def _annealed(yw, lw, valid, sign):
    """Annealed slope over the valid samples and its jackknife standard error.

    log mean_s exp(y_s) per layer, computed relative to the per-layer peak; the
    leave-one-out sums come from prefix and suffix sums over samples, which
    avoids the cancellation of (total - own term) when one sample dominates.
    """
    y = np.where(valid[..., None], yw, -np.inf)  # (..., S, R)
    n = valid.sum(axis=-1)  # (...)
    with quiet():
        peak = np.max(y, axis=-2, keepdims=True)
        peak = np.where(np.isfinite(peak), peak, 0.0)
        e = np.exp(y - peak)  # 0 for invalid samples
        total = e.sum(axis=-2)
        full = sign * slopes(lw, np.log(total / n[..., None]) + peak[..., 0, :])
        before = _exclusive_cumsum(e)
        after = np.flip(_exclusive_cumsum(np.flip(e, axis=-2)), axis=-2)
        loo = np.log((before + after) / (n - 1)[..., None, None]) + peak
        jack = np.where(valid, sign * slopes(lw, loo), np.nan)  # (..., S)
        mean = np.nanmean(jack, axis=-1)
        se = np.sqrt((n - 1) / n * np.nansum((jack - mean[..., None]) ** 2, axis=-1))
    full = np.where(n > 0, full, np.nan)
    return full, np.where(n > 1, se, np.nan)


def _exclusive_cumsum(e):
    """sum_{t < s} e_t along the sample axis (-2), without subtracting anything."""
    out = np.zeros_like(e)
    np.cumsum(e[..., :-1, :], axis=-2, out=out[..., 1:, :])
    return out


def summarise(data, coords, config):
    """Growth-rate summary for the store: rates per (mode, width, grid point)."""
    modes = list(config.modes)
    dims = ("mode", "width") + config.grid_dims
    law = growth_law(config.architecture)
    out = {name: [] for name in ("quenched", "quenched_se", "annealed", "annealed_se")}
    for mode in modes:
        y = data[MODE_VARIABLE[mode]]  # (W, A, Sw, Sb, ..., S, R)
        rates = growth_rates(y, coords["layer"], config.depth, config.transient, mode, law)
        for key in out:
            out[key].append(rates[key])
    per = "per layer" if law == "exponential" else "per unit of log layer (power-law exponent)"
    desc = {
        "quenched": f"growth rate {per} of log squared gradient norm, mean over samples of log",
        "quenched_se": "standard error of growth_rate_quenched",
        "annealed": f"growth rate {per} of log of the sample mean of squared gradient norm",
        "annealed_se": "jackknife standard error of growth_rate_annealed",
    }
    return {
        "mode": modes,
        "growth_law": law,
        "vars": {
            f"growth_rate_{key}": (dims, np.stack(values), desc[key]) for key, values in out.items()
        },
    }
